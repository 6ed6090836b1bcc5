"""Task data: the real local files, the hub loading path (on a local mirror), bad input."""

import csv
import json
from pathlib import Path

import datasets
import pytest

from prunebench.data.loading import DataConfig, DataError, load_task_data
from prunebench.data.tasks import get_task
from tests.conftest import SST2_DEV, SST2_TRAIN

SST2 = get_task("sst2")


def test_local_sst2_matches_the_data_readme():
    data = load_task_data(SST2, DataConfig(source="local", train=str(SST2_TRAIN), eval=str(SST2_DEV)))
    assert len(data["train"]) == 67_349 and len(data["eval"]) == 872
    labels = data["eval"]["label"]
    assert labels.count(0) == 428 and labels.count(1) == 444
    assert data["eval"].features["label"].names == ["negative", "positive"]


def test_quotes_are_text_not_quoting(tmp_path):
    f = tmp_path / "q.tsv"
    f.write_text('sentence\tlabel\n"a quoted start\t1\nhe said " fine " .\t0\n')
    data = load_task_data(SST2, DataConfig(source="local", train=str(f), eval=str(f)))
    assert data["eval"]["sentence"] == ['"a quoted start', 'he said " fine " .']


def test_limits_are_deterministic():
    cfg = DataConfig(source="local", train=str(SST2_TRAIN), eval=str(SST2_DEV), train_limit=50, eval_limit=10)
    a, b = load_task_data(SST2, cfg), load_task_data(SST2, cfg)
    assert a["train"]["sentence"] == b["train"]["sentence"] and len(a["train"]) == 50
    assert (
        a["eval"]["sentence"]
        == load_task_data(SST2, DataConfig("local", str(SST2_TRAIN), str(SST2_DEV)))["eval"]["sentence"][:10]
    )


def _write_hub_mirror(root, rows_by_split):
    """A folder laid out like the hub's nyu-mll/glue repository (parquet per config + README configs)."""
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
            "idx": datasets.Value("int32"),
        }
    )
    (root / "sst2").mkdir(parents=True)
    for split, rows in rows_by_split.items():
        ds = datasets.Dataset.from_dict(
            {"sentence": [r[0] for r in rows], "label": [int(r[1]) for r in rows], "idx": list(range(len(rows)))},
            features=features,
        )
        ds.to_parquet(str(root / "sst2" / f"{split}-00000-of-00001.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: sst2\n  data_files:\n  - split: train\n    path: sst2/train-*\n"
        "  - split: validation\n    path: sst2/validation-*\n---\n"
    )


def _tsv_rows(path, n):
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [row for _, row in zip(range(n), reader)]


def test_hub_path_gives_the_same_examples_as_local_files(tmp_path):
    mirror = tmp_path / "glue"
    _write_hub_mirror(mirror, {"train": _tsv_rows(SST2_TRAIN, 40), "validation": _tsv_rows(SST2_DEV, 30)})
    hub = load_task_data(SST2, DataConfig(source="hub", hub_path=str(mirror)))
    local = load_task_data(SST2, DataConfig(source="local", train=str(SST2_TRAIN), eval=str(SST2_DEV), eval_limit=30))
    assert hub["eval"]["sentence"] == local["eval"]["sentence"]
    assert hub["eval"]["label"] == local["eval"]["label"]
    assert hub["train"]["sentence"] == _tsv_rows_sentences(SST2_TRAIN, 40)


def _tsv_rows_sentences(path, n):
    return [r[0] for r in _tsv_rows(path, n)]


def test_unreachable_hub_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not load task 'sst2'.*data.source: local"):
        load_task_data(SST2, DataConfig(source="hub", hub_path=str(tmp_path / "no-such-repo")))


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.tsv"
    with pytest.raises(DataError, match=r"data file not found: .*nope.tsv \(data.train"):
        load_task_data(SST2, DataConfig(source="local", train=str(missing), eval=str(SST2_DEV)))


@pytest.mark.parametrize(
    "content, message",
    [
        ("text\tlabel\nfine\t1\n", r"lacks column\(s\) \['sentence'\]"),
        ("sentence\tlabel\ngood movie\t1\nbad movie\tmaybe\n", r"example 2: label 'maybe'"),
        ("sentence\tlabel\ngood movie\t7\n", r"not a valid class index"),
        ("sentence\tlabel\n\t1\n", r"empty text field"),
        ("", r"empty"),
    ],
)
def test_malformed_file_is_a_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.tsv"
    bad.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_task_data(SST2, DataConfig(source="local", train=str(bad), eval=str(SST2_DEV)))
    assert "bad.tsv" in str(info.value)


def test_label_names_map_to_hub_indices(tmp_path):
    mnli = tmp_path / "mnli.tsv"
    mnli.write_text(
        "premise\thypothesis\tlabel\nA man sleeps.\tA person rests.\tentailment\n"
        "A man sleeps.\tA man runs.\tcontradiction\nA man sleeps.\tHe is tired.\tneutral\n"
    )
    data = load_task_data(get_task("mnli"), DataConfig(source="local", train=str(mnli), eval=str(mnli)))
    assert data["eval"]["label"] == [0, 2, 1]
    assert data["eval"].features["label"].names == ["entailment", "neutral", "contradiction"]


# ----- every staged task: malformed files, hub layout vs local files ------------------------------------

from tests.conftest import DATA  # noqa: E402

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"the staged task files are not beside the checkout ({DATA})")


