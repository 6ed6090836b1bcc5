"""Across tasks: the share of the dense model's primary metric each (method, budget) keeps.

One job: the cross-task verdict. For every (method, budget) and every task with a dense record,

    share = mean over seeds of the method's primary metric / mean over the same seeds of the dense
            model's primary metric (same task; seeds matched: only seeds both have count),

and the mean of those shares over the tasks, with 95% intervals:

- **per task**: percentile bootstrap over the evaluation examples (``scipy.stats.bootstrap``,
  ``paired=True``, ``method='percentile'``, ``N_RESAMPLES`` resamples, a fixed seed per task). The
  method's and the dense model's predictions of the same examples are resampled together (every
  seed on the same drawn examples), and each resample recomputes both metrics from the resampled
  examples with the project's own metric code (``Predictions.components``/``aggregate`` of
  ``prunebench.records.record``: accuracy and SQuAD F1 as means, F1 and Matthews from the resample's
  confusion counts, Pearson from its pairs). Several seeds: the seeds are held fixed, so the
  interval reflects example sampling only. Every method of a task uses the same resampled
  indices (the seed depends on the task only).
- **mean over tasks**: the tasks are held fixed and independent; the interval is the percentiles
  of the elementwise mean of the per-task replicate distributions (``bootstrap_distribution``).

Rules (each shown in the report):

(a) **At-chance tasks are excluded** from the mean and listed with the reason: a task whose dense
    model's lower 95% bound (bootstrap of the dense metric over the examples; no predictions:
    its point value) is at or below the task's chance level. Chance level (``chance_level``):
    Matthews 0 (CoLA), Pearson/Spearman 0 (STS-B), accuracy the majority-class share of the
    evaluation labels when the predictions file stores them (else 1/number of labels; WNLI dev:
    0.563), F1 the F1 of predicting every example positive, 2p/(1+p) with p the positive share
    (no labels stored: no check), SQuAD no chance level (no check). A share of a model at chance
    says nothing about pruning.
(b) **WNLI is never in the mean**, as in the BERT paper (Devlin et al. 2019, GLUE results: "we
    exclude the problematic WNLI set"); its shares are still shown.
(c) **Missing tasks are flagged**: a (method, budget) without a record of a task that is in the
    mean for others gets the mean over the tasks it has, with the count ("k of K") and the
    missing tasks named, never silently.
(d) **Stand-in evaluation splits** (``config.data.eval_split_kind == "stand-in"`` in any record of
    the task) are marked with ``STANDIN_MARK`` and the footnote ``STANDIN_NOTE``.

``claim_verdict`` decides a claim such as "keeps >= 95% of dense at 10% remaining" from the
interval of the mean share: the whole interval at or above the threshold "holds", the whole
interval below it "fails", an interval that straddles it "undecided" (no interval: "n/a").
``check_claim`` applies it to a summary; ``parse_claim`` reads the claim's text.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as st

from prunebench.data.tasks import UnknownTaskError, get_task
from prunebench.records.record import Predictions, PredictionsError

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0
CLAIM_THRESHOLD = 0.95  # "keeps >= 95% of dense"
STANDIN_MARK = "†"
STANDIN_NOTE = "stand-in evaluation split: not comparable with published dev numbers"
EXCLUDED_ALWAYS = {
    "wnli": "excluded from the mean as in the BERT paper (Devlin et al. 2019 exclude the problematic "
    "WNLI set from their GLUE results)"
}
HOLDS, UNDECIDED, FAILS, NA = "holds", "undecided", "fails", "n/a"
METHOD_TEXT = (
    f"Share = mean over seeds of the method's primary metric / mean over the same seeds of the dense "
    f"model's (same task, seeds matched). {CONFIDENCE:.0%} intervals: percentile bootstrap over the "
    f"evaluation examples ({N_RESAMPLES} resamples, method and dense predictions of the same examples "
    "resampled together, metrics recomputed from each resample; seeds held fixed). Mean over tasks: "
    "tasks held fixed and independent, interval from the elementwise mean of the per-task bootstrap "
    "distributions. Excluded from the mean: WNLI (as in the BERT paper) and every task whose dense "
    "model's lower 95% bound is at or below the task's chance level (Matthews and Pearson 0, accuracy the "
    "majority-class share, F1 that of predicting every example positive). A (method, budget) missing a "
    "task gets the mean over the tasks it has, flagged with the count. "
    f"Claim 'keeps >= {CLAIM_THRESHOLD:.0%} of dense': holds when the whole interval of the mean share is "
    "at or above it, fails when the whole interval is below it, else undecided."
)


# ----- tasks ----------------------------------------------------------------------------------


def split_kinds(records: list[dict]) -> dict[str, dict]:
    """``{task: {"kind": ..., "note": ...}}`` from the records' ``config.data``: ``stand-in`` when any
    record of the task says so, else the first kind found (``unspecified`` when none says)."""
    out: dict[str, dict] = {}
    for rec in records:
        data = (rec.get("config") or {}).get("data") or {}
        kind, note = data.get("eval_split_kind") or "unspecified", data.get("split_note")
        entry = out.setdefault(rec["task"], {"kind": kind, "note": note})
        if kind == "stand-in" and entry["kind"] != "stand-in":
            entry.update(kind=kind, note=note)
        if entry["note"] is None and note:
            entry["note"] = note
    return out


def is_standin(task: str, kinds: dict[str, dict]) -> bool:
    return (kinds.get(task) or {}).get("kind") == "stand-in"


def task_label(task: str, kinds: dict[str, dict]) -> str:
    """The task's name, with ``STANDIN_MARK`` when its evaluation split is a stand-in."""
    return task + (STANDIN_MARK if is_standin(task, kinds) else "")


