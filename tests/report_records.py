"""Synthetic, schema-valid result records for the report tests (no training, no results/).

``build_results(root)`` lays out a small results folder as the workflow would: records of
several methods, budgets and two seeds, one corrupt record, expected records that are
missing (one with a job log, one without), Snakemake benchmark files and a head-ablation
analysis. The numbers are chosen so that the Pareto fronts are known (see ``FRONT_REMAINING``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prunebench.records.record import metric, predictions_path, predictions_payload, write_predictions, write_record

TASK = "sst2"
SEEDS = (0, 1)
DENSE_DISK = 90e6
LAYERS = 2
MATRICES = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
]

#: (method, budget) -> accuracy per seed, encoder remaining, disk (dense fmt, sparse fmt), latency b1/b32 (ms)
RUNS = {
    ("dense", 1.0): dict(acc=(0.90, 0.91), rem=1.0, disk=(90e6, 95e6), lat=(10.0, 100.0), gran="element"),
    ("int8_dynamic", 1.0): dict(
        acc=(0.9025, 0.9025), rem=0.99, disk=(40e6, 41e6), lat=(6.0, 50.0), gran="int8-weights"
    ),
    ("magnitude_global", 0.5): dict(acc=(0.89, 0.88), rem=0.5, disk=(90e6, 70e6), lat=(10.0, 100.0), gran="element"),
    ("magnitude_global", 0.1): dict(acc=(0.80, 0.82), rem=0.1, disk=(90e6, 52e6), lat=(10.0, 100.0), gran="element"),
    ("random", 0.5): dict(acc=(0.85, 0.84), rem=0.5, disk=(90e6, 70e6), lat=(10.0, 100.0), gran="element"),
    ("random", 0.1): dict(acc=(0.60, 0.62), rem=0.1, disk=(90e6, 52e6), lat=(10.0, 100.0), gran="element"),
    ("movement_soft", 0.1): dict(acc=(0.86, 0.85), rem=0.1, disk=(90e6, 50e6), lat=(10.0, 100.0), gran="element"),
    ("head_importance", 0.7): dict(acc=(0.87, 0.87), rem=0.7, disk=(65e6, 66e6), lat=(8.0, 75.0), gran="head"),
    ("head_importance", 0.4): dict(acc=(0.80, 0.80), rem=0.4, disk=(45e6, 46e6), lat=(6.0, 45.0), gran="head"),
    ("head_random", 0.7): dict(acc=(0.83, 0.83), rem=0.7, disk=(65e6, 66e6), lat=(8.0, 75.0), gran="head"),
    ("head_random", 0.4): dict(acc=(0.70, 0.70), rem=0.4, disk=(45e6, 46e6), lat=(6.0, 45.0), gran="head"),
}
#: Pareto front on accuracy vs. encoder weights remaining (method, budget).
FRONT_REMAINING = {("dense", 1.0), ("int8_dynamic", 1.0), ("magnitude_global", 0.5), ("movement_soft", 0.1)}


#: evaluation examples of the synthetic predictions files (every accuracy in RUNS x N_EXAMPLES is a whole number)
N_EXAMPLES = 400


def write_record_predictions(record: dict, path: Path, n: int = N_EXAMPLES) -> Path:
    """The predictions file beside the record at ``path``: right on the first round(accuracy * n)
    examples of one fixed order, wrong on the rest, so two models disagree only on the examples
    between their two counts (all in the better model's favour): the paired tests' answers are known."""
    references = np.random.default_rng(123).integers(0, 2, n)
    k = round(record["metrics"]["accuracy"]["value"] * n)
    predicted = np.where(np.arange(n) < k, references, 1 - references)
    payload = predictions_payload(record, "accuracy", "labels", predicted.tolist(), references.tolist())
    return write_predictions(payload, predictions_path(path))


def budget_label(b: float) -> str:
    return f"{b:g}"


def record_path(root: Path, method: str, budget: float, seed: int) -> Path:
    return root / "records" / TASK / method / budget_label(budget) / f"seed{seed}.json"


def make_record(method: str, budget: float, seed: int, spec: dict) -> dict:
    acc = spec["acc"][seed % 2]
    rem = spec["rem"]
    per_matrix = {}
    for layer in range(LAYERS):
        for i, mat in enumerate(MATRICES):
            # a little structure: later layers and the FFN keep less at the same budget
            value = rem if rem >= 0.99 else max(0.0, min(1.0, rem * (1.2 - 0.4 * layer) * (1.1 if i < 4 else 0.9)))
            if spec["gran"] == "head" and layer == 1 and i < 4:
                value = 0.5
            per_matrix[f"bert.encoder.layer.{layer}.{mat}.weight"] = value
    b1, b32 = spec["lat"]
    dense_b1, dense_b32 = RUNS[("dense", 1.0)]["lat"]
    metrics = {
        "accuracy": metric(acc, "fraction"),
        "encoder_remaining": metric(rem, "fraction"),
        "encoder_nonzero_weights": metric(rem * 65536, "count"),
        "encoder_stored_fraction": metric(rem if spec["gran"] == "head" else 1.0, "fraction"),
        "gflops_per_example": metric(0.0047 * rem, "GFLOP"),
        "disk_bytes_dense_format": metric(spec["disk"][0], "bytes"),
        "disk_bytes_sparse_format": metric(spec["disk"][1], "bytes"),
        "peak_inference_memory": metric(50.0, "MiB"),
        "latency_b1": metric(b1 + 0.1 * seed, "ms"),
        "dense_latency_b1": metric(dense_b1, "ms"),
        "speedup_b1": metric(dense_b1 / (b1 + 0.1 * seed), "x"),
        "latency_b32": metric(b32 + seed, "ms"),
        "dense_latency_b32": metric(dense_b32, "ms"),
        "speedup_b32": metric(dense_b32 / (b32 + seed), "x"),
        "train_wall_time": metric(12.5, "s"),
    }
    if spec["gran"] == "head":
        metrics["heads_remaining"] = metric(rem, "fraction")
    return {
        "schema_version": 1,
        "task": TASK,
        "method": method,
        "budget": budget,
        "seed": seed,
        "metrics": metrics,
        "details": {
            "method": {
                "name": method,
                "paper": f"paper of {method}",
                "starts_from": "dense",
                "granularity": spec["gran"],
                "target_remaining": budget,
                "settings": {"update_every": 10},
            },
            "model": {"id": "tiny-random", "source": "BertConfig(...)"},
            "per_matrix_remaining": per_matrix,
            "measurement": {
                "backend": "torch-dense-cpu",
                "seq_len": 32,
                "batch_sizes": [1, 32],
                "threads": 2,
                "warmup": 1,
                "repeats": 3,
                "latency": {},
            },
            "training": {"steps": 20, "loss_curve": [0.7, 0.5]},
        },
        "config": {
            "task": TASK,
            "model": "tiny-random",
            "profile": "test",
            "results_dir": "x",
            "threads": 2,
            "measure": {"seq_len": 32, "batch_sizes": [1, 32]},
            "finetune": {"steps": 20},
        },
        "provenance": {
            "git_sha": "0123456789abcdef",
            "git_dirty": False,
            "versions": {
                "python": "3.11.7",
                "torch": "2.13.0+cpu",
                "transformers": "5.23.0",
                "datasets": "5.2.0",
                "evaluate": "0.4.6",
            },
            "hardware": {"cpu": "Test CPU", "logical_cores": 2, "gpu": None, "memory_gib": 8.0},
            "wall_time_s": 30.0,
            "created": "2026-01-01T00:00:00+00:00",
        },
    }


def head_ablation_json(layers: int = 2, heads: int = 4) -> dict:
    base = 0.905
    single = [
        [base - 0.01 * ((l + h) % 3) + (0.004 if (l, h) == (1, 2) else 0.0) for h in range(heads)]
        for l in range(layers)
    ]
    kept = [[base - 0.05 - 0.01 * h for h in range(heads)] for _ in range(layers)]
    return {
        "task": TASK,
        "metric": "accuracy",
        "disable": "mask",
        "layers": layers,
        "heads_per_layer": [heads] * layers,
        "baseline": base,
        "single_head_disabled": single,
        "one_head_kept": kept,
        "best_one_head_score": [max(r) for r in kept],
        "layer_attention_disabled": [base - 0.1, base - 0.02],
        "eval_examples": 64,
    }


def build_results(root: Path, predictions: bool = True) -> dict:
    """Write the synthetic results folder under ``root``; return the expected record paths etc.
    ``predictions``: also write each record's predictions file (``write_record_predictions``)."""
    root = Path(root)
    expected = []
    for (method, budget), spec in RUNS.items():
        for seed in SEEDS:
            path = record_path(root, method, budget, seed)
            record = make_record(method, budget, seed, spec)
            write_record(record, path)
            if predictions:
                write_record_predictions(record, path)
            expected.append(path)
    corrupt = record_path(root, "magnitude_local", 0.5, 0)
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_text(json.dumps(make_record("magnitude_local", 0.5, 0, RUNS[("magnitude_global", 0.5)]))[:200])
    failed = record_path(root, "magnitude_local", 0.1, 0)
    log = root / "logs" / TASK / "magnitude_local" / "0.1" / "seed0.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("step 10/20 loss 0.6\nprunebench prune: error: training loss became nan at step 12\n")
    missing = record_path(root, "magnitude_local", 0.1, 1)
    expected += [corrupt, failed, missing]
    bench = root / "benchmarks"
    for rel, s in [
        ("sst2/dense/seed0.tsv", 11.5),
        ("sst2/dense/seed1.tsv", 12.5),
        ("sst2/magnitude_global/0.5/seed0.tsv", 20.0),
        ("sst2/magnitude_global/0.1/seed0.tsv", 21.0),
        ("leaderboard.tsv", 1.5),
        ("analysis/sst2/head_ablation_seed0.tsv", 40.0),
    ]:
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / rel).write_text(
            "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
            f"{s}\t0:00:{int(s):02d}\t1000.5\t3000\t700\t800\t1\t2\t90\t{s + 1}\n"
        )
    (bench / "broken.tsv").write_text("")
    ab = root / "analysis" / TASK / "head_ablation_seed0.json"
    ab.parent.mkdir(parents=True, exist_ok=True)
    ab.write_text(json.dumps(head_ablation_json()))
    (root / "analysis" / TASK / "head_ablation_seed1.json").write_text("{not json")
    (root / "analysis" / TASK / "head_ablation_uniform_seed0.json").write_text(
        json.dumps({**head_ablation_json(), "mode": "uniform", "disable": "uniform attention 1/L"})
    )
    return {
        "expected": [str(p) for p in expected],
        "corrupt": str(corrupt),
        "failed": str(failed),
        "missing": str(missing),
        "present": [str(p) for p in expected if p not in (corrupt, failed, missing)],
    }


