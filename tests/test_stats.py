"""prunebench.report.stats on constructed predictions whose answer is known: bootstrap intervals, the paired
permutation test, Holm's adjustment, intervals over seeds, and the tie rule of the ranks."""

import math
import time

import numpy as np
import pytest

from prunebench.records.record import Predictions, PredictionsError, references_sha256
from prunebench.report import stats


def _labels(correct, seed=0, method="m", refs=None) -> Predictions:
    """Binary-label predictions, right exactly where ``correct`` is True."""
    correct = np.asarray(correct, dtype=bool)
    refs = np.arange(len(correct)) % 2 if refs is None else np.asarray(refs)
    preds = np.where(correct, refs, 1 - refs)
    return Predictions(
        "sst2", method, 0.5, seed, "accuracy", len(refs), "labels", preds, refs, references_sha256(refs.tolist())
    )


def _accuracy_pattern(n: int, accuracy: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    correct = np.zeros(n, dtype=bool)
    correct[rng.permutation(n)[: round(accuracy * n)]] = True
    return correct


# --- bootstrap intervals ------------------------------------------------------------------------


def test_metric_ci_contains_the_value_and_matches_the_binomial_width():
    p = _labels(_accuracy_pattern(872, 0.85))
    ci = stats.metric_ci(p)
    assert ci.low < ci.value < ci.high and ci.value == pytest.approx(p.value())
    # the normal approximation of a proportion: 1.96 * sqrt(p(1-p)/n) ~ 0.0237, about +-2.4 points
    assert ci.half_width == pytest.approx(1.96 * math.sqrt(0.85 * 0.15 / 872), rel=0.15)


def test_metric_ci_narrows_with_more_examples():
    small = stats.metric_ci(_labels(_accuracy_pattern(100, 0.8)))
    large = stats.metric_ci(_labels(_accuracy_pattern(1600, 0.8)))
    assert large.low < large.value < large.high
    # the width shrinks as 1/sqrt(n): 16x the examples, a quarter of the width
    assert large.half_width < small.half_width / 2.5


def test_bootstrap_of_872_examples_takes_well_under_a_second():
    p, q = _labels(_accuracy_pattern(872, 0.85)), _labels(_accuracy_pattern(872, 0.8, seed=1))
    stats.metric_ci(p, n_resamples=50)  # warm-up (imports)
    start = time.perf_counter()
    stats.metric_ci(p, n_resamples=2000)
    stats.diff_ci(p, q, n_resamples=2000)
    assert time.perf_counter() - start < 1.0


def test_diff_ci_is_paired_and_exact_for_identical_models():
    a = _labels(_accuracy_pattern(400, 0.8))
    assert stats.diff_ci(a, a) == stats.Interval(0.0, 0.0, 0.0)
    b = _labels(np.ones(400, bool))  # a's errors all fixed
    ci = stats.diff_ci(b, a)
    assert ci.value == pytest.approx(0.2) and 0 < ci.low < ci.value < ci.high


def test_paired_statistics_refuse_different_examples():
    a = _labels(_accuracy_pattern(50, 0.8))
    other = _labels(_accuracy_pattern(50, 0.8), refs=np.arange(50) % 2 == 0)
    with pytest.raises(PredictionsError, match="not on the same evaluation examples"):
        stats.diff_ci(a, other)
    with pytest.raises(PredictionsError, match="not on the same evaluation examples"):
        stats.paired_pvalue([a], [other])


def test_f1_predictions_bootstrap_the_f1():
    refs = np.array([1, 1, 1, 0, 0, 0, 1, 0] * 20)
    preds = np.array([1, 1, 0, 0, 1, 0, 1, 0] * 20)
    p = Predictions("qqp", "m", 0.5, 0, "f1", len(refs), "labels", preds, refs, references_sha256(refs.tolist()))
    tp, fp, fn = 60, 20, 20
    assert p.value() == pytest.approx(2 * tp / (2 * tp + fp + fn))
    ci = stats.metric_ci(p)
    assert ci.low < p.value() < ci.high


# --- the paired permutation test and Holm --------------------------------------------------------


def test_identical_predictions_have_p_one():
    a = _labels(_accuracy_pattern(200, 0.7))
    b = _labels(_accuracy_pattern(200, 0.7), method="other")
    assert stats.paired_pvalue([a], [b]) == 1.0


def test_right_where_the_other_is_wrong_is_significant():
    # a is right on every example; b wrong on 40 of 80 (right on the rest): 40 paired disagreements, all for a
    a = _labels(np.ones(80, bool))
    b = _labels(np.arange(80) < 40)
    p = stats.paired_pvalue([a], [b], n_resamples=9999)
    assert p < 0.001  # exact value 2 / 2^40; the randomized test's floor is 1/(9999+1)


def test_exact_permutation_p_value_on_few_examples():
    # 4 examples, a right on 3 that b gets wrong, both right on one: of the 2^3 swap patterns of the 3
    # disagreements (the agreeing example swaps to itself) only all-for-a and all-for-b reach |3/4|
    a = _labels(np.ones(4, bool))
    b = _labels(np.array([True, False, False, False]))
    assert stats.paired_pvalue([a], [b]) == pytest.approx(2 / 8)


def test_seeds_are_matched_by_number():
    a = [_labels(_accuracy_pattern(60, 0.9, s), seed=s) for s in (0, 1, 2)]
    b = [_labels(_accuracy_pattern(60, 0.9, s), seed=s) for s in (2, 1, 0)]  # same models, other order
    assert stats.paired_pvalue(a, b) == 1.0
    with pytest.raises(ValueError, match="no seed in common"):
        stats.paired_pvalue(a[:1], b[:1])  # seed 0 vs seed 2


def test_holm_matches_a_hand_computed_example():
    # sorted 0.01, 0.03, 0.04 (m = 3): 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert stats.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert stats.holm({"x": 0.5, "y": 0.6}) == {"x": 1.0, "y": 1.0}  # capped at 1
    with pytest.raises(ValueError, match="1.5"):
        stats.holm({"bad": 1.5})


# --- intervals over seeds -------------------------------------------------------------------------


def test_seeds_ci_is_the_student_t_interval():
    ci = stats.seeds_ci([0.80, 0.82, 0.84])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n)
    assert (ci.value, ci.low, ci.high) == pytest.approx((0.82, 0.82 - half, 0.82 + half))
    one = stats.seeds_ci([0.8])
    assert one.value == 0.8 and one.low is None and one.half_width is None


