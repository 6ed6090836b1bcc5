"""Does the verdict depend on the fine-tuning budget? Rankings of the methods at each length.

Records of a run whose ``finetune.steps`` is a list (the ``convergence`` profile) carry their
own length in ``config.finetune.steps``. Grouped by (task, budget), this module gives each
method's task metric (mean over seeds) against the steps, the ranking of the pruning methods
at each length, and Kendall's tau-b (``scipy.stats.kendalltau``; Kendall 1945, ties counted)
between the rankings of consecutive lengths and of the shortest vs. the longest: tau = 1 the
same order, 0 unrelated, -1 reversed. The dense model is drawn as a reference, not ranked.

``convergence_section(records)`` returns the dict the report template renders (``None`` when
the records hold fewer than two lengths); ``longest_steps_records`` keeps the records of the
longest length, the ones the leaderboard and the other report sections use.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import matplotlib.pyplot as plt
from scipy.stats import kendalltau

from prunebench.data.tasks import get_task
from prunebench.report import figures
from prunebench.report.collect import higher_is_better
from prunebench.report.style import RC, linestyle, method_style

SECTION_TITLE = "Does the verdict depend on the fine-tuning budget?"


def steps_of(record: dict) -> int | None:
    """The fine-tuning steps of a record (``config.finetune.steps``), None when it does not say."""
    steps = ((record.get("config") or {}).get("finetune") or {}).get("steps")
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"record {record.get('method')}/{record.get('budget')}/seed{record.get('seed')}: "
            f"config.finetune.steps must be a positive integer, got {steps!r}"
        )
    return steps


def step_counts(records: list[dict]) -> list[int]:
    """The distinct fine-tuning lengths of the records, ascending."""
    return sorted({s for s in map(steps_of, records) if s is not None})


def longest_steps_records(records: list[dict]) -> list[dict]:
    """The records at the longest fine-tuning length (all of them when there is one length)."""
    counts = step_counts(records)
    if len(counts) < 2:
        return list(records)
    return [r for r in records if steps_of(r) in (None, counts[-1])]


def mean_scores(records: list[dict]) -> dict[tuple[str, float], dict[str, dict[int, float]]]:
    """``{(task, budget): {method: {steps: mean primary metric over seeds}}}``; dense is put in
    every budget group of its task (as the reference)."""
    values: dict[tuple, list[float]] = defaultdict(list)
    for rec in records:
        steps = steps_of(rec)
        metric = get_task(rec["task"]).primary_metric
        entry = rec["metrics"].get(metric)
        if steps is None or entry is None or not _finite(entry.get("value")):
            continue
        values[(rec["task"], float(rec["budget"]), rec["method"], steps)].append(float(entry["value"]))
    budgets = {(t, b) for (t, b, m, _) in values if m != "dense"}
    out: dict[tuple[str, float], dict[str, dict[int, float]]] = {key: defaultdict(dict) for key in budgets}
    for (task, budget, method, steps), vals in values.items():
        targets = [k for k in budgets if k[0] == task] if method == "dense" else [(task, budget)]
        for key in targets:
            out[key][method][steps] = statistics.fmean(vals)
    return {k: dict(v) for k, v in out.items()}


def ranking(scores: dict[str, float], higher_better: bool = True) -> list[str]:
    """Methods best first (ties broken by name, so the order is reproducible)."""
    return sorted(scores, key=lambda m: ((-scores[m] if higher_better else scores[m]), m))


def kendall(a: dict[str, float], b: dict[str, float]) -> dict:
    """Kendall's tau-b between two lengths' scores of the methods both have (a rank correlation, so
    the scores themselves give the rankings). ``tau``/``p`` are None with fewer than 2 common methods
    or when one side has all methods tied."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return {"tau": None, "p": None, "n": len(common)}
    res = kendalltau([a[m] for m in common], [b[m] for m in common])
    tau, p = float(res.statistic), float(res.pvalue)
    return {"tau": tau if math.isfinite(tau) else None, "p": p if math.isfinite(p) else None, "n": len(common)}


def _taus(by_steps: dict[int, dict[str, float]], steps: list[int]) -> list[dict]:
    pairs = list(zip(steps, steps[1:]))
    if len(steps) > 2:
        pairs.append((steps[0], steps[-1]))
    return [{"a": a, "b": b, **kendall(by_steps[a], by_steps[b])} for a, b in pairs]


def convergence_figure(methods: dict[str, dict[int, float]], task: str, budget: float, metric: str, rc=None):
    """Each method's metric against fine-tuning steps (log x), dense as a dashed line."""
    with plt.rc_context(rc or RC):
        fig, ax = plt.subplots(layout="constrained")
        for method in sorted(methods):
            pts = sorted(methods[method].items())
            colour, marker = method_style(method)
            ax.plot(
                [s for s, _ in pts],
                [v for _, v in pts],
                color=colour,
                marker=marker,
                linestyle="--" if method == "dense" else linestyle(method),
                label=method,
            )
        ax.set_xscale("log")
        ax.set_xlabel("fine-tuning steps (log scale)")
        ax.set_ylabel(f"dev {metric}")
        ax.set_title(f"{task}: {metric} vs. fine-tuning steps at budget {budget:g}", fontsize="medium")
        figures._legend_below(ax, len(methods))
    return fig


def convergence_section(records: list[dict], rc=None, with_figures: bool = True) -> dict | None:
    """The report's section: per (task, budget) the score table, the ranking at each length and
    Kendall's tau between rankings; None when the records hold fewer than two lengths."""
    steps = step_counts(records)
    if len(steps) < 2:
        return None
    groups = []
    for (task, budget), methods in sorted(mean_scores(records).items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        metric = get_task(task).primary_metric
        better = higher_is_better(metric)
        lengths = sorted({s for v in methods.values() for s in v})
        pruned = {m: v for m, v in methods.items() if m != "dense"}
        by_steps = {s: {m: v[s] for m, v in pruned.items() if s in v} for s in lengths}
        group = {
            "task": task,
            "budget": budget,
            "metric": metric,
            "steps": lengths,
            "table": [{"method": m, "scores": [methods[m].get(s) for s in lengths]} for m in sorted(methods)],
            "rankings": [{"steps": s, "order": ranking(by_steps[s], better)} for s in lengths],
            "taus": _taus(by_steps, lengths),
            "figure": None,
        }
        if with_figures:
            fid = f"convergence-{task}-{budget:g}".replace(".", "_")
            fig = convergence_figure(methods, task, budget, metric, rc)
            group["figure"] = {
                "id": fid,
                "svg": figures.inline_svg(figures.to_svg_text(fig, rc), fid),
                "title": f"{task} at budget {budget:g}: metric vs. fine-tuning steps",
            }
            plt.close(fig)
        groups.append(group)
    return {"title": SECTION_TITLE, "steps": steps, "groups": groups}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def keep_longest_steps(record_set):
    """A ``collect.RecordSet`` reduced to the records (and their paths) of the longest fine-tuning
    length: the other report sections and the leaderboard compare methods at one length."""
    from prunebench.report.collect import RecordSet

    keep = longest_steps_records(record_set.records)
    ids = {id(r) for r in keep}
    pairs = [(r, p) for r, p in zip(record_set.records, record_set.paths) if id(r) in ids]
    return RecordSet([r for r, _ in pairs], [p for _, p in pairs], record_set.problems, record_set.expected)
