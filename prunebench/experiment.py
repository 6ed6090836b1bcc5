"""One benchmark job, start to finish: load, fine-tune (with a method), measure, save, record.

``run_dense`` fine-tunes the pretrained model once per (task, seed) and records it;
``run_method`` prunes with one method at one budget and seed, starting from the dense
checkpoint (or the pretrained weights, when the method's paper prunes during fine-tuning),
under the same fine-tuning budget. Both go through ``measure_and_record``, the one
measurement path, and write one record per run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import methods
from prunebench import budget as budget_lib
from prunebench import checkpoints, provenance, qa, records
from prunebench.config import task_data
from prunebench.data import DataConfig, load_task_data
from prunebench.measure.accuracy import task_metrics
from prunebench.measure.disk import bytes_on_disk
from prunebench.measure.flops import flops_per_example
from prunebench.measure.latency import compare_latency, fixed_length_batch
from prunebench.measure.memory import peak_inference_memory_mib
from prunebench.measure.sparse_backend import BACKEND as SPARSE_BACKEND
from prunebench.measure.sparse_backend import DEFAULT_MIN_SPARSITY, sparse_matrix_count, to_sparse_backend
from prunebench.modeling import describe_model, load_pretrained, load_tokenizer
from prunebench.tasks import TaskSpec, get_task
from prunebench.trainer import FinetuneBudget, tokenize, train

log = logging.getLogger("prunebench.experiment")
BACKEND = "torch-dense-cpu"


@dataclass
class Context:
    """What every job of an experiment shares: config, task, tokenizer, tokenized data."""

    exp: dict[str, Any]
    spec: TaskSpec
    tokenizer: Any
    train: Any
    eval: Any  # tokenized evaluation set (QA: context windows)
    eval_examples: Any  # the raw evaluation examples (texts, labels or gold answers)
    budget: FinetuneBudget
    threads: int


def load_context(exp: dict[str, Any], task: str, threads: int | None = None) -> Context:
    threads = threads or exp["threads"]
    torch.set_num_threads(threads)
    spec = get_task(task)
    tokenizer = load_tokenizer(exp["model"])
    data = load_task_data(spec, DataConfig.from_dict(task_data(exp, task)))
    ft = FinetuneBudget.from_dict(exp["finetune"])
    if spec.kind == "extractive_qa":
        train_ds = qa.train_features(data["train"], tokenizer, ft.max_seq_len, ft.doc_stride)
        eval_ds = qa.eval_features(data["eval"], tokenizer, ft.max_seq_len, ft.doc_stride)
    else:
        train_ds = tokenize(data["train"], tokenizer, spec.text_fields, ft.max_seq_len)
        eval_ds = tokenize(data["eval"], tokenizer, spec.text_fields, ft.max_seq_len)
    return Context(exp, spec, tokenizer, train_ds, eval_ds, data["eval"], ft, threads)


def run_dense(ctx: Context, seed: int, model_dir: Path, record_path: Path) -> dict:
    start = time.perf_counter()
    model = load_pretrained(ctx.exp["model"], ctx.spec.num_labels, seed, ctx.spec.label_names, ctx.spec.kind)
    result = train(model, ctx.train, ctx.tokenizer, ctx.budget, None, seed)
    checkpoints.save_model(model, ctx.tokenizer, model_dir)
    return measure_and_record(ctx, model, model, model_dir, "dense", 1.0, seed, result, None, start, record_path)


def run_method(ctx: Context, method_name: str, target: float, seed: int, dense_dir: Path, model_dir: Path,
               record_path: Path, reference_record: Path | None = None) -> dict:
    start = time.perf_counter()
    settings = ctx.exp.get("method_settings", {}).get(method_name, {})
    method = methods.build(method_name, target, settings)
    if method.needs_reference:
        if reference_record is None:
            raise records.RecordError(f"method {method_name!r} needs a reference record (--reference-record)")
        method.use_reference(records.read_record(reference_record))
    dense = checkpoints.load_model(dense_dir)
    if method.starts_from == "dense":
        model = checkpoints.load_model(dense_dir)
    else:
        model = load_pretrained(ctx.exp["model"], ctx.spec.num_labels, seed, ctx.spec.label_names, ctx.spec.kind)
    result = train(model, ctx.train, ctx.tokenizer, ctx.budget, method, seed)
    model = method.finalize(model)
    checkpoints.save_model(model, ctx.tokenizer, model_dir)
    return measure_and_record(ctx, model, dense, model_dir, method_name, target, seed, result, method, start,
                              record_path)


def measure_and_record(ctx: Context, model, dense, model_dir: Path, method_name: str, target: float, seed: int,
                       result, method, start: float, record_path: Path) -> dict:
    """The one measurement path: every number of a record is computed here."""
    m = ctx.exp["measure"]
    R = records.metric
    metrics: dict[str, dict] = {}
    for name, value in task_metrics(model, ctx.eval, ctx.tokenizer, ctx.spec, ctx.budget.eval_batch_size,
                                    ctx.eval_examples).items():
        metrics[name] = R(value, "fraction")
    count = budget_lib.count_encoder_weights(model)
    metrics["encoder_remaining"] = R(count.remaining_fraction, "fraction")
    metrics["encoder_nonzero_weights"] = R(count.nonzero, "count")
    metrics["encoder_stored_fraction"] = R(count.stored_fraction, "fraction")
    flops, dense_flops = flops_per_example(model, m["seq_len"]), flops_per_example(dense, m["seq_len"])
    metrics["gflops_per_example"] = R(flops["sparse"] / 1e9, "GFLOP")
    metrics["gflops_per_example_dense_kernels"] = R(flops["dense_kernels"] / 1e9, "GFLOP")
    metrics["theoretical_speedup"] = R(dense_flops["dense_kernels"] / flops["sparse"], "x")
    metrics["theoretical_speedup_dense_kernels"] = R(dense_flops["dense_kernels"] / flops["dense_kernels"], "x")
    disk = bytes_on_disk(model_dir)
    metrics["disk_bytes_dense_format"] = R(disk["dense"], "bytes")
    metrics["disk_bytes_sparse_format"] = R(disk["sparse"], "bytes")
    if m.get("memory", True):
        metrics["peak_inference_memory"] = R(
            peak_inference_memory_mib(str(model_dir), max(m["batch_sizes"]), m["seq_len"], ctx.threads), "MiB")
    latency_details = {}
    models = {"model": model, "dense": dense}
    if method is not None and method.granularity == "element":
        # element-wise sparsity can only pay off on a sparse kernel: time that backend too
        models["sparse_backend"] = to_sparse_backend(model)
        latency_details["sparse_backend"] = {"backend": SPARSE_BACKEND, "min_sparsity": DEFAULT_MIN_SPARSITY,
                                             "sparse_matrices": sparse_matrix_count(models["sparse_backend"])}
    for bs in m["batch_sizes"]:
        batch = fixed_length_batch(ctx.eval_examples, ctx.tokenizer, ctx.spec.text_fields, bs, m["seq_len"])
        timing = compare_latency(models, batch, ctx.threads, m["warmup"], m["repeats"])
        dense_ms = timing["dense"]["median_ms"]
        metrics[f"latency_b{bs}"] = R(timing["model"]["median_ms"], "ms")
        metrics[f"dense_latency_b{bs}"] = R(dense_ms, "ms")
        metrics[f"speedup_b{bs}"] = R(dense_ms / timing["model"]["median_ms"], "x")
        if "sparse_backend" in timing:
            metrics[f"sparse_backend_latency_b{bs}"] = R(timing["sparse_backend"]["median_ms"], "ms")
            metrics[f"sparse_backend_speedup_b{bs}"] = R(dense_ms / timing["sparse_backend"]["median_ms"], "x")
        latency_details[f"b{bs}"] = timing
    metrics["train_wall_time"] = R(result.wall_time_s, "s")
    record = {
        "schema_version": records.SCHEMA_VERSION,
        "task": ctx.spec.name,
        "method": method_name,
        "budget": float(target),
        "seed": int(seed),
        "metrics": metrics,
        "details": {
            "method": method.describe() if method is not None else {"name": "dense", "paper": "dense fine-tuned baseline"},
            "model": describe_model(ctx.exp["model"]),
            "model_dir": str(model_dir),
            "per_matrix_remaining": budget_lib.per_matrix_remaining(model),
            "measurement": {"backend": BACKEND, "sparse_backend": SPARSE_BACKEND if "sparse_backend" in models else None, "seq_len": m["seq_len"], "batch_sizes": m["batch_sizes"],
                            "threads": ctx.threads, "warmup": m["warmup"], "repeats": m["repeats"],
                            "latency": latency_details},
            "training": {"steps": result.steps, "loss_curve": result.loss_curve,
                         "eval_examples": len(ctx.eval_examples), "train_features": len(ctx.train)},
        },
        "config": ctx.exp,
        "provenance": provenance.collect(time.perf_counter() - start),
    }
    records.write_record(record, record_path)
    log.info("%s budget %s seed %s: %s", method_name, target, seed,
             {k: v["value"] for k, v in metrics.items() if k in ("accuracy", "encoder_remaining")})
    return record
