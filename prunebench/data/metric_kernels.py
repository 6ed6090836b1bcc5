"""Metric kernels in numpy, vectorised over resamples: Matthews, Pearson, Spearman.

One implementation shared by the task metrics (``prunebench.data.metrics``) and the statistics on
per-example predictions (``prunebench.records.record``), so a bootstrap resample recomputes exactly
the function the record's metric came from.
"""

from __future__ import annotations

import numpy as np


def matthews(tp, fp, fn, tn) -> np.ndarray:
    """Matthews correlation of a binary confusion matrix (counts; vectorised); 0 where a margin is 0.

    (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) (Matthews 1975; GLUE's CoLA metric).
    """
    tp, fp, fn, tn = (np.asarray(x, dtype=float) for x in (tp, fp, fn, tn))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1.0), 0.0)


def pearson(x, y, axis: int = -1) -> np.ndarray:
    """Pearson correlation of ``x`` and ``y`` along ``axis`` (vectorised); 0 where either is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    constant = (x.max(axis=axis) == x.min(axis=axis)) | (y.max(axis=axis) == y.min(axis=axis))
    dx, dy = x - x.mean(axis=axis, keepdims=True), y - y.mean(axis=axis, keepdims=True)
    sxy, sxx, syy = (dx * dy).sum(axis=axis), (dx * dx).sum(axis=axis), (dy * dy).sum(axis=axis)
    denom = np.sqrt(sxx * syy)
    ok = ~constant & (denom > 0)
    return np.clip(np.where(ok, sxy / np.where(ok, denom, 1.0), 0.0), -1.0, 1.0)


def average_ranks(x, axis: int = -1) -> np.ndarray:
    """Ranks 1..n along ``axis``, ties given their average rank (as ``scipy.stats.rankdata``), vectorised."""
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    n = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, order, axis=-1)
    idx = np.broadcast_to(np.arange(n), xs.shape)
    differs = xs[..., 1:] != xs[..., :-1]
    edge = np.ones(xs.shape[:-1] + (1,), dtype=bool)
    starts = np.maximum.accumulate(np.where(np.concatenate([edge, differs], axis=-1), idx, 0), axis=-1)
    ends = np.flip(
        np.minimum.accumulate(np.flip(np.where(np.concatenate([differs, edge], axis=-1), idx, n), -1), axis=-1), -1
    )
    ranks = np.empty_like(xs)
    np.put_along_axis(ranks, order, (starts + ends) / 2 + 1, axis=-1)
    return np.moveaxis(ranks, -1, axis)


def spearman(x, y, axis: int = -1) -> np.ndarray:
    """Spearman rank correlation along ``axis``: Pearson of the average ranks; 0 where either is constant."""
    return pearson(average_ranks(x, axis), average_ranks(y, axis), axis=axis)