# ----- records of any task, with predictions consistent with them (cross-task tests) ------------


def task_record_path(root: Path, task: str, method: str, budget: float, seed: int) -> Path:
    return Path(root) / "records" / task / method / budget_label(budget) / f"seed{seed}.json"


def task_predictions(task: str, quality: float, n: int, positive_share: float = 0.5) -> tuple[str, str, object, list]:
    """(kind, metric, predictions, references) of a model on ``n`` synthetic examples of ``task``:
    right (labels, values, QA score 1) on the first round(quality * n) examples of a fixed order,
    wrong (or noise, or 0) on the rest; labels are 1 on round(positive_share * n) fixed examples."""
    from prunebench.data.tasks import get_task

    spec = get_task(task)
    rng = np.random.default_rng(7)
    k = round(quality * n)
    right = np.arange(n) < k
    if spec.kind == "extractive_qa":
        scores = np.where(right, 1.0, 0.0).tolist()
        return "scores", spec.primary_metric, {"f1": scores, "exact_match": scores}, [["answer"]] * n
    if spec.kind == "regression":
        refs = rng.permutation(np.linspace(0.0, 5.0, n))
        preds = np.where(right, refs, rng.uniform(0.0, 5.0, n))
        return "values", spec.primary_metric, preds.tolist(), refs.tolist()
    refs = np.zeros(n, dtype=int)
    refs[rng.permutation(n)[: round(positive_share * n)]] = 1
    if spec.num_labels > 2:  # several classes: labels drawn uniformly (positive_share does not apply)
        refs = rng.integers(0, spec.num_labels, n)
    preds = np.where(right, refs, (refs + 1) % spec.num_labels)
    return "labels", spec.primary_metric, preds.tolist(), refs.tolist()