@pytest.mark.parametrize(
    "task, content, message",
    [
        (
            "mrpc",
            "Quality\t#1 ID\t#2 ID\t#1 String\n1\t1\t2\ta\n",
            r"lacks column\(s\) \['sentence2'\] \(or the GLUE file's header for them: \{'sentence2': '#2 String'\}\)",
        ),
        ("stsb", "sentence1\tsentence2\tscore\nA man.\tA man.\tfive\n", r"example 1: score 'five' is not a number"),
        (
            "stsb",
            "sentence1\tsentence2\tscore\nA man.\tA man.\t5.5\n",
            r"example 1: score '5.5' is outside the task's range \[0, 5\]",
        ),
        ("stsb", "sentence1\tsentence2\tscore\nA man.\tA man.\tnan\n", r"outside the task's range"),
        (
            "stsb",
            "sentence1\tsentence2\nA man.\tA man.\n",
            r"lacks column\(s\) \['label'\] \(or the GLUE file's header for them: \{'label': 'score'\}\)",
        ),
        (
            "rte",
            "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tmaybe\n",
            r"label 'maybe' is neither an index nor one of \['entailment', 'not_entailment'\]",
        ),
        ("cola", "sentence\tlabel\nFine.\t2\n", r"label 2 is not a valid class index \(0..1\)"),
        (
            "wnli",
            "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n1\tA.\tB.\t-1\n",
            r"example 2: label -1 is not a valid class index",
        ),
        ("mnli", "premise\thypothesis\tlabel\nA.\tB.\tneutrall\n", r"label 'neutrall' is neither"),
        ("qqp", "question1\tquestion2\tis_duplicate\nA?\tB?\t1\n", r"lacks column\(s\) \['label'\]"),
    ],
)
def test_malformed_task_file_is_a_clear_error(tmp_path, task, content, message):
    bad = tmp_path / "bad.tsv"
    bad.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_task_data(get_task(task), DataConfig(source="local", train=str(bad), eval=str(bad)))
    assert str(bad) in str(info.value), "the error names the file"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"version": "1.1"}', r"lacks the top-level 'data' list"),
        ('{"data": {"title": "x"}}', r"lacks the top-level 'data' list"),
        ('{"data": [{"title": "x", "paragraphs": [{"context": "c"}]}]}', r"not SQuAD v1.1 JSON: KeyError\('qas'\)"),
        ('{"data": [', r"not valid JSON"),
        ('{"data": []}', r"has no questions"),
    ],
)
def test_malformed_squad_json_is_a_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_task_data(get_task("squad"), DataConfig(source="local", train=str(bad), eval=str(bad)))
    assert str(bad) in str(info.value)


def test_unknown_data_setting_is_a_clear_error():
    with pytest.raises(DataError, match=r"unknown data setting\(s\) \['evl'\]"):
        DataConfig.from_dict({"source": "local", "evl": "x"})