def test_seed_example_bootstrap_adds_the_seed_noise():
    seeds = [_labels(_accuracy_pattern(400, acc, s), seed=s) for s, acc in enumerate((0.70, 0.80, 0.90))]
    both = stats.seed_example_bootstrap(seeds)
    assert both.value == pytest.approx(0.8) and both.low < 0.8 < both.high
    examples_only = stats.metric_ci(seeds[1])
    assert both.half_width > 1.5 * examples_only.half_width  # seeds 10 points apart widen it


# --- ranks with ties ------------------------------------------------------------------------------


def test_identical_entries_tie_at_rank_one():
    pattern = _accuracy_pattern(300, 0.8)
    ranks = stats.tied_ranks({"a": [_labels(pattern)], "b": [_labels(pattern, method="b")]})
    assert ranks["a"].label == ranks["b"].label == "1="
    assert ranks["a"].rank == ranks["b"].rank == 1 and ranks["a"].group == ranks["b"].group
    assert ranks["a"].p_vs_leader is None and ranks["b"].p_vs_leader == 1.0


def test_clearly_better_entry_does_not_tie_and_ranks_are_competition_ranks():
    best = np.ones(200, bool)
    mid = np.arange(200) < 100  # wrong on 100 examples the best gets right
    ranks = stats.tied_ranks({"best": [_labels(best)], "mid": [_labels(mid)], "mid_copy": [_labels(mid)]})
    assert ranks["best"].label == "1" and ranks["best"].group == 1
    # the two copies tie with each other, after the one entry of group 1: rank 2 shared
    assert ranks["mid"].label == ranks["mid_copy"].label == "2=" and ranks["mid"].group == 2
    ranks = stats.tied_ranks({"best": [_labels(best)], "best2": [_labels(best)], "mid": [_labels(mid)]})
    assert ranks["best"].label == ranks["best2"].label == "1=" and ranks["mid"].label == "3"


# --- exact tests, contiguous tie groups on common seeds ---------------------------------------------


