"""Uncertainty and ties from per-example predictions (the ``*.predictions.json`` beside each record).

Every number here is computed from the models' predictions on the same evaluation examples.
A resample (or a permutation) recomputes the task's *metric* from its resampled examples: the
metric is a function of the per-example components (``Predictions.components``, aggregated by
``prunebench.records.record.aggregate_metric``), so accuracy and SQuAD scores are means, but F1 and
Matthews (MRPC, QQP, CoLA) come from the resample's confusion counts and Pearson and Spearman
(STS-B, a regression task) from its (prediction, reference) pairs -- never a mean of
per-example correctness:

- ``metric_ci``: bootstrap interval of a model's task metric, resampling examples
  (``scipy.stats.bootstrap``; percentile method by default, BCa on request; Efron & Tibshirani 1993).
- ``diff_ci``: paired bootstrap interval of metric(a) - metric(b): the same resampled examples
  score both models, so the example-difficulty noise they share cancels.
- ``paired_pvalue``: **paired permutation test** on examples (``scipy.stats.permutation_test``,
  ``permutation_type="samples"``). Under the null hypothesis that the two models are
  exchangeable, swapping a's and b's predictions of an example (in every seed at once) leaves
  the distribution of the statistic unchanged; the statistic is the mean over matched seeds of
  metric(a) - metric(b), the test two-sided. Exact (all 2^n swaps) when 2^n <= n_resamples.
  For accuracy this is the sign-flip form of McNemar's exact test of paired disagreements.
- ``holm``: Holm's (1979) step-down adjustment for a family of comparisons (controls the
  family-wise error rate without assuming independence). When the metric is a mean of integer
  per-example scores (accuracy, SQuAD exact match) the permutation distribution is computed exactly
  (``exact_sign_flip_pvalue``: McNemar's exact test for one seed, its sign-flip generalisation for
  several), so p has no floor of 1/(resamples + 1) and any Holm threshold can be reached; for the other
  metrics ``permutations_for`` sizes the resamples to the number of comparisons.
- ``seeds_ci``: Student-t interval of the mean over seeds; ``seed_example_bootstrap``: the
  two-level bootstrap (resample seeds, then examples within each drawn seed).
- ``tied_ranks``: ranks that respect noise. Entries sorted by mean metric; the best remaining
  entry leads a group, and the entries after it in that order join it while their Holm-adjusted
  p-value (over the comparisons with that leader, each on the seeds both entries have) is >= alpha:
  the group ends at the first entry significantly worse than its leader, so groups are contiguous in
  the mean order and a rank never sits below a lower mean's. Rank = 1 + entries in earlier groups
  (competition ranking); the label gets "=" when its group has more than one entry.

Every statistic is vectorised over resamples (numpy fancy indexing inside scipy's batched
calls): a 2,000-resample bootstrap of 872 examples takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from prunebench.records.record import Predictions, PredictionsError, predictions_path, read_predictions

__all__ = [
    "Interval",
    "RankInfo",
    "Predictions",
    "PredictionsError",
    "predictions_path",
    "read_predictions",
    "metric_ci",
    "diff_ci",
    "paired_pvalue",
    "holm",
    "seeds_ci",
    "seed_example_bootstrap",
    "mean_value",
    "tied_ranks",
    "exact_sign_flip_pvalue",
    "permutations_for",
    "seeds_in_common",
]

#: resampled elements held in memory at once (resamples x examples), bounds the batch size
_MAX_BATCH_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval (``low``/``high`` None when undefined, e.g. one seed)."""

    value: float
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


@dataclass(frozen=True)
class RankInfo:
    """An entry's place: competition rank, its label ("1", "1=", "3="), its group, and the
    Holm-adjusted paired p-value against its group's leader (None for the leader)."""

    rank: int
    label: str
    group: int
    p_vs_leader: float | None
    #: seeds the test against the leader used (those both have); None for the leader
    seeds_vs_leader: int | None = None