def standin_footnotes(tasks, kinds: dict[str, dict]) -> list[str]:
    """One footnote per stand-in task: the mark, the task, ``STANDIN_NOTE`` and the records' split note."""
    out = []
    for task in tasks:
        if is_standin(task, kinds):
            note = kinds[task].get("note")
            out.append(f"{task}{STANDIN_MARK}: {STANDIN_NOTE}" + (f" ({note})" if note else "") + ".")
    return out


def is_glue(task: str) -> bool:
    """A GLUE task (its hub data is ``nyu-mll/glue``); SQuAD is not."""
    try:
        return get_task(task).hub_path == "nyu-mll/glue"
    except UnknownTaskError:
        return False


def chance_level(task: str, dense: list[Predictions] | None) -> tuple[float | None, str]:
    """(chance level of the task's primary metric, how it was set); ``None``: no check possible."""
    spec = get_task(task)
    metric = spec.primary_metric
    refs = _labels(dense)
    if metric in ("mcc", "pearson", "spearman"):
        return 0.0, f"{metric} 0"
    if metric == "accuracy" and spec.kind == "classification":
        if refs is not None:
            share = float(np.bincount(refs).max() / len(refs))
            return share, f"majority-class share of the evaluation labels {share:.3f}"
        return 1.0 / spec.num_labels, f"1/{spec.num_labels} labels (no labels stored)"
    if metric == "f1" and refs is not None:
        p = float(np.mean(refs == 1))
        return 2 * p / (1 + p), f"F1 of predicting every example positive {2 * p / (1 + p):.3f}"
    return None, "no chance level (no check)"


def _labels(dense: list[Predictions] | None) -> np.ndarray | None:
    """The gold labels of a classification predictions file, or None."""
    p = dense[0] if dense else None
    if p is None or p.kind != "labels" or p.references is None:
        return None
    return np.asarray(p.references, dtype=np.int64)


# ----- the bootstrap -------------------------------------------------------------------------


