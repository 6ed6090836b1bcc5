"""Every staged GLUE task and SQuAD: the task table, loading, metrics and statistics,
and a few training steps of the tiny model end to end on slices of the real files."""

from __future__ import annotations

import collections
import csv
import inspect
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prunebench.config import ConfigError, for_task, load_config_file, resolve
from prunebench.data.loading import DataConfig, load_task_data, task_data
from prunebench.data.tasks import TASKS, get_task
from prunebench.records.record import aggregate_metric, metric, predictions_payload, read_predictions, write_predictions
from tests.conftest import DATA, REPO

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"the staged task files are not beside the checkout ({DATA})")

STAGED = ["sst2", "cola", "mrpc", "rte", "wnli", "stsb", "qnli", "qqp", "mnli", "squad"]


def _experiment(task, profile="default", **overrides):
    raw = load_config_file()
    raw.update(profile=profile, task=task, **overrides)
    return resolve(raw, check_files=False)


def table_config(task: str, profile: str = "default", **data) -> DataConfig:
    """The data a task's jobs load under ``profile`` (the task table), paths made absolute."""
    block = for_task(_experiment(task, profile), task)["data"]
    for key in ("train", "eval"):
        if block.get(key):
            block[key] = str((REPO / block[key]).resolve())
    if block.get("extra_eval"):
        block["extra_eval"] = {k: str((REPO / v).resolve()) for k, v in block["extra_eval"].items()}
    return DataConfig.from_dict({**block, **data})


# ----- the task table -------------------------------------------------------------------------------


def test_every_staged_task_has_a_spec_and_a_table_entry():
    table = load_config_file()["task_data"]
    assert set(STAGED) <= set(TASKS) and set(STAGED) == set(table)
    for name in STAGED:
        entry = table[name]
        assert entry["eval_split_kind"] in ("official", "stand-in") and entry["split_note"]
        assert f"/{name}/" in entry["train"] and f"/{name}/" in entry["eval"], "each task names its own files"


@pytest.mark.parametrize(
    "task, kind, labels, metric_name, primary",
    [
        ("cola", "classification", ("unacceptable", "acceptable"), "matthews", "mcc"),
        ("mrpc", "classification", ("not_equivalent", "equivalent"), "accuracy_f1", "f1"),
        ("qqp", "classification", ("not_duplicate", "duplicate"), "accuracy_f1", "f1"),
        ("stsb", "regression", (), "pearson_spearman", "pearson"),
        ("rte", "classification", ("entailment", "not_entailment"), "accuracy", "accuracy"),
        ("wnli", "classification", ("not_entailment", "entailment"), "accuracy", "accuracy"),
        ("qnli", "classification", ("entailment", "not_entailment"), "accuracy", "accuracy"),
        ("mnli", "classification", ("entailment", "neutral", "contradiction"), "accuracy", "accuracy"),
        ("sst2", "classification", ("negative", "positive"), "accuracy", "accuracy"),
        ("squad", "extractive_qa", (), "squad", "f1"),
    ],
)
def test_task_specs_follow_the_hub_label_order_and_glue_metrics(task, kind, labels, metric_name, primary):
    spec = get_task(task)
    assert (spec.kind, spec.label_names, spec.metric, spec.primary_metric) == (kind, labels, metric_name, primary)
    assert spec.num_labels == (1 if kind == "regression" else len(labels))
    if spec.hub_path == "nyu-mll/glue":
        assert spec.hub_config == task


@pytest.mark.parametrize(
    "task, kind",
    [
        ("sst2", "official"),
        ("cola", "official"),
        ("mrpc", "official"),
        ("rte", "official"),
        ("wnli", "official"),
        ("stsb", "official"),
        ("qnli", "official"),
        ("qqp", "stand-in"),
        ("mnli", "stand-in"),
        ("squad", "stand-in"),
    ],
)
def test_each_job_says_whether_its_evaluation_split_is_a_stand_in(task, kind):
    job = for_task(_experiment(task), task)
    assert job["data"]["eval_split_kind"] == kind and job["data"]["split_note"]
    assert "task_data" not in job, "a job sees its own task's files only"
    assert task_data(job, task) == job["data"], "a job's resolved data block resolves to itself"
    smoke = for_task(_experiment(task, "smoke"), task)["data"]
    assert smoke["eval_split_kind"] == "stand-in" and "(eval_limit)" in smoke["split_note"]


