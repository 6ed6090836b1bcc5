"""Uncertainty, tied ranks and significance of every leaderboard entry.

Everything here comes from the per-example predictions saved beside each record
(``seed{N}.predictions.json``, read and checked against its record by ``prunebench.report.stats``), and
works for every task kind: classification (accuracy, F1, Matthews), regression (STS-B: Pearson,
Spearman) and extractive QA (exact match, F1); every resample recomputes the task's primary
metric from the resampled (prediction, reference) pairs (``prunebench.report.stats``):

- **score interval (95%)**: one seed -- percentile bootstrap over the evaluation examples
  (``stats.metric_ci``); several seeds -- mean and t interval over the seeds (``stats.seeds_ci``),
  plus the seed-and-example bootstrap (``stats.seed_example_bootstrap``: seeds resampled, then
  examples within each);
- **difference to the dense model of the same seed(s)**: one seed -- paired bootstrap over the
  examples (``stats.diff_ci``); several seeds -- mean over the seeds of the per-seed difference
  with a t interval over the seeds;
- **tied ranks** among the entries of a (task, budget) that met the budget (``stats.tied_ranks``):
  groups contiguous in the order of the means, each test on the seeds both entries have (the count is
  kept: ``seeds_vs_leader``);
- **better than random / worse than dense**, only for entries that met the budget (an entry that kept
  more weights than the budget is not compared with random pruning at that budget): paired permutation
  test on the examples (``stats.paired_pvalue``: an example's predictions swapped between the two
  models in every seed at once; exact for accuracy and exact match), two-sided, Holm correction over the
  entries of the budget, alpha 0.05; the verdict also needs the mean difference to point that way.
  Resampled tests (F1, Matthews, Pearson, Spearman, SQuAD F1) get ``stats.permutations_for`` the
  budget's comparisons, so their smallest p is below every Holm threshold the table needs.

An entry whose records do not all have a predictions file (records written before predictions
were saved) keeps ``None`` everywhere (shown as "n/a"), and a warning names the files; the
ranks of a budget with such an entry follow the plain order of the means (the former rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prunebench.records.record import RecordError
from prunebench.report.collect import Row

ALPHA = 0.05
CONFIDENCE = 0.95
N_RESAMPLES = 2000  # bootstrap resamples
N_PERMUTATIONS = 2000  # the fewest permutations of a resampled test (more with more comparisons: permutations_for)
SEED = 0  # of every resampling: the leaderboard regenerates byte for byte

TEST_TEXT = (
    f"{CONFIDENCE:.0%} intervals: one seed, percentile bootstrap over the evaluation examples; several seeds, "
    "t interval over the seeds (the seed-and-example bootstrap is in the CSV/JSON). Δ dense: difference to "
    "the dense model of the same seed, paired bootstrap over the examples (several seeds: t interval over the "
    "per-seed differences). Tests: paired permutation test on the evaluation examples (an example's "
    "predictions swapped between the two models in every seed at once; statistic: mean over seeds of the "
    f"metric difference), two-sided, Holm correction over the entries of each budget, alpha {ALPHA}, each test "
    "on the seeds both entries have. Exact for accuracy and exact match (McNemar's exact test for one seed): "
    f"no smallest p; other metrics: at least {N_PERMUTATIONS} permutations and 10 x comparisons / alpha, so the "
    "smallest reportable p, 1/(permutations + 1), is a tenth of the smallest Holm threshold. Tied ranks: the "
    "best remaining entry leads a group and the entries after it in the order of the means share its rank "
    "(\"1=\") until the first one significantly worse than it; '> random' / '< dense': significantly better "
    "than random pruning / worse than the dense model at that budget (Holm-adjusted p), only for entries that "
    "met the budget."
)


@dataclass
class EntryStats:
    """What the predictions say about one (task, method, budget) entry; ``None`` = not available."""

    seeds_with_predictions: int = 0
    score: object | None = None  # stats.Interval (value, low, high)
    score_interval: str | None = None  # "bootstrap over examples" | "t over seeds"
    seed_example: object | None = None  # stats.Interval, several seeds only
    diff_dense: object | None = None  # stats.Interval of metric - dense metric
    rank: int | None = None
    rank_label: str | None = None
    rank_group: int | None = None
    p_vs_leader: float | None = None
    seeds_vs_leader: int | None = None  # seeds the test against the leader used (both entries have them)
    p_vs_random: float | None = None  # Holm-adjusted
    better_than_random: bool | None = None
    p_vs_dense: float | None = None  # Holm-adjusted
    worse_than_dense: bool | None = None
    notes: list[str] = field(default_factory=list)


# ----- reading ------------------------------------------------------------------------------


def prediction_key(rec: dict) -> tuple:
    return (rec["task"], rec["method"], rec["budget"], rec["seed"])


def load_predictions(record_paths, records) -> tuple[dict, list[str]]:
    """``{(task, method, budget, seed): Predictions}`` of the records that have a predictions
    file matching them, and one warning per record without one (or with a mismatching one)."""
    from prunebench.report import stats

    found, warnings = {}, []
    for path, rec in zip(record_paths, records):
        ppath = stats.predictions_path(Path(path))
        if not ppath.exists():
            warnings.append(f"{path}: no predictions file ({ppath.name}); intervals and tests of its entry are n/a")
            continue
        try:
            found[prediction_key(rec)] = stats.read_predictions(ppath, rec)
        except (RecordError, ValueError, OSError) as exc:  # PredictionsError is a RecordError
            warnings.append(str(exc) if str(ppath) in str(exc) else f"{ppath}: {exc}")
    return found, warnings


def entry_predictions(row: Row, predictions: dict) -> list | None:
    """The entry's predictions, one per seed in seed order, or ``None`` unless every seed has them."""
    ps = [predictions.get((row.task, row.method, row.budget, s)) for s in sorted(row.seeds)]
    return ps if ps and all(p is not None for p in ps) else None