@dataclass
class Estimate:
    """A point value, its interval (None: not available) and the bootstrap replicates behind it."""

    value: float | None
    low: float | None = None
    high: float | None = None
    distribution: np.ndarray | None = field(default=None, repr=False)


def task_seed(task: str) -> int:
    """Bootstrap seed of a task: fixed, different per task (tasks resampled independently), the
    same for every method of the task."""
    return SEED + zlib.crc32(task.encode())


def _ratio(num, den):
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def example_bootstrap(groups: list[list[Predictions]], combine, seed: int) -> Estimate:
    """Paired percentile bootstrap over the evaluation examples of ``combine(metrics)``, where
    ``metrics[g]`` is the mean over the predictions of group ``g`` of their metric on the resample.

    Every predictions file is on the same examples; all are resampled with the same indices."""
    from prunebench.report.stats import _batch, _check_paired

    flat = [p for g in groups for p in g]
    for p in flat[1:]:
        _check_paired(flat[0], p)
    comps = [p.components() for p in flat]
    edges = np.cumsum([0] + [len(c) for c in comps])
    sizes = [len(g) for g in groups]
    table = np.concatenate(comps)

    def metrics(values):
        it = iter(values)
        return [sum(next(it) for _ in range(s)) / s for s in sizes]

    value = float(combine(metrics([p.value() for p in flat])))
    n = flat[0].n
    if n < 2 or np.all(table == table[:, :1]):  # one example, or all alike: every resample gives the value
        bound = _finite_or_none(value)
        return Estimate(value, bound, bound, np.full(N_RESAMPLES, value))

    def statistic(idx, axis=-1):  # idx: resampled example indices, shape (..., n); one gather for every file
        drawn = table[:, idx]
        return combine(metrics([p.aggregate(drawn[edges[i] : edges[i + 1]], -1) for i, p in enumerate(flat)]))

    # paired: the one sample is the example index, so every file's components of a drawn example go together
    with np.errstate(invalid="ignore", divide="ignore"):
        res = st.bootstrap(
            (np.arange(n),),
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=N_RESAMPLES,
            batch=_batch(n * len(table)),
            confidence_level=CONFIDENCE,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    ci = res.confidence_interval
    return Estimate(value, _finite_or_none(ci.low), _finite_or_none(ci.high), np.asarray(res.bootstrap_distribution))


def _finite_or_none(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


# ----- per task ------------------------------------------------------------------------------


@dataclass
class TaskInfo:
    """One task: its metric, split, dense score with interval, chance level and whether it is in the mean."""

    task: str
    label: str  # with the stand-in mark
    metric: str
    split_kind: str
    split_note: str | None
    glue: bool
    dense: Estimate | None  # mean over the dense seeds, interval over the examples
    dense_seeds: list[int]
    chance: float | None
    chance_rule: str
    excluded: list[str]  # reasons; empty: in the mean

    @property
    def in_mean(self) -> bool:
        return not self.excluded


def _dense_estimate(
    values: dict[int, float], preds: list[Predictions] | None, task: str, warnings: list[str]
) -> Estimate | None:
    if not values:
        return None
    point = float(np.mean(list(values.values())))
    if not preds:
        return Estimate(point)
    try:
        est = example_bootstrap([preds], lambda m: m[0], task_seed(task))
    except PredictionsError as exc:  # seeds evaluated on different examples: no interval, said so
        warnings.append(f"{task} dense: no interval: {exc}")
        return Estimate(point)
    return Estimate(point, est.low, est.high, est.distribution)


def _exclusions(task: str, dense: Estimate | None, chance: float | None, chance_rule: str) -> list[str]:
    out = [EXCLUDED_ALWAYS[task]] if task in EXCLUDED_ALWAYS else []
    if dense is None:
        return out + ["no dense record"]
    if chance is None:
        return out
    bound, what = (dense.low, "lower 95% bound") if dense.low is not None else (dense.value, "score (no interval)")
    if bound <= chance + 1e-12:
        out.append(
            f"dense model not above chance: its {what} {bound:.3f} is at or below the chance level "
            f"{chance:.3f} ({chance_rule})"
        )
    return out


def task_info(
    task: str,
    kinds: dict,
    dense_values: dict[int, float],
    dense_preds: list[Predictions] | None,
    warnings: list[str] | None = None,
) -> TaskInfo:
    """The ``TaskInfo`` of one task from its dense model's per-seed values and predictions."""
    dense = _dense_estimate(dense_values, dense_preds, task, warnings if warnings is not None else [])
    chance, rule = chance_level(task, dense_preds)
    split = kinds.get(task) or {}
    return TaskInfo(
        task,
        task_label(task, kinds),
        get_task(task).primary_metric,
        split.get("kind") or "unspecified",
        split.get("note"),
        is_glue(task),
        dense,
        sorted(dense_values),
        chance,
        rule,
        _exclusions(task, dense, chance, rule),
    )


# ----- per (method, budget) --------------------------------------------------------------------


@dataclass
class CrossRow:
    """One (method, budget): its share of dense per task and the mean over the tasks in the mean."""

    method: str
    budget: float
    shares: dict[str, Estimate]  # task -> share (tasks it has a record of and a dense model)
    seeds: dict[str, list[int]]  # task -> matched seeds
    mean: Estimate | None
    tasks_in_mean: list[str]
    missing: list[str]  # tasks in the mean for the summary that this row has no record of
    verdict: str  # of the claim "keeps >= CLAIM_THRESHOLD of dense" from the mean's interval
    #: tasks where the method's own score (mean over its seeds) is at or below the task's chance level:
    #: its share of dense there is what a constant predictor keeps (e.g. MRPC F1 of predicting every
    #: pair positive is 95% of a weak dense model's), not knowledge the pruned model kept
    at_chance: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.missing)


def share_estimate(
    values: dict[int, float],
    dense_values: dict[int, float],
    preds: dict,
    dense_preds: dict,
    task: str,
    warnings: list[str] | None = None,
) -> tuple[Estimate | None, list[int]]:
    """Share of dense on one task over the matched seeds; interval when every matched seed of both
    has predictions on the same examples (else none, with a line in ``warnings``).
    ``values``/``preds``: seed -> metric value / Predictions."""
    seeds = sorted(set(values) & set(dense_values))
    if not seeds:
        return None, []
    point = float(_ratio(np.mean([values[s] for s in seeds]), np.mean([dense_values[s] for s in seeds])))
    point = _finite_or_none(point)
    if not all(s in preds and s in dense_preds for s in seeds):
        return Estimate(point), seeds
    try:
        est = example_bootstrap(
            [[preds[s] for s in seeds], [dense_preds[s] for s in seeds]], lambda m: _ratio(m[0], m[1]), task_seed(task)
        )
    except PredictionsError as exc:  # not on the same examples as the dense model: no paired interval
        if warnings is not None:
            warnings.append(f"{task}: no interval of the share: {exc}")
        return Estimate(point), seeds
    return Estimate(point, est.low, est.high, est.distribution), seeds


def mean_over_tasks(shares: list[Estimate]) -> Estimate | None:
    """Mean of the tasks' shares; interval from the elementwise mean of their bootstrap distributions
    (None when a task has no distribution or a share is undefined)."""
    if not shares or any(s.value is None for s in shares):
        return None
    point = float(np.mean([s.value for s in shares]))
    if any(s.distribution is None for s in shares):
        return Estimate(point)
    dist = np.mean(np.stack([s.distribution for s in shares]), axis=0)
    if not np.all(np.isfinite(dist)):
        return Estimate(point)
    low, high = np.percentile(dist, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return Estimate(point, float(low), float(high), dist)


def claim_verdict(estimate: Estimate | None, threshold: float = CLAIM_THRESHOLD) -> str:
    """ "holds" (whole interval >= threshold), "fails" (whole interval below), "undecided" (straddles),
    "n/a" (no interval)."""
    if estimate is None or estimate.low is None or estimate.high is None:
        return NA
    if estimate.low >= threshold:
        return HOLDS
    if estimate.high < threshold:
        return FAILS
    return UNDECIDED


# ----- the summary -----------------------------------------------------------------------------


@dataclass
class CrossTaskSummary:
    tasks: list[TaskInfo]
    rows: list[CrossRow]
    kinds: dict[str, dict]
    threshold: float = CLAIM_THRESHOLD
    warnings: list[str] = field(default_factory=list)  # intervals that could not be computed, and why

    @property
    def mean_tasks(self) -> list[str]:
        return [t.task for t in self.tasks if t.in_mean]

    @property
    def excluded(self) -> list[TaskInfo]:
        return [t for t in self.tasks if not t.in_mean]

    def info(self, task: str) -> TaskInfo:
        return next(t for t in self.tasks if t.task == task)

    def row(self, method: str, budget: float) -> CrossRow | None:
        return next((r for r in self.rows if r.method == method and abs(r.budget - budget) < 1e-9), None)

    def footnotes(self) -> list[str]:
        return standin_footnotes([t.task for t in self.tasks], self.kinds)


def _values(records: list[dict]) -> dict[tuple, dict[int, float]]:
    """``{(task, method, budget): {seed: primary metric}}`` of the records that have it."""
    out: dict[tuple, dict[int, float]] = {}
    for rec in records:
        value = (rec["metrics"].get(get_task(rec["task"]).primary_metric) or {}).get("value")
        if value is not None:
            out.setdefault((rec["task"], rec["method"], float(rec["budget"])), {})[int(rec["seed"])] = float(value)
    return out


def _preds(predictions: dict, task: str, method: str, budget: float) -> dict[int, Predictions]:
    return {k[3]: p for k, p in predictions.items() if k[0] == task and k[1] == method and float(k[2]) == budget}


def _dense_key(values: dict, task: str) -> tuple | None:
    return next((k for k in sorted(values) if k[0] == task and k[1] == "dense"), None)


def cross_task_summary(
    records: list[dict], predictions: dict | None = None, tasks=None, threshold: float = CLAIM_THRESHOLD
) -> CrossTaskSummary:
    """The cross-task summary of ``records`` (predictions as ``prunebench.report.uncertainty.load_predictions``
    gives them; none: shares without intervals). ``tasks``: only these tasks (e.g. the GLUE tasks)."""
    predictions = predictions or {}
    values = _values(records)
    kinds = split_kinds(records)
    wanted = sorted({k[0] for k in values} if tasks is None else {k[0] for k in values} & set(tasks))
    infos, dense_of, warnings = [], {}, []
    for task in wanted:
        key = _dense_key(values, task)
        dense_values = values.get(key, {}) if key else {}
        dense_preds = _preds(predictions, task, "dense", key[2]) if key else {}
        dense_of[task] = (dense_values, dense_preds)
        ordered = [dense_preds[s] for s in sorted(dense_preds)] or None
        infos.append(task_info(task, kinds, dense_values, ordered, warnings))
    in_mean = [t.task for t in infos if t.in_mean]
    rows = []
    for method, budget in sorted(
        {(k[1], k[2]) for k in values if k[0] in wanted and k[1] != "dense"}, key=lambda mb: (-mb[1], mb[0])
    ):
        shares, seeds = {}, {}
        for task in wanted:
            mine = values.get((task, method, budget))
            if not mine or not dense_of[task][0]:
                continue
            est, matched = share_estimate(
                mine, dense_of[task][0], _preds(predictions, task, method, budget), dense_of[task][1], task, warnings
            )
            if est is not None:
                shares[task], seeds[task] = est, matched
        have = [t for t in in_mean if t in shares]
        mean = mean_over_tasks([shares[t] for t in have])
        chance = {t.task: t.chance for t in infos}
        at_chance = [
            t
            for t in shares
            if chance.get(t) is not None
            and float(np.mean(list(values[(t, method, budget)].values()))) <= chance[t] + 1e-12
        ]
        rows.append(
            CrossRow(
                method,
                budget,
                shares,
                seeds,
                mean,
                have,
                [t for t in in_mean if t not in shares],
                claim_verdict(mean, threshold),
                at_chance,
            )
        )
    return CrossTaskSummary(infos, rows, kinds, threshold, warnings)


# ----- claims ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimCheck:
    method: str
    budget: float
    threshold: float
    verdict: str
    text: str


_CLAIM_RE = re.compile(
    r"keeps?\s*(?:>=|≥|at least)\s*(?P<keep>\d+(?:\.\d+)?)\s*%\s*of\s*(?:the\s*)?dense"
    r"(?:\s*\w+)?\s*at\s*(?P<budget>\d+(?:\.\d+)?)\s*%",
    re.IGNORECASE,
)


def parse_claim(text: str) -> tuple[float, float]:
    """(threshold, budget) of a claim "keeps >= 95% of dense at 10% remaining" -> (0.95, 0.1)."""
    m = _CLAIM_RE.search(text)
    if not m:
        raise ValueError(f"cannot read the claim {text!r}; expected e.g. 'keeps >= 95% of dense at 10% remaining'")
    return float(m["keep"]) / 100, float(m["budget"]) / 100


def check_claim(
    summary: CrossTaskSummary,
    method: str,
    claim: str | None = None,
    *,
    budget: float | None = None,
    threshold: float | None = None,
) -> ClaimCheck:
    """Check "``method`` keeps >= threshold of dense at ``budget``" on the mean share over tasks.

    Give ``claim`` as text (``parse_claim``) or ``budget`` and ``threshold`` (default ``CLAIM_THRESHOLD``)."""
    if claim is not None:
        threshold, budget = parse_claim(claim)
    if budget is None:
        raise ValueError("check_claim needs a claim text or a budget")
    threshold = CLAIM_THRESHOLD if threshold is None else threshold
    row = summary.row(method, budget)
    what = f"{method} keeps >= {threshold:.0%} of dense at {budget:.0%} remaining"
    if row is None:
        return ClaimCheck(method, budget, threshold, NA, f"{what}: n/a (no records of {method} at budget {budget:g})")
    verdict = claim_verdict(row.mean, threshold)
    return ClaimCheck(method, budget, threshold, verdict, f"{what}: {verdict} ({mean_text(row, summary)})")


def interval_text(est: Estimate | None, digits: int = 3) -> str:
    """ "0.973 [0.951, 0.990]", "0.973 [n/a]" or "n/a"."""
    if est is None or est.value is None:
        return "n/a"
    ci = "[n/a]" if est.low is None or est.high is None else f"[{est.low:.{digits}f}, {est.high:.{digits}f}]"
    return f"{est.value:.{digits}f} {ci}"


def mean_text(row: CrossRow, summary: CrossTaskSummary) -> str:
    """The mean share with its interval, the task count and the missing-task flag."""
    total = len(summary.mean_tasks)
    text = f"mean share {interval_text(row.mean)} over {len(row.tasks_in_mean)} of {total} tasks"
    return text + (f"; missing: {', '.join(row.missing)}" if row.missing else "")


def subset_mean(row: CrossRow, summary: CrossTaskSummary, tasks) -> tuple[Estimate | None, list[str], list[str]]:
    """(mean share, tasks averaged, tasks missing) of ``row`` over those of ``tasks`` that are in the
    summary's mean (e.g. the GLUE tasks); the same rules as the summary's own mean."""
    wanted = [t for t in summary.mean_tasks if t in set(tasks)]
    have = [t for t in wanted if t in row.shares]
    return mean_over_tasks([row.shares[t] for t in have]), have, [t for t in wanted if t not in row.shares]
