"""One benchmark run in two jobs: train (and evaluate), then measure (and record).

The training job (``run_dense`` / ``run_method``) fine-tunes, prunes, saves the checkpoint
and evaluates the task metric; it writes a *training summary* (the record without the
timed measurements). ``run_dense`` fine-tunes the pretrained model once per (task, seed);
``run_method`` prunes with one method at one budget and seed, starting from the dense
checkpoint (or the pretrained weights, when the method's paper prunes during fine-tuning, or the
output of the pre-training stage, ``prunebench.training.pretrain``, for rows that compress during
pre-training), under the same fine-tuning budget. Training jobs run one thread each, side by side.

The measure job (``measure_and_record``) is the one measurement path: in a fresh process,
alone on the machine (Snakemake gives it every core), it measures peak memory, counts
remaining weights and FLOPs, measures bytes on disk, times the compacted model against the
dense one (and the sparse backend) in the same process, times both again in ONNX Runtime
(``prunebench.measure.onnx_runtime``: the measured model's graph is kept as ``model.onnx`` in
its model folder), and writes the result record.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import methods
from prunebench.checkpoints import store as checkpoints
from prunebench.checkpoints.pretrained import describe_model, load_pretrained, load_tokenizer
from prunebench.data import squad as qa
from prunebench.data.loading import DataConfig, load_task_data, task_data
from prunebench.data.tasks import TaskSpec, get_task
from prunebench.measure.accuracy import evaluate_task
from prunebench.measure.deepsparse_backend import DeepSparseBackend
from prunebench.measure.disk import bytes_on_disk
from prunebench.measure.flops import flops_per_example
from prunebench.measure.latency import compare_latency, fixed_length_batch
from prunebench.measure.memory import peak_inference_memory_mib
from prunebench.measure.onnx_runtime import OrtBackend
from prunebench.measure.sparse_backend import BACKEND as SPARSE_BACKEND
from prunebench.measure.sparse_backend import DEFAULT_MIN_SPARSITY, sparse_matrix_count, to_sparse_backend
from prunebench.method.base import TrainingPlan
from prunebench.records import provenance
from prunebench.records import record as records
from prunebench.structure import budget as budget_lib
from prunebench.training.trainer import FinetuneBudget, TrainResult, resolve_precision, tokenize, train

log = logging.getLogger("prunebench.runner.jobs")
BACKEND = "torch-dense-cpu"


@dataclass
class Context:
    """What every training job of an experiment shares: config, task, tokenizer, tokenized data."""

    exp: dict[str, Any]
    spec: TaskSpec
    tokenizer: Any
    train: Any
    eval: Any  # tokenized evaluation set (QA: context windows)
    eval_examples: Any  # the raw evaluation examples (texts, labels or gold answers)
    budget: FinetuneBudget
    threads: int
    data_details: dict[str, Any] = field(default_factory=dict)  # what load_task_data loaded (details.data)
    #: further evaluation sets, name -> (tokenized, raw examples), e.g. MNLI "mismatched"
    extra_evals: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def load_context(exp: dict[str, Any], task: str, threads: int | None = None) -> Context:
    threads = threads or exp.get("threads", {}).get("train") or 1
    torch.set_num_threads(threads)
    spec = get_task(task)
    tokenizer = load_tokenizer(exp["model"])
    details: dict[str, Any] = {}
    # the data block as this job reads it (``auto`` resolved to local or hub), so the record names the source used
    exp = {**exp, "data": task_data(exp, task)}
    data = load_task_data(spec, DataConfig.from_dict(exp["data"]), report=details)
    ft = FinetuneBudget.from_dict(exp["finetune"])
    if spec.kind == "extractive_qa":
        train_ds = qa.train_features(data["train"], tokenizer, ft.max_seq_len, ft.doc_stride)
        evals = {
            k: qa.eval_features(v, tokenizer, ft.max_seq_len, ft.doc_stride) for k, v in data.items() if k != "train"
        }
    else:
        train_ds = tokenize(data["train"], tokenizer, spec.text_fields, ft.max_seq_len)
        evals = {k: tokenize(v, tokenizer, spec.text_fields, ft.max_seq_len) for k, v in data.items() if k != "train"}
    extras = {k[len("eval_") :]: (evals[k], data[k]) for k in evals if k.startswith("eval_")}
    return Context(exp, spec, tokenizer, train_ds, evals["eval"], data["eval"], ft, threads, details, extras)


def run_dense(ctx: Context, seed: int, model_dir: Path, summary_path: Path) -> dict:
    start = time.perf_counter()
    model = load_pretrained(ctx.exp["model"], ctx.spec.num_labels, seed, ctx.spec.label_names, ctx.spec.kind)
    result = train(model, ctx.train, ctx.tokenizer, ctx.budget, None, seed)
    checkpoints.save_model(model, ctx.tokenizer, model_dir)
    return evaluate_and_summarize(ctx, model, "dense", 1.0, seed, result, None, start, summary_path)


def run_method(
    ctx: Context,
    method_name: str,
    target: float,
    seed: int,
    dense_dir: Path | None,
    model_dir: Path,
    summary_path: Path,
    reference_summary: Path | None = None,
    pretrained_dir: Path | None = None,
    start_dir: Path | None = None,
) -> dict:
    start = time.perf_counter()
    settings = ctx.exp.get("method_settings", {}).get(method_name, {})
    method = methods.build(method_name, target, settings)
    if method.needs_reference:
        if reference_summary is None:
            raise records.RecordError(
                f"method {method_name!r} needs the reference method's training summary (--reference-summary)"
            )
        method.use_reference(records.read_training_summary(reference_summary))
    if method.starts_from == "dense":
        if dense_dir is None:
            raise checkpoints.CheckpointError(
                f"method {method_name!r} starts from the dense checkpoint: give --dense-dir"
            )
        model = checkpoints.load_model(dense_dir)
    elif method.starts_from == "pruned":  # another row's pruned checkpoint (e.g. sparse + int8)
        if start_dir is None:
            raise checkpoints.CheckpointError(
                f"method {method_name!r} starts from {method.base_method!r}'s checkpoint: give --start-dir"
            )
        model = checkpoints.load_model(start_dir)
    elif (
        method.starts_from == "pretrain"
    ):  # compressed during pre-training (prunebench.training.pretrain): its encoder + a task head
        if pretrained_dir is None:
            raise checkpoints.CheckpointError(
                f"method {method_name!r} starts from its pre-training stage: give --pretrained-dir"
            )
        from prunebench.training.pretrain import read_summary

        checkpoints.verify(pretrained_dir)
        method.use_pretrain(read_summary(pretrained_dir))
        model = load_pretrained(str(pretrained_dir), ctx.spec.num_labels, seed, ctx.spec.label_names, ctx.spec.kind)
    else:
        model = load_pretrained(ctx.exp["model"], ctx.spec.num_labels, seed, ctx.spec.label_names, ctx.spec.kind)
    method.note_run(
        {
            "model": ctx.exp["model"],
            "task": ctx.spec.name,
            "steps": ctx.budget.steps,
            "batch_size": ctx.budget.batch_size,
            "starts_from": method.starts_from,
        }
    )
    if method.trains:
        result = train(model, ctx.train, ctx.tokenizer, ctx.budget, method, seed)
    else:  # post-training: the starting checkpoint as it is (int8: this task and seed's dense fine-tuning)
        method.prepare(model, TrainingPlan(total_steps=0, seed=seed))
        result = _no_training(ctx.budget)
    model = method.finalize(model)
    checkpoints.save_model(model, ctx.tokenizer, model_dir)
    return evaluate_and_summarize(ctx, model, method_name, target, seed, result, method, start, summary_path)


def _no_training(budget: FinetuneBudget) -> TrainResult:
    """The training result of a post-training row: no step; the precision is the one its starting
    checkpoint was fine-tuned at."""
    capability = provenance.cpu_capability()
    return TrainResult(
        0, 0.0, float("nan"), [], resolve_precision(budget.precision, budget.torch_device(), capability), capability
    )


def _rate(value: float, digits: int) -> float | None:
    """A throughput for the summary, None where there was no training to time."""
    return round(value, digits) if math.isfinite(value) else None


def evaluate_and_summarize(
    ctx: Context, model, method_name: str, target: float, seed: int, result, method, start: float, summary_path: Path
) -> dict:
    """The training job's half of the record: task metric, remaining weights, training details; and,
    beside the summary, the per-example predictions behind the metric (``records.predictions_path``)."""
    R = records.metric
    evaluation = evaluate_task(model, ctx.eval, ctx.tokenizer, ctx.spec, ctx.budget.eval_batch_size, ctx.eval_examples)
    metrics: dict[str, dict] = {name: R(value, "fraction") for name, value in evaluation.metrics.items()}
    for suffix, (dataset, examples) in ctx.extra_evals.items():  # e.g. MNLI mismatched: accuracy_mismatched
        extra = evaluate_task(model, dataset, ctx.tokenizer, ctx.spec, ctx.budget.eval_batch_size, examples)
        metrics.update({f"{name}_{suffix}": R(value, "fraction") for name, value in extra.metrics.items()})
    metrics["train_wall_time"] = R(result.wall_time_s, "s")
    summary = {
        "task": ctx.spec.name,
        "method": method_name,
        "budget": float(target),
        "seed": int(seed),
        "metrics": metrics,
        "details": {
            "method": method.describe()
            if method is not None
            else {"name": "dense", "paper": "dense fine-tuned baseline"},
            "per_matrix_remaining": budget_lib.per_matrix_remaining(model),
            "data": ctx.data_details,  # files, split kinds (official / stand-in) and notes, example counts
            "predictions": None,  # filled below: what the predictions file must match
            "training": {
                "steps": result.steps,
                "loss_curve": result.loss_curve,
                "threads": ctx.threads,
                "eval_examples": len(ctx.eval_examples),
                "train_features": len(ctx.train),
                "precision": result.precision,
                "precision_configured": ctx.budget.precision,
                "cpu_capability": result.cpu_capability,
                "train_examples": result.examples,
                "train_wall_time_s": round(result.wall_time_s, 3),
                "examples_per_s": _rate(result.examples_per_s, 3),
                "real_tokens_per_s": _rate(result.tokens_per_s, 1),
                "padded_fraction": _rate(result.padded_fraction, 4),
                "batching": ctx.budget.batching,
                "steps_per_s": _rate(result.steps_per_s, 4),
                "job_startup_s": _startup_s(start),
            },
        },
        "config": ctx.exp,
        "wall_time_s": time.perf_counter() - start,
    }
    _write_predictions(summary, evaluation, ctx.spec.primary_metric, Path(summary_path))
    records.write_training_summary(summary, summary_path)
    log.info(
        "%s budget %s seed %s trained: %s",
        method_name,
        target,
        seed,
        {k: v["value"] for k, v in metrics.items() if k != "train_wall_time"},
    )
    return summary


def _startup_s(run_start: float) -> float | None:
    """Seconds from this process's start to ``run_start`` (imports, tokenizer, data and tokenization);
    None where /proc is not available."""
    import os

    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - (time.perf_counter() - run_start), 3)


def _write_predictions(summary: dict, evaluation, metric_name: str, summary_path: Path) -> Path:
    """Write the per-example predictions beside the training summary and note them in its details."""
    payload = records.predictions_payload(
        summary, metric_name, evaluation.kind, evaluation.predictions, evaluation.references
    )
    path = records.predictions_path(summary_path)
    summary["details"]["predictions"] = records.predictions_summary(payload, path)
    return records.write_predictions(payload, path)


def measure_and_record(
    summary_path: Path,
    model_dir: Path,
    dense_dir: Path,
    record_path: Path,
    measure: dict[str, Any] | None = None,
    threads: int | None = None,
) -> dict:
    """The one measurement path: every measured number of a record is computed here.

    Runs first in a fresh process (peak memory needs that) and alone on the machine: the
    compacted model, the dense model and, for element-wise sparsity, the sparse backend are
    timed in turn in this one process, so their ratio is a same-job speed-up. Both models are
    also exported to ONNX and timed in ONNX Runtime (``ort_*`` metrics, details in
    ``details.measurement.onnx_runtime``; measure key ``onnx: false`` switches it off); a failed
    export or session is recorded there, never raised.
    """
    start = time.perf_counter()
    summary = _read_summary(summary_path, record_path)
    spec = get_task(summary["task"])
    exp = _measured_experiment(summary, spec, measure, threads)
    m, threads = exp["measure"], exp["threads"]["measure"]
    torch.set_num_threads(threads)
    metrics: dict[str, dict] = dict(summary["metrics"])
    if m.get("memory", True):  # first, before any other model is loaded
        metrics["peak_inference_memory"] = records.metric(
            peak_inference_memory_mib(str(model_dir), max(m["batch_sizes"]), m["seq_len"], threads), "MiB"
        )
    model = checkpoints.load_model(model_dir)
    dense = checkpoints.load_model(dense_dir)
    before = summary["details"]["method"].get("remaining_before_quantization")
    metrics.update(_size_and_flops_metrics(model, dense, model_dir, m["seq_len"], quantizes(summary), before))
    latency, latency_details, ort_backend, ds_backend = _latency_metrics(
        model, dense, model_dir, dense_dir, summary, exp, spec
    )
    metrics.update(latency)
    wall = summary["wall_time_s"] + time.perf_counter() - start
    results_dir = exp.get("results_dir")
    details = {
        **summary["details"],
        "model": describe_model(exp["model"]),
        "model_dir": provenance.portable_path(model_dir, results_dir),
    }
    details["measurement"] = _measurement_details(m, threads, latency_details, ort_backend, start)
    details["measurement"]["deepsparse"] = ds_backend.details if ds_backend is not None else {"enabled": False}
    _make_paths_portable(details, results_dir)
    record = _assemble_record(summary, exp, metrics, details, wall)
    records.write_record(record, record_path)
    log.info(
        "%s budget %s seed %s: %s",
        record["method"],
        record["budget"],
        record["seed"],
        {k: v["value"] for k, v in metrics.items() if k in ("accuracy", "encoder_remaining", "speedup_b32")},
    )
    return record


def _read_summary(summary_path: Path, record_path: Path) -> dict:
    """The training summary. Its per-example predictions are checked against it (else PredictionsError
    naming the file) and copied beside the record here, before any timing, so that a mismatch fails fast."""
    summary = records.read_training_summary(summary_path)
    records.copy_predictions(records.predictions_path(summary_path), summary, records.predictions_path(record_path))
    return summary


def _measured_experiment(
    summary: dict, spec: TaskSpec, measure: dict[str, Any] | None, threads: int | None
) -> dict[str, Any]:
    """The training configuration with the measurement settings and both thread counts: the record's
    ``config``. Settings or threads not given are the configured ones (``_configured``)."""
    configured = _configured(spec.name) if measure is None or not threads else None
    m = measure if measure is not None else configured["measure"]
    threads = threads or configured["threads"]["measure"]
    return {
        **summary["config"],
        "measure": m,
        "threads": {"train": summary["details"]["training"]["threads"], "measure": threads},
    }


def quantizes(summary: dict) -> bool:
    """Whether the summary's method stores low-bit codes (``PruningMethod.quantizes``; summaries written before
    the flag existed: an ``int8-weights``/``int4-weights`` granularity)."""
    method = summary["details"]["method"]
    return bool(method.get("quantizes", str(method.get("granularity", "")).endswith("-weights")))


def _size_and_flops_metrics(
    model, dense, model_dir: Path, seq_len: int, quantized: bool = False, before_quantization: float | None = None
) -> dict[str, dict]:
    """Encoder weights remaining, FLOPs per example (sparse and dense kernels) with the theoretical
    speed-ups over the dense model, and bytes on disk in the dense and the sparse format.

    A quantized model (``quantized``) removed no weight: a code that rounds to zero is stored and
    multiplied like any other, so its remaining fraction is the stored fraction and its theoretical
    speed-up the dense-kernel one; its zero codes are still counted in ``encoder_nonzero_weights``. A model
    quantized from a pruned checkpoint (``before_quantization``: the remaining fraction counted on that
    checkpoint) keeps that fraction, and its theoretical speed-up counts the zero codes a sparse engine skips."""
    R = records.metric
    metrics: dict[str, dict] = {}
    count = budget_lib.count_encoder_weights(model)
    remaining = count.remaining_fraction
    if quantized:  # no weight removed by rounding: the stored fraction, or what was left before quantizing
        remaining = count.stored_fraction if before_quantization is None else before_quantization
    metrics["encoder_remaining"] = R(remaining, "fraction")
    metrics["encoder_nonzero_weights"] = R(count.nonzero, "count")
    metrics["encoder_stored_fraction"] = R(count.stored_fraction, "fraction")
    flops, dense_flops = flops_per_example(model, seq_len), flops_per_example(dense, seq_len)
    sparse_flops = flops["dense_kernels"] if quantized and before_quantization is None else flops["sparse"]
    metrics["gflops_per_example"] = R(sparse_flops / 1e9, "GFLOP")
    metrics["gflops_per_example_dense_kernels"] = R(flops["dense_kernels"] / 1e9, "GFLOP")
    metrics["theoretical_speedup"] = R(dense_flops["dense_kernels"] / sparse_flops, "x")
    metrics["theoretical_speedup_dense_kernels"] = R(dense_flops["dense_kernels"] / flops["dense_kernels"], "x")
    disk = bytes_on_disk(model_dir)
    metrics["disk_bytes_dense_format"] = R(disk["dense"], "bytes")
    metrics["disk_bytes_sparse_format"] = R(disk["sparse"], "bytes")
    return metrics


def _latency_metrics(
    model, dense, model_dir: Path, dense_dir: Path, summary: dict, exp: dict[str, Any], spec: TaskSpec
) -> tuple[dict[str, dict], dict[str, Any], OrtBackend | None, DeepSparseBackend | None]:
    """Latency of the model against the dense one on every backend: PyTorch, the sparse backend (for
    element-wise sparsity), ONNX Runtime (unless the measure settings switch it off) and DeepSparse (when
    they switch it on), all on the same batches of real evaluation sentences. Returns the metrics, the
    PyTorch timings (``details.measurement.latency``) and the ONNX Runtime and DeepSparse backends."""
    m, threads = exp["measure"], exp["threads"]["measure"]
    # the dense model a second time: the control, timed in turn with the others (its ratio is the timing's noise)
    models = {"model": model, "dense": dense, "dense_control": dense}
    latency_details: dict[str, Any] = {}
    if summary["details"]["method"].get("granularity") == "element":
        sparse, latency_details["sparse_backend"] = _sparse_backend(model)
        if sparse is not None:
            models["sparse_backend"] = sparse
    eval_examples = _eval_examples(exp, spec)
    tokenizer = load_tokenizer(exp["model"])
    batches = {
        bs: fixed_length_batch(eval_examples, tokenizer, spec.text_fields, bs, m["seq_len"]) for bs in m["batch_sizes"]
    }
    ort_backend = (
        _onnx_runtime_backend(model, dense, model_dir, dense_dir, eval_examples, tokenizer, spec, m, threads)
        if m.get("onnx", True)
        else None
    )
    metrics, ort_metrics = _time_batch_sizes(models, ort_backend, batches, m, threads, latency_details)
    if ort_backend is not None and ort_backend.ok:  # all batch sizes or none: a failure drops them all
        metrics.update(ort_metrics)
    ds_backend = None
    if m.get("deepsparse", False):  # opt-in, in its own environment; a failure is noted there, not raised
        ds_backend = DeepSparseBackend(threads, m.get("deepsparse_python"))
        ds_backend.measure(model, dense, batches, m["warmup"], m["repeats"], m.get("min_time_s", 0.0))
        metrics.update(ds_backend.metrics())
    return metrics, latency_details, ort_backend, ds_backend


def _sparse_backend(model) -> tuple[Any, dict[str, Any]]:
    """The model on the sparse backend, to be timed, and the backend's details. Element-wise sparsity
    can only pay off on a sparse kernel; where no matrix reaches the backend's threshold it would run
    the very same dense kernels, so it is not timed (None) and its latency is the pruned model's."""
    sparse = to_sparse_backend(model)
    n_sparse = sparse_matrix_count(sparse)
    timed = n_sparse > 0
    details = {
        "backend": SPARSE_BACKEND,
        "min_sparsity": DEFAULT_MIN_SPARSITY,
        "sparse_matrices": n_sparse,
        "timed": timed,
        "note": None
        if timed
        else "no matrix reaches min_sparsity: the backend runs the dense kernels, so its latency is the pruned model's",
    }
    return (sparse if timed else None), details