#: the hub's layout of each task (nyu-mll/glue): its columns and ClassLabel names (None: float32 label),
#: and where each column comes from in the staged file
HUB_GLUE = {
    "sst2": ({"sentence": "sentence"}, ["negative", "positive"]),
    "cola": ({"sentence": "sentence"}, ["unacceptable", "acceptable"]),
    "mrpc": (
        {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
        ["not_equivalent", "equivalent"],
    ),
    "qqp": ({"question1": "question1", "question2": "question2"}, ["not_duplicate", "duplicate"]),
    "stsb": ({"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}, None),
    "mnli": ({"premise": "premise", "hypothesis": "hypothesis"}, ["entailment", "neutral", "contradiction"]),
    "qnli": ({"question": "question", "sentence": "sentence"}, ["entailment", "not_entailment"]),
    "rte": ({"sentence1": "sentence1", "sentence2": "sentence2"}, ["entailment", "not_entailment"]),
    "wnli": ({"sentence1": "sentence1", "sentence2": "sentence2"}, ["not_entailment", "entailment"]),
}
#: staged files (train, eval[, mismatched]) behind each hub split
STAGED_FILES = {
    "sst2": ("sst2/train.tsv", "sst2/dev.tsv"),
    "cola": ("cola/train.tsv", "cola/dev.tsv"),
    "mrpc": ("mrpc/train.tsv", "mrpc/dev.tsv"),
    "qqp": ("qqp/train_subset_9k.tsv", "qqp/train_subset_1k.tsv"),
    "stsb": ("stsb/train.tsv", "stsb/dev.tsv"),
    "qnli": ("qnli/train_subset_9k.tsv", "qnli/dev.tsv"),
    "rte": ("rte/train.tsv", "rte/dev.tsv"),
    "wnli": ("wnli/train.tsv", "wnli/dev.tsv"),
    "mnli": ("mnli/train_subset_9k.tsv", "mnli/dev_matched_sample1k_tok.tsv", "mnli/dev_mismatched_sample1k_tok.tsv"),
}
HUB_SPLITS = {"mnli": ("train", "validation_matched", "validation_mismatched")}
N_ROWS = 15


def _head_rows(path, n=N_ROWS):
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row for _, row in zip(range(n), reader)]


def _senteval_tokenized(text):
    """The hub's MRPC text (SentEval's re-tokenized MSR copy): "doesn't" -> "doesn 't", "company's" -> "company 's"."""
    import re

    return re.sub(r"(\w)'(\w)", r"\1 '\2", text)


def _write_glue_mirror(root, tmp_local):
    """A folder laid out like nyu-mll/glue (parquet per config and split, README configs) holding the first
    rows of every staged file, and local TSV files with the same rows (header and lines as staged)."""
    readme = ["---", "configs:"]
    local = {}
    for task, (columns, names) in HUB_GLUE.items():
        splits = HUB_SPLITS.get(task, ("train", "validation"))
        readme += [f"- config_name: {task}", "  data_files:"]
        label_feature = datasets.Value("float32") if names is None else datasets.ClassLabel(names=names)
        features = datasets.Features(
            {
                **{c: datasets.Value("string") for c in columns if c != "label"},
                "label": label_feature,
                "idx": datasets.Value("int32"),
            }
        )
        for split, rel in zip(splits, STAGED_FILES[task]):
            source = DATA / rel
            with open(source, encoding="utf-8") as fh:
                lines = [line for _, line in zip(range(N_ROWS + 1), fh)]
            copy = tmp_local / task / Path(rel).name
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text("".join(lines), encoding="utf-8")
            local.setdefault(task, []).append(str(copy))
            rows = _head_rows(source)
            table = {c: [r[src] for r in rows] for c, src in columns.items() if c != "label"}
            raw_labels = [r[columns.get("label", "label")] for r in rows]
            table["label"] = (
                [float(v) for v in raw_labels]
                if names is None
                else [names.index(v) if v in names else int(v) for v in raw_labels]
            )
            if task == "mrpc":
                table = {c: [_senteval_tokenized(t) for t in v] if c != "label" else v for c, v in table.items()}
            table["idx"] = list(range(len(rows)))
            (root / task).mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict(table, features=features).to_parquet(
                str(root / task / f"{split}-00000-of-00001.parquet")
            )
            readme += [f"  - split: {split}", f"    path: {task}/{split}-*"]
    (root / "README.md").write_text("\n".join(readme + ["---", ""]))
    return local


def _same_text(a, b, ignore_whitespace):
    return "".join(a.split()) == "".join(b.split()) if ignore_whitespace else a == b


@needs_data
def test_hub_layout_and_local_files_give_the_same_examples_for_every_glue_task(tmp_path):
    mirror = tmp_path / "glue"
    local = _write_glue_mirror(mirror, tmp_path / "local")
    for task in HUB_GLUE:
        spec = get_task(task)
        files = local[task]
        extra = {"mismatched": files[2]} if len(files) > 2 else None
        from_local = load_task_data(spec, DataConfig(source="local", train=files[0], eval=files[1], extra_eval=extra))
        from_hub = load_task_data(spec, DataConfig(source="hub", hub_path=str(mirror)))
        assert set(from_hub) == set(from_local), task
        for split in from_local:
            a, b = from_local[split], from_hub[split]
            assert a.column_names == b.column_names == [*spec.text_fields, "label"], (task, split)
            assert a["label"] == b["label"] and len(a) == N_ROWS, (task, split)
            assert a.features["label"] == b.features["label"], (task, split)
            for field in spec.text_fields:
                # MRPC: the hub's text is SentEval's re-tokenized copy (data README): same text but for whitespace
                assert all(_same_text(x, y, task == "mrpc") for x, y in zip(a[field], b[field])), (task, split, field)
        if task == "mrpc":
            differs = [
                (x, y) for x, y in zip(from_local["train"]["sentence1"], from_hub["train"]["sentence1"]) if x != y
            ]
            assert differs and all("'" in y for _, y in differs), "the hub's MRPC text differs as the README says"
        if task == "stsb":
            assert from_local["eval"]["label"][:2] == [5.0, 4.75] and isinstance(from_hub["eval"]["label"][0], float)


@needs_data
def test_hub_layout_and_local_json_give_the_same_squad_examples(tmp_path):
    doc = json.loads((DATA / "squad/dev-v1.1.json").read_text(encoding="utf-8"))
    doc["data"] = [{**a, "paragraphs": a["paragraphs"][:2]} for a in doc["data"][:3]]
    small = tmp_path / "dev-small.json"
    small.write_text(json.dumps(doc))
    rows = [
        {
            "id": qa["id"],
            "title": a["title"],
            "context": p["context"],
            "question": qa["question"],
            "answers": {
                "text": [x["text"] for x in qa["answers"]],
                "answer_start": [x["answer_start"] for x in qa["answers"]],
            },
        }
        for a in doc["data"]
        for p in a["paragraphs"]
        for qa in p["qas"]
    ]
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "title": datasets.Value("string"),
            "context": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answers": {
                "text": datasets.List(datasets.Value("string")),
                "answer_start": datasets.List(datasets.Value("int32")),
            },
        }
    )
    mirror = tmp_path / "squad"
    (mirror / "plain_text").mkdir(parents=True)
    for split in ("train", "validation"):
        datasets.Dataset.from_list(rows, features=features).to_parquet(
            str(mirror / "plain_text" / f"{split}-00000-of-00001.parquet")
        )
    (mirror / "README.md").write_text(
        "---\nconfigs:\n- config_name: plain_text\n  data_files:\n  - split: train\n"
        "    path: plain_text/train-*\n  - split: validation\n    path: plain_text/validation-*\n---\n"
    )
    spec = get_task("squad")
    hub = load_task_data(spec, DataConfig(source="hub", hub_path=str(mirror)))
    loc = load_task_data(spec, DataConfig(source="local", train=str(small), eval=str(small)))
    assert len(loc["eval"]) == len(rows) > 10
    for column in ("id", "question", "context", "answers"):
        assert list(hub["eval"][column]) == list(loc["eval"][column]), column