def test_profile_files_override_the_table_and_hub_splits_are_official(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the paper profile's hub model id is not looked up
    exp = _experiment("cola", data={"source": "local", "train": "x/{task}/t.tsv", "eval": "x/{task}/d.tsv"})
    assert for_task(exp, "cola")["data"] == {
        "source": "local",
        "train": "x/cola/t.tsv",
        "eval": "x/cola/d.tsv",
        "train_split_kind": "unspecified",
        "eval_split_kind": "unspecified",
    }
    paper = for_task(_experiment(["mnli", "qqp", "sst2", "squad"], "paper"), "qqp")["data"]
    assert paper["source"] == "hub" and paper["eval_split_kind"] == "official" and "train" not in paper


def test_a_task_without_files_is_a_clear_config_error(monkeypatch):
    """Under ``data.source: local`` a task without files, or with a missing one, stops the run naming the key;
    under ``auto`` (the profiles' default) the same task is read from the hub instead, and says why."""
    monkeypatch.chdir(REPO)
    raw = load_config_file()
    del raw["task_data"]["rte"]
    raw.update(task="rte", data={"source": "local"})
    with pytest.raises(ConfigError, match=r"no data files for task 'rte'.*task_data.rte"):
        resolve(raw)
    raw = load_config_file()
    raw["task_data"]["qqp"]["eval"] = "../shared/data/qqp/no_such.tsv"
    raw.update(task="qqp", data={"source": "local"})
    with pytest.raises(ConfigError, match=r"key 'task_data.qqp.eval': data file not found for task 'qqp'"):
        resolve(raw)
    raw.update(data={"source": "auto"})
    data = for_task(resolve(raw), "qqp")["data"]
    assert data["source"] == "hub" and "../shared/data/qqp/no_such.tsv not found" in data["source_note"]


# ----- loading the staged files ----------------------------------------------------------------------

COUNTS = {  # from ../shared/data/README.md
    "cola": {"train": {1: 6023, 0: 2528}, "eval": {1: 721, 0: 322}},
    "mrpc": {"train": {1: 2474, 0: 1194}, "eval": {1: 279, 0: 129}},
    "rte": {"train": {0: 1249, 1: 1241}, "eval": {0: 146, 1: 131}},
    "wnli": {"train": {0: 323, 1: 312}, "eval": {0: 40, 1: 31}},
    "qnli": {"train": {0: 4523, 1: 4476}, "eval": {1: 2761, 0: 2702}},
    "qqp": {"train": {0: 5747, 1: 3252}, "eval": {0: 623, 1: 377}},
    "mnli": {
        "train": {0: 3061, 1: 2980, 2: 2958},
        "eval": {0: 373, 2: 316, 1: 311},
        "eval_mismatched": {0: 346, 2: 335, 1: 319},
    },
    "sst2": {"train": {1: 37569, 0: 29780}, "eval": {1: 444, 0: 428}},
}


@needs_data
@pytest.mark.parametrize("task", sorted(COUNTS))
def test_staged_classification_task_loads_with_columns_labels_and_counts(task):
    spec, report = get_task(task), {}
    data = load_task_data(spec, table_config(task), report=report)
    assert set(data) == set(COUNTS[task])
    for split, counts in COUNTS[task].items():
        ds = data[split]
        assert ds.column_names == [*spec.text_fields, "label"]
        assert ds.features["label"].names == list(spec.label_names)
        assert dict(collections.Counter(ds["label"])) == counts
    assert report["eval_split_kind"] == table_config(task).eval_split_kind
    assert report["examples"] == {k: sum(v.values()) for k, v in COUNTS[task].items()}


@needs_data
def test_staged_stsb_loads_float_scores():
    report = {}
    data = load_task_data(get_task("stsb"), table_config("stsb"), report=report)
    assert (len(data["train"]), len(data["eval"])) == (5749, 1500)
    for ds in data.values():
        assert ds.column_names == ["sentence1", "sentence2", "label"] and ds.features["label"].dtype == "float32"
        scores = np.asarray(ds["label"])
        assert scores.min() == 0.0 and scores.max() == 5.0
    assert (
        data["eval"][1]["label"] == pytest.approx(4.75)
        and data["eval"][0]["sentence1"] == "A man with a hard hat is dancing."
    )


@needs_data
def test_staged_squad_is_split_by_article_without_overlap():
    report = {}
    data = load_task_data(get_task("squad"), table_config("squad"), report=report)
    assert (len(data["train"]), len(data["eval"])) == (7793, 2777)
    assert report["article_split"] == {
        "every": 4,
        "eval_index": 3,
        "train_articles": 36,
        "train_questions": 7793,
        "eval_articles": 12,
        "eval_questions": 2777,
    }
    assert not set(data["train"]["id"]) & set(data["eval"]["id"])
    assert not set(data["train"]["context"]) & set(data["eval"]["context"])
    assert data["eval"].column_names == ["id", "question", "context", "answers"]


@needs_data
def test_qqp_stand_in_evaluation_pairs_are_never_trained_on():
    def pairs(path):
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        return {tuple(" ".join(t.split()) for t in r[:2]) for r in rows}

    nine, one = pairs(DATA / "qqp/train_subset_9k.tsv"), pairs(DATA / "qqp/train_subset_1k.tsv")
    assert len(nine) == 8999 and len(one) == 1000
    assert not nine & one and not nine & {p[::-1] for p in one}
    report = {}
    load_task_data(get_task("qqp"), table_config("qqp"), report=report)
    assert report["train_overlap_dropped"] == 0 and report["eval_split_kind"] == "stand-in"


def test_overlapping_training_pairs_are_dropped_and_counted(tmp_path):
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("question1\tquestion2\tlabel\nHow  are you?\tWho are you?\t0\nA?\tB?\t1\nC?\tD?\t0\n")
    dev.write_text("question1\tquestion2\tlabel\nWho are you?\tHow are you?\t0\nC?\tD?\t0\n")
    report = {}
    data = load_task_data(
        get_task("qqp"), DataConfig(train=str(train), eval=str(dev), drop_train_overlap=True), report=report
    )
    assert data["train"]["question1"] == ["A?"] and report["train_overlap_dropped"] == 2


@needs_data
def test_mnli_ptb_tokenized_evaluation_texts_are_detokenized():
    data = load_task_data(get_task("mnli"), table_config("mnli", train_limit=10))
    raw = load_task_data(get_task("mnli"), table_config("mnli", train_limit=10, detokenize_eval=None))
    assert raw["eval"][0]["premise"].endswith("secondhand bookshop .")
    assert data["eval"][0]["premise"].endswith("secondhand bookshop.")
    assert data["eval"]["label"] == raw["eval"]["label"]
    texts = [t for split in ("eval", "eval_mismatched") for t in data[split]["premise"]]
    assert not any("-LRB-" in t or re.search(r" n't\b| [,.]", t) for t in texts)
    assert data["train"]["premise"] == raw["train"]["premise"], "training text is untokenized: left alone"


@pytest.mark.parametrize(
    "tokenized, text",
    [
        (
            "You ca n't take it with you -- neither can I , unfortunately .",
            "You can't take it with you -- neither can I, unfortunately.",
        ),
        ("Old King 's House -LRB- built in 1762 -RRB- , which", "Old King's House (built in 1762), which"),
        (
            "`` What are you going to do about it ? '' Tuppence frowned",
            '"What are you going to do about it?" Tuppence frowned',
        ),
        (
            "Stephanopoulos ' successor paid $ 5 for 10 % more ; I 'll see",
            "Stephanopoulos' successor paid $5 for 10% more; I'll see",
        ),
        ("the -LSB- sic -RSB- rule", "the [sic] rule"),
        ("` Do n't worry , ' he whispered .", "'Don't worry,' he whispered."),
        (
            "two of the '90s ' most acclaimed ; the Class of '58 will",
            "two of the '90s' most acclaimed; the Class of '58 will",
        ),
        ("from an ` admirer ' .", "from an 'admirer'."),
        ("' I do n't suppose you could ? '", "'I don't suppose you could?'"),
    ],
)
def test_ptb_detokenize(tokenized, text):
    from prunebench.data.loading import ptb_detokenize

    assert ptb_detokenize(tokenized) == text


# ----- metrics and statistics of the new tasks ---------------------------------------------------------


def _predictions(tmp_path, task, kind, preds, refs, metric_name):
    summary = {"task": task, "method": "dense", "budget": 1.0, "seed": 0, "metrics": {}}
    payload = predictions_payload(summary, metric_name, kind, list(preds), list(refs))
    return read_predictions(write_predictions(payload, tmp_path / f"{task}{metric_name}.predictions.json"))


def test_regression_predictions_file_holds_floats_and_recomputes_pearson(tmp_path):
    p = _predictions(tmp_path, "stsb", "values", [0.5, 1.5, 2.0, 4.0], [1.0, 2.0, 3.0, 5.0], "pearson")
    data = json.loads((tmp_path / "stsbpearson.predictions.json").read_text())
    assert data["kind"] == "values" and data["references"] == [1.0, 2.0, 3.0, 5.0]
    from prunebench.records.record import pearson

    assert p.value() == pytest.approx(float(pearson([0.5, 1.5, 2.0, 4.0], [1.0, 2.0, 3.0, 5.0])), abs=1e-15)
    bad = dict(data, predictions=[0.5, "x", 2.0, 4.0])
    (tmp_path / "bad.predictions.json").write_text(json.dumps(bad))
    from prunebench.records.record import PredictionsError

    with pytest.raises(PredictionsError, match="finite numbers"):
        read_predictions(tmp_path / "bad.predictions.json")


def test_bootstrap_recomputes_correlation_and_matthews_on_each_resample():
    """aggregate_metric on resampled components equals the metric of the resampled pairs (not a mean)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.7, size=40)
    y[::7] = y[0]  # ties
    idx = rng.integers(0, 40, size=(5, 40))
    comps = np.stack([x, y])[:, idx]  # (2, resamples, n)
    from prunebench.data.metric_kernels import average_ranks, pearson

    for r in range(5):
        xr, yr = x[idx[r]], y[idx[r]]
        assert aggregate_metric("values", "pearson", comps)[r] == pytest.approx(np.corrcoef(xr, yr)[0, 1], abs=1e-12)
        rx, ry = average_ranks(xr), average_ranks(yr)
        assert aggregate_metric("values", "spearman", comps)[r] == pytest.approx(np.corrcoef(rx, ry)[0, 1], abs=1e-12)
    from scipy.stats import rankdata  # cross-check of the vectorised ranks

    assert np.array_equal(average_ranks(comps[1]), rankdata(comps[1], axis=-1))
    assert float(pearson(x, y)) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)


def test_matthews_predictions_and_interval(tmp_path):
    from prunebench.report import stats

    preds = [1] * 6 + [1] * 2 + [0] * 1 + [0] * 3  # tp 6, fp 2, fn 1, tn 3
    refs = [1] * 6 + [0] * 2 + [1] * 1 + [0] * 3
    p = _predictions(tmp_path, "cola", "labels", preds, refs, "mcc")
    assert p.components().shape == (4, 12)
    assert p.value() == pytest.approx(16 / math.sqrt(1120), abs=1e-12)
    ci = stats.metric_ci(p, n_resamples=500)
    assert ci.low < ci.value < ci.high and -1 <= ci.low and ci.high <= 1


def test_regression_statistics_work_end_to_end(tmp_path):
    from prunebench.report import stats

    rng = np.random.default_rng(1)
    refs = np.round(rng.uniform(0, 5, size=300), 3)
    good = refs + rng.normal(scale=0.5, size=300)
    poor = refs + rng.normal(scale=3.0, size=300)
    a = _predictions(tmp_path, "stsb", "values", good.tolist(), refs.tolist(), "pearson")
    (tmp_path / "b").mkdir()
    b = _predictions(tmp_path / "b", "stsb", "values", poor.tolist(), refs.tolist(), "pearson")
    ci = stats.metric_ci(a, n_resamples=500)
    assert ci.low < a.value() < ci.high
    diff = stats.diff_ci(a, b, n_resamples=500)
    assert diff.low > 0, "the better regressor's Pearson is higher on the same resampled pairs"
    assert stats.paired_pvalue([a], [b], n_resamples=500) < 0.01
    assert stats.paired_pvalue([a], [a], n_resamples=500) == 1.0
    ranks = stats.tied_ranks({"good": [a], "poor": [b]}, n_resamples=200)
    assert ranks["good"].rank == 1 and ranks["poor"].rank == 2


# ----- end to end: a few training steps of the tiny model on slices of the real files ---------------------


def _evaluate_handles_regression() -> bool:
    from prunebench.measure import accuracy

    return "regression" in inspect.getsource(accuracy.evaluate_task)


def _train_and_evaluate(task, tokenizer, tmp_path, steps=15, train_limit=96, eval_limit=48, **budget):
    """load (task table) -> tokenize -> train -> evaluate_task -> predictions file, as a training job does."""
    from prunebench.checkpoints.pretrained import load_pretrained
    from prunebench.data import squad as qa
    from prunebench.measure.accuracy import evaluate_task
    from prunebench.training.trainer import FinetuneBudget, tokenize, train

    spec = get_task(task)
    data = load_task_data(spec, table_config(task, "smoke", train_limit=train_limit, eval_limit=eval_limit))
    ft = FinetuneBudget(
        steps=steps, batch_size=8, learning_rate=2e-3, freeze_embeddings=False, max_seq_len=64, **budget
    )
    if spec.kind == "extractive_qa":
        train_ds = qa.train_features(data["train"], tokenizer, ft.max_seq_len, ft.doc_stride)
        eval_ds = qa.eval_features(data["eval"], tokenizer, ft.max_seq_len, ft.doc_stride)
    else:
        train_ds, eval_ds = (tokenize(data[k], tokenizer, spec.text_fields, ft.max_seq_len) for k in ("train", "eval"))
    model = load_pretrained("tiny-random", spec.num_labels, 0, spec.label_names, spec.kind)
    result = train(model, train_ds, tokenizer, ft, None, seed=0, log_every=5)
    assert all(math.isfinite(v) for v in result.loss_curve)
    ev = evaluate_task(model, eval_ds, tokenizer, spec, 16, data["eval"])
    summary = {
        "task": task,
        "method": "dense",
        "budget": 1.0,
        "seed": 0,
        "metrics": {k: metric(v, "fraction") for k, v in ev.metrics.items()},
        "details": {"training": {"eval_examples": len(data["eval"])}},
    }
    payload = predictions_payload(summary, spec.primary_metric, ev.kind, ev.predictions, ev.references)
    p = read_predictions(write_predictions(payload, tmp_path / "seed0.predictions.json"), summary)
    assert p.n == len(data["eval"]) == eval_limit
    return ev, p


@needs_data
def test_pair_classification_task_trains_and_is_scored_with_f1(tokenizer, tmp_path):
    ev, p = _train_and_evaluate("mrpc", tokenizer, tmp_path)
    assert set(ev.metrics) == {"accuracy", "f1"} and ev.kind == "labels"
    assert p.metric == "f1" and p.value() == pytest.approx(ev.metrics["f1"], abs=1e-12)


@needs_data
def test_cola_trains_and_is_scored_with_matthews(tokenizer, tmp_path):
    ev, p = _train_and_evaluate("cola", tokenizer, tmp_path, steps=8)
    assert set(ev.metrics) == {"mcc", "accuracy"} and -1 <= ev.metrics["mcc"] <= 1
    assert p.value() == pytest.approx(ev.metrics["mcc"], abs=1e-12)


@needs_data
def test_stsb_regression_trains_with_mse_and_is_scored_with_correlations(tokenizer, tmp_path):
    if not _evaluate_handles_regression():
        pytest.skip(
            "prunebench.measure.accuracy.evaluate_task does not evaluate regression tasks yet "
            "(it needs predict_values and the evaluation kind 'values')"
        )
    ev, p = _train_and_evaluate("stsb", tokenizer, tmp_path)
    assert ev.kind == "values" and set(ev.metrics) == {"pearson", "spearman"}
    assert all(isinstance(v, float) for v in ev.predictions) and all(0 <= r <= 5 for r in ev.references)
    assert p.kind == "values" and p.value() == pytest.approx(ev.metrics["pearson"], abs=1e-9)


@needs_data
def test_stsb_regression_head_trains_through_the_trainer(tokenizer):
    """Independent of evaluate_task: the one-output head, MSE loss on float targets, float predictions."""
    import torch

    from prunebench.checkpoints.pretrained import load_pretrained
    from prunebench.data.metrics import load_metric
    from prunebench.training.trainer import FinetuneBudget, tokenize, train

    spec = get_task("stsb")
    data = load_task_data(spec, table_config("stsb", "smoke", train_limit=128, eval_limit=32))
    train_ds, eval_ds = (tokenize(data[k], tokenizer, spec.text_fields, 64) for k in ("train", "eval"))
    model = load_pretrained("tiny-random", spec.num_labels, 0, spec.label_names, spec.kind)
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    result = train(
        model,
        train_ds,
        tokenizer,
        FinetuneBudget(steps=20, batch_size=16, learning_rate=2e-3, freeze_embeddings=False),
        None,
        seed=0,
        log_every=10,
    )
    assert result.loss_curve[-1] < result.loss_curve[0]
    with torch.inference_mode():
        batch = tokenizer.pad(
            [
                {k: eval_ds[i][k] for k in ("input_ids", "attention_mask", "token_type_ids")}
                for i in range(len(eval_ds))
            ],
            return_tensors="pt",
        )
        preds = model(**batch).logits[:, 0].tolist()
    out = load_metric("pearson_spearman").compute(predictions=preds, references=list(eval_ds["label"]))
    assert set(out) == {"pearson", "spearman"} and all(-1 <= v <= 1 for v in out.values())


@needs_data
def test_squad_stand_in_split_trains_and_is_scored(tokenizer, tmp_path):
    ev, p = _train_and_evaluate("squad", tokenizer, tmp_path, steps=6, train_limit=24, eval_limit=8, doc_stride=32)
    assert ev.kind == "scores" and set(ev.metrics) == {"exact_match", "f1"}
    assert p.value() == pytest.approx(ev.metrics["f1"], abs=1e-12)


# ----- the workflow plans every task ---------------------------------------------------------------------


@needs_data
def test_smoke_profile_plans_every_staged_task(tmp_path):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
    }
    tasks = "[cola,mrpc,rte,stsb,qnli,qqp,mnli,squad]"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--dry-run",
            "--cores",
            "2",
            "--printshellcmds",
            "--config",
            "profile=smoke",
            f"task={tasks}",
            f"results_dir={tmp_path}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    stats = text.split("Job stats")[-1]
    dense = next(int(line.split()[1]) for line in stats.splitlines() if line.split()[:1] == ["finetune_dense"])
    assert dense == 8
    assert "train_subset_1k.tsv" in text and "dev_mismatched_sample1k_tok.tsv" in text and '"doc_stride": 48' in text
