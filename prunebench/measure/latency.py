"""Inference latency and speed-up over the dense model, measured in the same job.

Inputs are real evaluation sentences, padded or truncated to a fixed sequence length, at
each configured batch size. After ``warmup`` untimed passes, the pruned and the dense
model are timed alternately ``repeats`` times each (so drift in machine load hits both
alike) with a fixed thread count; the record keeps the median, the inter-quartile range and
every sample. Backend: dense PyTorch kernels on the CPU (``torch-dense``).
"""

from __future__ import annotations

import statistics
import time

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
def _time_once(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    model(**batch)
    return time.perf_counter() - start


def _summary(samples: list[float]) -> dict:
    ms = sorted(1000.0 * s for s in samples)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "iqr_ms": q[2] - q[0], "samples_ms": ms}


def compare_latency(model, dense_model, batch: dict[str, torch.Tensor], threads: int, warmup: int,
                    repeats: int) -> dict[str, dict]:
    """Median latency of ``model`` and ``dense_model`` on ``batch``, timed alternately."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.eval()
        dense_model.eval()
        for _ in range(warmup):
            _time_once(model, batch)
            _time_once(dense_model, batch)
        pruned_s, dense_s = [], []
        for _ in range(repeats):
            pruned_s.append(_time_once(model, batch))
            dense_s.append(_time_once(dense_model, batch))
    finally:
        torch.set_num_threads(previous)
    return {"model": _summary(pruned_s), "dense": _summary(dense_s)}