def test_exact_test_has_no_resampling_floor_80_discordant_pairs():
    """80 paired disagreements all for a: McNemar's exact p = 2 / 2^80, far below any resampling floor."""
    a = _labels(np.ones(100, bool))
    b = _labels(np.arange(100) < 20)
    p = stats.paired_pvalue([a], [b], n_resamples=2000)
    assert p < 0.001 and p == pytest.approx(2 / 2**80, rel=1e-9)


def test_exact_sign_flip_matches_enumeration_for_several_seeds():
    """Three seeds: per-example differences summed over seeds in -3..3; the convolution equals brute force."""
    import itertools

    rng = np.random.default_rng(1)
    a = [_labels(rng.random(12) < 0.8, seed=s) for s in range(3)]
    b = [_labels(rng.random(12) < 0.4, seed=s, method="b") for s in range(3)]
    d = sum(
        np.asarray(x.predictions == x.references, int) - np.asarray(y.predictions == y.references, int)
        for x, y in zip(a, b)
    )
    observed = abs(d.sum())
    brute = np.mean([abs((np.array(signs) * d).sum()) >= observed for signs in itertools.product((1, -1), repeat=12)])
    assert stats.exact_sign_flip_pvalue(d) == pytest.approx(brute)
    assert stats.paired_pvalue(a, b) == pytest.approx(brute)


def test_permutations_reach_the_smallest_holm_threshold():
    for comparisons in (1, 23, 60):
        n = stats.permutations_for(comparisons)
        assert 1 / (n + 1) < 0.05 / comparisons / 5


def test_one_seed_leader_groups_are_contiguous_and_use_common_seeds():
    """A one-seed leader above three-seed entries: every test uses seed 0 only (the seed both have), and the
    group ends at the first entry significantly worse than the leader, even if a lower one is not."""
    n = 200
    leader = [_labels(np.ones(n, bool), seed=0, method="leader")]
    close = [_labels(np.arange(n) >= 2, seed=0)] + [_labels(np.ones(n, bool), seed=s) for s in (1, 2)]
    worse = [_labels(np.arange(n) >= 60, seed=0)] + [_labels(np.arange(n) >= 6, seed=s) for s in (1, 2)]
    # as good as the leader on seed 0 (p = 1 there), poor on seeds 1 and 2: the lowest mean
    uneven = [_labels(np.ones(n, bool), seed=0)] + [_labels(np.arange(n) % 2 == 0, seed=s) for s in (1, 2)]
    ranks = stats.tied_ranks({"leader": leader, "close": close, "worse": worse, "uneven": uneven})
    assert ranks["leader"].label == ranks["close"].label == "1="
    assert ranks["close"].seeds_vs_leader == 1 and ranks["leader"].seeds_vs_leader is None
    assert ranks["worse"].rank == 3 and ranks["uneven"].rank >= ranks["worse"].rank  # not back in group 1
    order = sorted(
        ranks, key=lambda k: -stats.mean_value({"leader": leader, "close": close, "worse": worse, "uneven": uneven}[k])
    )
    assert [ranks[k].rank for k in order] == sorted(ranks[k].rank for k in order)  # monotone in the means


def test_entry_above_its_budget_is_never_compared_with_random_or_dense():
    """head rows that stop at their floor (0.7 kept at budget 0.1) are far better than random at 0.1, but they did
    not meet the budget: no '> random' and no '< dense' verdict for them; an entry that met it gets both."""
    from prunebench.report.collect import Row
    from prunebench.report.uncertainty import budget_stats

    n = 300

    dense = [_labels(np.ones(n, bool), method="dense")]
    entries = {
        "random": _labels(np.arange(n) < 150, method="random"),
        "head_l0": _labels(np.arange(n) >= 5, method="head_l0"),  # kept 0.7: above the budget
        "magnitude": _labels(np.arange(n) >= 5, method="magnitude"),  # met the budget, same predictions
    }
    group = [Row("sst2", m, 0.1, [0], "accuracy") for m in entries]
    predictions = {("sst2", m, 0.1, 0): p for m, p in entries.items()}
    met = {r.key: r.method != "head_l0" for r in group}
    out = budget_stats(group, met, predictions, dense)
    head, mag = out[("sst2", "head_l0", 0.1)], out[("sst2", "magnitude", 0.1)]
    assert head.better_than_random is None and head.p_vs_random is None and head.worse_than_dense is None
    assert mag.better_than_random is True and mag.p_vs_random < 0.001
    assert head.rank is None and mag.rank is not None  # ranked: the entries that met the budget