def _onnx_runtime_backend(
    model, dense, model_dir: Path, dense_dir: Path, eval_examples, tokenizer, spec: TaskSpec, m: dict, threads: int
) -> OrtBackend:
    """The second backend: both models exported to ONNX (kept in their model folders) and opened in
    ONNX Runtime; a failed export or session is noted in its details, not raised."""
    sample = fixed_length_batch(eval_examples, tokenizer, spec.text_fields, 2, m["seq_len"])
    return OrtBackend(threads).prepare(model, dense, Path(model_dir), Path(dense_dir), m["seq_len"], sample)


#: a measure job's control (the dense model timed against itself, same job) must lie in this range at the largest
#: batch size; outside it that batch size is timed again, at most CONTROL_RETRIES more times, then flagged
CONTROL_RANGE = (0.9, 1.1)
CONTROL_RETRIES = 2


def _control_in_range(control: float) -> bool:
    return CONTROL_RANGE[0] <= control <= CONTROL_RANGE[1]


def _time_batch_sizes(
    models: dict[str, Any],
    ort_backend: OrtBackend | None,
    batches: dict[int, dict[str, torch.Tensor]],
    m: dict,
    threads: int,
    latency_details: dict[str, Any],
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per batch size, one batch of real evaluation sentences timed in PyTorch (every model of
    ``models``) and then in ONNX Runtime. Returns the PyTorch metrics and the ONNX Runtime ones;
    the PyTorch timings go into ``latency_details`` under ``b{batch size}``."""
    metrics: dict[str, dict] = {}
    ort_metrics: dict[str, dict] = {}
    min_time_s = m.get("min_time_s", 0.0)
    for bs, batch in batches.items():
        controls = []
        for _ in range(1 + (CONTROL_RETRIES if bs == max(batches) else 0)):
            timing = compare_latency(models, batch, threads, m["warmup"], m["repeats"], min_time_s)
            controls.append(round(timing["dense"]["median_ms"] / timing["dense_control"]["median_ms"], 4))
            if _control_in_range(controls[-1]):
                break
        timing["control_attempts"] = controls  # dense / dense again of every timing of this batch size
        timing["control_in_range"] = _control_in_range(controls[-1])
        if not timing["control_in_range"]:
            log.warning(
                "batch %d: the dense model timed against itself stayed outside %s after %d timings (%s): "
                "the record is flagged",
                bs,
                CONTROL_RANGE,
                len(controls),
                controls,
            )
        metrics.update(_pytorch_latency_metrics(bs, timing, latency_details.get("sparse_backend")))
        latency_details[f"b{bs}"] = timing
        ort = (
            ort_backend.time_batch(bs, batch, m["warmup"], m["repeats"], min_time_s)
            if ort_backend is not None
            else None
        )
        if ort is not None:
            ort_metrics.update(_ort_latency_metrics(bs, ort))
    return metrics, ort_metrics


def _pytorch_latency_metrics(bs: int, timing: dict, sparse_details: dict | None) -> dict[str, dict]:
    """Median latency of the model and the dense one at batch size ``bs``, the speed-up, and the
    sparse backend's (where the model has one; the model's own latency where it was not timed)."""
    R = records.metric
    dense_ms, model_ms = timing["dense"]["median_ms"], timing["model"]["median_ms"]
    metrics = {
        f"latency_b{bs}": R(model_ms, "ms"),
        f"dense_latency_b{bs}": R(dense_ms, "ms"),
        f"speedup_b{bs}": R(dense_ms / model_ms, "x"),
    }
    if "dense_control" in timing:
        metrics[f"control_b{bs}"] = R(dense_ms / timing["dense_control"]["median_ms"], "x")
    if sparse_details is not None:
        sparse_ms = timing["sparse_backend"]["median_ms"] if sparse_details["timed"] else model_ms
        metrics[f"sparse_backend_latency_b{bs}"] = R(sparse_ms, "ms")
        metrics[f"sparse_backend_speedup_b{bs}"] = R(dense_ms / sparse_ms, "x")
    return metrics


def _ort_latency_metrics(bs: int, ort: dict) -> dict[str, dict]:
    """Median latency of the model and the dense one in ONNX Runtime at batch size ``bs``, and the speed-up."""
    R = records.metric
    ort_dense_ms, ort_ms = ort["dense"]["median_ms"], ort["model"]["median_ms"]
    out = {
        f"ort_latency_b{bs}": R(ort_ms, "ms"),
        f"ort_dense_latency_b{bs}": R(ort_dense_ms, "ms"),
        f"ort_speedup_b{bs}": R(ort_dense_ms / ort_ms, "x"),
    }
    if "dense_control" in ort:
        out[f"ort_control_b{bs}"] = R(ort_dense_ms / ort["dense_control"]["median_ms"], "x")
    return out


def _measurement_details(
    m: dict, threads: int, latency_details: dict[str, Any], ort_backend: OrtBackend | None, start: float
) -> dict[str, Any]:
    """The record's ``details.measurement``: backends, protocol, the timings and the ONNX Runtime setup."""
    return {
        "backend": BACKEND,
        "sparse_backend": SPARSE_BACKEND if "sparse_backend" in latency_details else None,
        "seq_len": m["seq_len"],
        "batch_sizes": m["batch_sizes"],
        "threads": threads,
        "warmup": m["warmup"],
        "repeats": m["repeats"],
        "min_time_s": m.get("min_time_s", 0.0),
        "latency": latency_details,
        "onnx_runtime": ort_backend.details if ort_backend is not None else {"enabled": False},
        "wall_time_s": round(time.perf_counter() - start, 3),
    }


