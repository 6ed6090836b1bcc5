"""Task data: the real local files, the hub loading path (on a local mirror), bad input."""

import csv

import datasets
import pytest

from prunebench.data import DataConfig, DataError, load_task_data
from prunebench.tasks import get_task
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
    assert a["eval"]["sentence"] == load_task_data(SST2, DataConfig("local", str(SST2_TRAIN), str(SST2_DEV)))["eval"]["sentence"][:10]


def _write_hub_mirror(root, rows_by_split):
    """A folder laid out like the hub's nyu-mll/glue repository (parquet per config + README configs)."""
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"]),
                                  "idx": datasets.Value("int32")})
    (root / "sst2").mkdir(parents=True)
    for split, rows in rows_by_split.items():
        ds = datasets.Dataset.from_dict({"sentence": [r[0] for r in rows], "label": [int(r[1]) for r in rows],
                                         "idx": list(range(len(rows)))}, features=features)
        ds.to_parquet(str(root / "sst2" / f"{split}-00000-of-00001.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: sst2\n  data_files:\n  - split: train\n    path: sst2/train-*\n"
        "  - split: validation\n    path: sst2/validation-*\n---\n")


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


@pytest.mark.parametrize("content, message", [
    ("text\tlabel\nfine\t1\n", r"lacks column\(s\) \['sentence'\]"),
    ("sentence\tlabel\ngood movie\t1\nbad movie\tmaybe\n", r"example 2: label 'maybe'"),
    ("sentence\tlabel\ngood movie\t7\n", r"not a valid class index"),
    ("sentence\tlabel\n\t1\n", r"empty text field"),
    ("", r"empty"),
])
def test_malformed_file_is_a_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.tsv"
    bad.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_task_data(SST2, DataConfig(source="local", train=str(bad), eval=str(SST2_DEV)))
    assert "bad.tsv" in str(info.value)


def test_label_names_map_to_hub_indices(tmp_path):
    mnli = tmp_path / "mnli.tsv"
    mnli.write_text("premise\thypothesis\tlabel\nA man sleeps.\tA person rests.\tentailment\n"
                    "A man sleeps.\tA man runs.\tcontradiction\nA man sleeps.\tHe is tired.\tneutral\n")
    data = load_task_data(get_task("mnli"), DataConfig(source="local", train=str(mnli), eval=str(mnli)))
    assert data["eval"]["label"] == [0, 2, 1]
    assert data["eval"].features["label"].names == ["entailment", "neutral", "contradiction"]