def _name(p: Predictions) -> str:
    return str(p.path) if p.path is not None else f"{p.task}/{p.method}/{p.budget}/seed{p.seed}"


def _check_paired(a: Predictions, b: Predictions) -> None:
    """Paired statistics need the same examples, in the same order, scored by the same metric."""
    if a.n != b.n or a.references_sha256 != b.references_sha256:
        raise PredictionsError(
            f"predictions {_name(a)} and {_name(b)} are not on the same evaluation examples "
            f"(n {a.n} vs {b.n}, or their references differ)"
        )
    if (a.kind, a.metric) != (b.kind, b.metric):
        raise PredictionsError(
            f"predictions {_name(a)} ({a.kind}, {a.metric}) and {_name(b)} ({b.kind}, {b.metric}) "
            "measure different metrics"
        )


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), not {confidence!r}")


def _batch(n: int) -> int:
    return max(1, _MAX_BATCH_ELEMENTS // max(n, 1))


def _interval(value: float, res) -> Interval:
    ci = res.confidence_interval
    return Interval(value, float(ci.low), float(ci.high))


def metric_ci(
    p: Predictions, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0, method: str = "percentile"
) -> Interval:
    """Bootstrap interval of ``p``'s metric, resampling evaluation examples (``scipy.stats.bootstrap``)."""
    _check_confidence(confidence)
    comps, value = p.components(), p.value()
    if np.all(comps == comps[:, :1]):  # every example alike: every resample gives the same value
        return Interval(value, value, value)
    res = stats.bootstrap(
        tuple(comps),
        lambda *c, axis=-1: p.aggregate(np.stack(c), axis),
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        batch=_batch(p.n),
        confidence_level=confidence,
        method=method,
        rng=np.random.default_rng(seed),
    )
    return _interval(value, res)


def diff_ci(
    a: Predictions,
    b: Predictions,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> Interval:
    """Paired bootstrap interval of metric(a) - metric(b): both scored on the same resampled examples."""
    _check_confidence(confidence)
    _check_paired(a, b)
    ca, cb = a.components(), b.components()
    value = a.value() - b.value()
    both = np.concatenate([ca, cb])
    if np.all(both == both[:, :1]):
        return Interval(value, value, value)
    k = len(ca)

    def statistic(*c, axis=-1):
        return a.aggregate(np.stack(c[:k]), axis) - b.aggregate(np.stack(c[k:]), axis)

    res = stats.bootstrap(
        tuple(both),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        batch=_batch(a.n),
        confidence_level=confidence,
        method=method,
        rng=np.random.default_rng(seed),
    )
    return _interval(value, res)


def _match_seeds(a: list[Predictions], b: list[Predictions]) -> list[tuple[Predictions, Predictions]]:
    """Pairs of (a, b) predictions with the same seed number, in seed order."""
    by_seed_a, by_seed_b = {p.seed: p for p in a}, {p.seed: p for p in b}
    for side, ps, by_seed in (("a", a, by_seed_a), ("b", b, by_seed_b)):
        if len(by_seed) != len(ps):
            raise ValueError(f"predictions of {side} repeat a seed: {sorted(p.seed for p in ps)}")
    common = sorted(set(by_seed_a) & set(by_seed_b))
    if not common:
        raise ValueError(f"no seed in common: a has seeds {sorted(by_seed_a)}, b has {sorted(by_seed_b)}")
    pairs = [(by_seed_a[s], by_seed_b[s]) for s in common]
    for pa, pb in pairs:
        _check_paired(pa, pb)
        _check_paired(pairs[0][0], pa)  # every seed on the same examples: one swap applies to all
    return pairs


def paired_pvalue(a: list[Predictions], b: list[Predictions], n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided paired permutation test of mean-over-seeds metric(a) - metric(b) (see the module docstring).

    Seeds are matched by seed number (those both sides have); each example's predictions of a
    and b are swapped, or not, in every seed at once.
    """
    pairs = _match_seeds(list(a), list(b))
    n, aggregate = pairs[0][0].n, pairs[0][0].aggregate
    # table[s, j, i]: component j of example i in seed s; i < n: a's, i >= n: b's
    table = np.stack([np.concatenate([pa.components(), pb.components()], axis=-1) for pa, pb in pairs])
    if np.array_equal(table[..., :n], table[..., n:]):
        return 1.0  # identical predictions: every swap leaves the statistic at 0
    if _integer_mean(pairs[0][0], table):
        # the statistic is sum_i d_i / (seeds * n), d_i = sum over seeds of a's minus b's score of example i
        return exact_sign_flip_pvalue((table[:, 0, :n] - table[:, 0, n:]).sum(axis=0))

    def statistic(x, y, axis=-1):
        va = aggregate(np.moveaxis(table[:, :, x], 1, 0), -1)  # (seeds, ...resamples)
        vb = aggregate(np.moveaxis(table[:, :, y], 1, 0), -1)
        return (va - vb).mean(axis=0)

    res = stats.permutation_test(
        (np.arange(n), np.arange(n, 2 * n)),
        statistic,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        batch=_batch(n * len(pairs) * table.shape[1]),
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, res.pvalue))


def _integer_mean(p: Predictions, table: np.ndarray) -> bool:
    """Whether the metric is the mean of one integer-valued per-example score (accuracy, exact match)."""
    if table.shape[1] != 1 or not np.array_equal(table, np.round(table)):
        return False
    probe = table[0, :, : p.n]
    return bool(np.isclose(float(p.aggregate(probe)), float(probe[0].mean())))


def exact_sign_flip_pvalue(d: np.ndarray) -> float:
    """Exact two-sided p of the paired sign-flip test of ``sum(d)`` for integer per-example differences ``d``.

    Under the null every nonzero ``d_i`` is equally likely ``+d_i`` or ``-d_i``, independently; the null
    distribution of the sum is the convolution, over the distinct magnitudes v (count c), of
    ``v * (2 Binomial(c, 1/2) - c)``. With one seed (d in {-1, 0, 1}) this is McNemar's exact test on the
    discordant pairs. p = P(|T| >= |observed|), no resampling floor.
    """
    d = np.asarray(d).astype(np.int64).ravel()
    nonzero = np.abs(d[d != 0])
    if nonzero.size == 0:
        return 1.0
    observed = abs(int(d.sum()))
    dist = np.array([1.0])  # probabilities of the sums -offset, ..., +offset
    offset = 0
    for v, c in zip(*np.unique(nonzero, return_counts=True)):
        v, c = int(v), int(c)
        part = np.zeros(2 * v * c + 1)
        part[:: 2 * v] = stats.binom.pmf(np.arange(c + 1), c, 0.5)  # sums -v*c, -v*c + 2v, ..., +v*c
        dist = np.convolve(dist, part)
        offset += v * c
    sums = np.arange(-offset, offset + 1)
    return float(min(1.0, dist[np.abs(sums) >= observed].sum()))


def permutations_for(comparisons: int, alpha: float = 0.05, minimum: int = 2000) -> int:
    """Permutations of a resampled test so that its smallest p, 1 / (resamples + 1), is below the smallest
    Holm threshold of ``comparisons`` tests, alpha / comparisons, by a factor of 10."""
    return max(minimum, int(np.ceil(10 * max(1, comparisons) / alpha)))


def seeds_in_common(a: list[Predictions], b: list[Predictions]) -> int:
    """How many seed numbers both entries have: the seeds a paired test of the two uses."""
    return len({p.seed for p in a} & {p.seed for p in b})


def holm(pvalues: dict[Hashable, float]) -> dict[Hashable, float]:
    """Holm (1979) step-down adjusted p-values, same keys: the i-th smallest of m is multiplied by
    (m - i + 1), made monotone, capped at 1."""
    bad = {k: p for k, p in pvalues.items() if not 0 <= p <= 1}
    if bad:
        raise ValueError(f"p-values must lie in [0, 1]: {bad}")
    keys = sorted(pvalues, key=lambda k: pvalues[k])
    m = len(keys)
    raw = np.array([pvalues[k] for k in keys], dtype=float)
    adjusted = np.minimum(1.0, np.maximum.accumulate(raw * (m - np.arange(m))))
    return {k: float(v) for k, v in zip(keys, adjusted)}


def seeds_ci(values: list[float], confidence: float = 0.95) -> Interval:
    """Mean over seeds with its Student-t interval; no interval (None) for a single seed."""
    _check_confidence(confidence)
    if not len(values):
        raise ValueError("seeds_ci needs at least one value")
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) == 1:
        return Interval(mean, None, None)
    sem = float(x.std(ddof=1) / np.sqrt(len(x)))
    if sem == 0:
        return Interval(mean, mean, mean)
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high))


def mean_value(ps: list[Predictions]) -> float:
    """Mean over seeds of the metric."""
    if not ps:
        raise ValueError("no predictions")
    return float(np.mean([p.value() for p in ps]))


def seed_example_bootstrap(
    ps: list[Predictions], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Interval:
    """Two-level bootstrap of the mean over seeds: draw seeds with replacement, then examples with
    replacement within each drawn seed; percentile interval. Captures seed and example noise."""
    _check_confidence(confidence)
    if not ps:
        raise ValueError("seed_example_bootstrap needs at least one seed's predictions")
    for p in ps[1:]:
        _check_paired(ps[0], p)
    comps = np.stack([p.components() for p in ps])  # (seeds, k, n)
    s, n, aggregate = len(ps), ps[0].n, ps[0].aggregate
    rng = np.random.default_rng(seed)
    values, chunk = [], max(1, _batch(n * s))
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        seeds = rng.integers(0, s, size=(r, s))
        examples = rng.integers(0, n, size=(r, s, n))
        drawn = comps[seeds[..., None], :, examples]  # (r, s, n, k)
        values.append(aggregate(np.moveaxis(drawn, -1, 0), -1).mean(axis=-1))
    boot = np.concatenate(values)
    low, high = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(mean_value(ps), float(low), float(high))


def tied_ranks(
    entries: dict[Hashable, list[Predictions]], alpha: float = 0.05, n_resamples: int = 9999, seed: int = 0
) -> dict[Hashable, RankInfo]:
    """Ranks with ties where the paired test cannot tell an entry from its group's leader (module docstring).

    Higher metric values are better (accuracy, F1, exact match, Matthews, Pearson, Spearman).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), not {alpha!r}")
    empty = [k for k, ps in entries.items() if not ps]
    if empty:
        raise ValueError(f"entries without predictions: {empty}")
    means = {k: mean_value(ps) for k, ps in entries.items()}
    remaining = sorted(entries, key=lambda k: (-means[k], str(k)))
    ranks: dict[Hashable, RankInfo] = {}
    group, placed = 0, 0
    while remaining:
        group += 1
        leader, others = remaining[0], remaining[1:]
        adjusted = holm({k: paired_pvalue(entries[leader], entries[k], n_resamples, seed) for k in others})
        members = [leader]
        for k in others:  # contiguous: the group ends at the first entry significantly worse than its leader
            if adjusted[k] < alpha:
                break
            members.append(k)
        rank = placed + 1
        label = f"{rank}=" if len(members) > 1 else str(rank)
        for k in members:
            common = None if k == leader else seeds_in_common(entries[leader], entries[k])
            ranks[k] = RankInfo(rank, label, group, adjusted.get(k), common)
        placed += len(members)
        remaining = [k for k in remaining if k not in members]
    return ranks