def matched(a: list, b: list) -> tuple[list, list]:
    """The predictions of ``a`` and ``b`` whose seed numbers both have, in seed order."""
    bs = {p.seed: p for p in b}
    pairs = [(p, bs[p.seed]) for p in sorted(a, key=lambda p: p.seed) if p.seed in bs]
    return [x for x, _ in pairs], [y for _, y in pairs]


# ----- one entry ----------------------------------------------------------------------------


def score_interval(ps: list):
    """(interval, how, seed-and-example interval or None) of the metric of one entry."""
    from prunebench.report import stats

    if len(ps) == 1:
        return (
            stats.metric_ci(ps[0], confidence=CONFIDENCE, n_resamples=N_RESAMPLES, seed=SEED),
            "bootstrap over examples",
            None,
        )
    return (
        stats.seeds_ci([p.value() for p in ps], confidence=CONFIDENCE),
        "t over seeds",
        stats.seed_example_bootstrap(ps, confidence=CONFIDENCE, n_resamples=N_RESAMPLES, seed=SEED),
    )


def diff_to_dense(ps: list, dense: list | None):
    """Metric minus the dense model's of the same seed(s), with its interval; ``None`` without
    a common seed."""
    from prunebench.report import stats

    if not dense:
        return None
    a, b = matched(ps, dense)
    if not a:
        return None
    if len(a) == 1:
        return stats.diff_ci(a[0], b[0], confidence=CONFIDENCE, n_resamples=N_RESAMPLES, seed=SEED)
    return stats.seeds_ci([x.value() - y.value() for x, y in zip(a, b)], confidence=CONFIDENCE)


def mean_difference(a: list, b: list) -> float:
    x, y = matched(a, b)
    return sum(p.value() - q.value() for p, q in zip(x, y)) / len(x)


def holm_vs(entries: dict, reference: list | None) -> dict:
    """Holm-adjusted paired p-values of each entry against ``reference`` (entries with a seed in
    common with it only)."""
    from prunebench.report import stats

    if not reference:
        return {}
    raw = {}
    n_resamples = stats.permutations_for(len(entries), ALPHA, N_PERMUTATIONS)
    for key, ps in entries.items():
        a, b = matched(ps, reference)
        if a:
            raw[key] = stats.paired_pvalue(a, b, n_resamples=n_resamples, seed=SEED)
    return stats.holm(raw) if raw else {}


# ----- one budget ---------------------------------------------------------------------------


def _verdicts(entries: dict, reference: list | None, sign: int) -> dict[tuple, tuple[float, bool]]:
    """(adjusted p, significant in the direction ``sign``) of every entry vs ``reference``."""
    out = {}
    for key, p in holm_vs(entries, reference).items():
        direction = mean_difference(entries[key], reference) * sign > 0
        out[key] = (p, bool(p < ALPHA and direction))
    return out


def budget_stats(group: list[Row], met: dict, predictions: dict, dense: list | None) -> dict[tuple, EntryStats]:
    """EntryStats of every row of one (task, budget) group."""
    from prunebench.report import stats

    out = {r.key: EntryStats() for r in group}
    entries = {}
    for r in group:
        ps = entry_predictions(r, predictions)
        if ps is None:
            continue
        entries[r.key] = ps
        s = out[r.key]
        s.seeds_with_predictions = len(ps)
        s.score, s.score_interval, s.seed_example = score_interval(ps)
        if r.method != "dense":
            s.diff_dense = diff_to_dense(ps, dense)
    random_key = next((r.key for r in group if r.method == "random"), None)
    # only entries that met the budget are compared with random pruning at it, or with the dense model
    others = {k: v for k, v in entries.items() if k != random_key and met[k]}
    for key, (p, better) in _verdicts(others, entries.get(random_key), +1).items():
        out[key].p_vs_random, out[key].better_than_random = p, better
    not_dense = {k: v for k, v in entries.items() if k[1] != "dense" and met[k]}
    for key, (p, worse) in _verdicts(not_dense, dense, -1).items():
        out[key].p_vs_dense, out[key].worse_than_dense = p, worse
    ranked = [r.key for r in group if met[r.key]]
    if ranked and all(k in entries for k in ranked):
        n_resamples = stats.permutations_for(len(ranked), ALPHA, N_PERMUTATIONS)
        for key, info in stats.tied_ranks(
            {k: entries[k] for k in ranked}, alpha=ALPHA, n_resamples=n_resamples, seed=SEED
        ).items():
            s = out[key]
            s.rank, s.rank_label, s.rank_group, s.p_vs_leader = info.rank, info.label, info.group, info.p_vs_leader
            s.seeds_vs_leader = info.seeds_vs_leader
    return out


def attach(rows: list[Row], predictions: dict, met: dict) -> None:
    """Set ``row.stats`` (an ``EntryStats``) on every row; ``met[key]``: the entry met its budget."""
    for task in sorted({r.task for r in rows}):
        dense_row = next((r for r in rows if r.task == task and r.method == "dense"), None)
        dense = entry_predictions(dense_row, predictions) if dense_row is not None else None
        for budget in sorted({r.budget for r in rows if r.task == task}):
            group = [r for r in rows if r.task == task and r.budget == budget]
            for r in group:
                r.stats = None
            if not predictions:
                continue
            for key, s in budget_stats(group, met, predictions, dense).items():
                next(r for r in group if r.key == key).stats = s
