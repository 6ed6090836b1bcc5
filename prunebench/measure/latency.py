"""Inference latency and speed-up over the dense model, measured in the same job.

Inputs are real evaluation sentences, padded or truncated to a fixed sequence length, at
each configured batch size. After ``warmup`` untimed passes, the models compared (the
pruned model, the dense model, and the pruned model on the sparse backend) are timed in
turn within every round (so drift in machine load hits all alike) with a fixed thread
count, for at least ``repeats`` rounds and at least ``min_time_s`` seconds (so a short pass,
e.g. batch 1 in ~10 ms, gets many samples and a stable median); the record keeps the
median, the inter-quartile range and every sample.

``time_in_turn`` is that protocol for any callables; ``compare_latency`` applies it to PyTorch
modules and ``prunebench.measure.onnx_runtime.compare_ort_latency`` to ONNX Runtime sessions,
so both backends are timed the same way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def fixed_length_batch(dataset, tokenizer, text_fields, batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
    """The first ``batch_size`` evaluation examples, padded/truncated to ``seq_len`` tokens."""
    rows = dataset.select(range(min(batch_size, len(dataset))))
    texts = [rows[f] for f in text_fields]
    while len(texts[0]) < batch_size:  # a tiny eval set: repeat it
        texts = [t + t for t in texts]
    texts = [t[:batch_size] for t in texts]
    return dict(tokenizer(*texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"))


@torch.inference_mode()
def time_once(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    model(**batch)
    return time.perf_counter() - start


def summarize(samples: list[float]) -> dict:
    ms = sorted(1000.0 * s for s in samples)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "iqr_ms": q[2] - q[0], "samples_ms": ms}


def time_in_turn(
    runners: dict[str, Callable[[], Any]], warmup: int, repeats: int, min_time_s: float = 0.0, max_rounds: int = 200
) -> dict[str, dict]:
    """The timing protocol: ``warmup`` untimed rounds, then rounds in which every runner is
    called once in turn, for at least ``repeats`` rounds and at least ``min_time_s`` seconds
    (at most ``max_rounds`` rounds beyond ``repeats``); ``summarize`` of each runner's samples."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    start, rounds = time.perf_counter(), 0
    while rounds < repeats or (time.perf_counter() - start < min_time_s and rounds < max_rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: summarize(s) for name, s in samples.items()}


def compare_latency(
    models: dict[str, torch.nn.Module],
    batch: dict[str, torch.Tensor],
    threads: int,
    warmup: int,
    repeats: int,
    min_time_s: float = 0.0,
    max_rounds: int = 200,
) -> dict[str, dict]:
    """Median latency of each named model on ``batch``, timed in turn within every round."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for m in models.values():
            m.eval()
        with torch.inference_mode():
            return time_in_turn(
                {name: (lambda m=m: m(**batch)) for name, m in models.items()}, warmup, repeats, min_time_s, max_rounds
            )
    finally:
        torch.set_num_threads(previous)