def write_task_run(
    root: Path,
    task: str,
    method: str,
    budget: float,
    seed: int,
    quality: float,
    n: int = N_EXAMPLES,
    split_kind: str | None = None,
    split_note: str | None = None,
    positive_share: float = 0.5,
    predictions: bool = True,
) -> Path:
    """A schema-valid record of ``task`` and its predictions file (``task_predictions``); the record's
    primary metric is recomputed from the predictions, so the two always match."""
    from prunebench.records.record import Predictions, references_sha256

    kind, name, preds, refs = task_predictions(task, quality, n, positive_share)
    payload = predictions_payload(
        {"task": task, "method": method, "budget": budget, "seed": seed}, name, kind, preds, refs
    )
    arr = {k: np.asarray(v, dtype=float) for k, v in preds.items()} if kind == "scores" else np.asarray(preds)
    value = Predictions(
        task,
        method,
        float(budget),
        seed,
        name,
        n,
        kind,
        arr,
        None if kind == "scores" else np.asarray(refs),
        references_sha256(refs),
    ).value()
    spec = dict(
        acc=(value, value),
        rem=min(1.0, budget),
        disk=(90e6, 90e6 * max(budget, 0.5)),
        lat=(10.0, 100.0),
        gran="element",
    )
    record = make_record(method, budget, seed, spec)
    record["task"] = task
    metrics = record["metrics"]
    del metrics["accuracy"]
    metrics[name] = metric(float(value), "fraction")
    record["config"]["task"] = task
    if split_kind is not None:
        record["config"]["data"] = {
            "source": "local",
            "eval_split_kind": split_kind,
            "split_note": split_note or f"{split_kind} evaluation split of {task}",
        }
    path = task_record_path(root, task, method, budget, seed)
    write_record(record, path)
    if predictions:
        write_predictions(payload, predictions_path(path))
    return path