def _assemble_record(summary: dict, exp: dict, metrics: dict, details: dict, wall: float) -> dict[str, Any]:
    """The result record: the training summary's task, method, budget and seed with the measured
    metrics, the details, the configuration as measured and the provenance (``wall``: seconds of both jobs)."""
    return {
        "schema_version": records.SCHEMA_VERSION,
        "task": summary["task"],
        "method": summary["method"],
        "budget": float(summary["budget"]),
        "seed": int(summary["seed"]),
        "metrics": metrics,
        "details": details,
        "config": provenance.portable_config(exp),
        "provenance": provenance.collect(wall),
    }


def _make_paths_portable(details: dict, results_dir: str | None) -> None:
    """Files the record names, relative to the results folder (models) or the working directory (data)."""
    ort = details["measurement"].get("onnx_runtime") or {}
    if ort.get("dense_file"):
        ort["dense_file"] = provenance.portable_path(ort["dense_file"], results_dir)
    files = (details.get("data") or {}).get("files")
    if isinstance(files, dict):
        details["data"] = {**details["data"], "files": {k: provenance.portable_path(v) for k, v in files.items()}}


def _configured(task: str) -> dict[str, Any]:
    """The configured experiment (workflow/config.yaml), for a measure job run by hand."""
    from prunebench.config import for_task, load_config_file, resolve

    return for_task(resolve(load_config_file(), check_files=False), task)


def _eval_examples(exp: dict[str, Any], spec: TaskSpec):
    """The raw evaluation examples (the latency batches are real evaluation sentences)."""
    return load_task_data(spec, DataConfig.from_dict(task_data(exp, spec.name)), eval_only=True)["eval"]
