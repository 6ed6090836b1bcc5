"""The leaderboard: methods ranked per budget by the task's primary metric (mean over seeds).

Only entries that met the budget (encoder weights remaining <= budget + BUDGET_TOLERANCE) are
ranked; a method whose structure cannot reach a budget (head pruning keeps ~0.69 of MiniLM's
encoder) is listed after the ranked ones, unranked, with the fraction it reached, so it can
never outrank a method that met the budget.

Pareto-optimal entries are marked: ★ in ``pareto_optimal`` = no other entry of the task has
a better score with fewer remaining encoder weights; the ``pareto_disk``,
``pareto_latency_b1`` and ``pareto_latency_bmax`` columns do the same against bytes on disk
(sparse format) and measured latency. Written as Markdown, CSV and JSON, with the hardware
it ran on; records that are missing or do not load are listed under the table instead of
stopping the leaderboard.

Uncertainty (``prunebench.report.uncertainty``, from the per-example predictions beside each
record): a 95% interval of every score and of its difference to the dense model, tied ranks
("1=": not significantly different from the group's leader; paired permutation test on the
examples, Holm correction per budget, alpha 0.05) and whether the entry is significantly better
than random pruning and worse than dense. Records without predictions render with "n/a" and a
warning line.

Second backend: ``ort_speedup_b1`` and ``ort_speedup_bmax`` are the speed-ups measured
in ONNX Runtime (``prunebench.measure.onnx_runtime``; ratio of median latencies per record, mean over
seeds, as for the PyTorch columns); '—' where the records have none (records measured before the ORT
backend, or whose export failed). ``backend_rows`` compares the two backends' speed-ups with the
theoretical FLOP speed-up per method and budget ("Which backend decides the speed-up").

Several tasks: the task cell of every table carries ``prunebench.report.cross_task.STANDIN_MARK`` when
the task's evaluation split is a stand-in (``config.data.eval_split_kind``), with a footnote; with more
than one GLUE task (WNLI not counted), the section "GLUE-style average" gives, per budget and method,
the unweighted mean of the primary metric over the GLUE tasks present (WNLI excluded as in the BERT
paper; SQuAD, not a GLUE task, listed beside it) and the mean share of dense with its interval
(``prunebench.report.cross_task``), also written as ``<csv stem>_glue_average.csv``/``.json`` beside the CSV.
With one task none of this is added.

Finalize guard (``prunebench.method.base``), mark †, in either direction: ``enforced_by_truncation`` when
``finalize`` removed more than ``ENFORCEMENT_LIMIT`` of the weights the method's own rule had kept,
(before - after) / before with before = ``details.method.remaining_before_finalize`` and after = the
measured ``encoder_remaining``; ``enforced_by_fill_up`` when it added back more than that share (the
rule stopped short of the budget and finalize filled up to it, with no training after). Mark ‡ with a
note when the method's calibration profile differs from the run.
"""

from __future__ import annotations

import csv
from pathlib import Path

from prunebench.records.record import write_json_atomic
from prunebench.report import cross_task, uncertainty
from prunebench.report.collect import (
    ENFORCEMENT_LIMIT,
    Problem,
    Row,
    aggregate,
    best_backend,
    load_record_set,
    pareto_front,
)

BUDGET_TOLERANCE = 0.005  # absolute, in fraction of encoder weights remaining
TRUNCATION_MARK, CALIBRATION_MARK = "†", "‡"

COLUMNS = [
    "task",
    "budget",
    "rank",
    "method",
    "rank_label",
    "seeds",
    "score_metric",
    "score_mean",
    "score_std",
    "score_low",
    "score_high",
    "score_interval",
    "score_seed_example_low",
    "score_seed_example_high",
    "diff_dense",
    "diff_dense_low",
    "diff_dense_high",
    "p_vs_leader",
    "seeds_vs_leader",
    "better_than_random",
    "p_vs_random",
    "worse_than_dense",
    "p_vs_dense",
    "encoder_remaining",
    "met_budget",
    "remaining_before_finalize",
    "finalize_removed",
    "enforced_by_truncation",
    "enforced_by_fill_up",
    "calibration_note",
    "latency_b1_ms",
    "speedup_b1",
    "bmax",
    "latency_bmax_ms",
    "speedup_bmax",
    "ort_speedup_b1",
    "ort_speedup_bmax",
    "disk_mb_dense_format",
    "disk_mb_sparse_format",
    "pareto_optimal",
    "pareto_disk",
    "pareto_latency_b1",
    "pareto_latency_bmax",
    "hardware",
]


def hardware_text(hw: dict) -> str:
    if not hw:
        return "unknown"
    mem = f", {hw['memory_gib']} GiB" if hw.get("memory_gib") else ""
    cap = f", CPU class {hw['cpu_capability']}" if hw.get("cpu_capability") else ""
    return (
        f"{hw.get('cpu', '?')}, {hw.get('logical_cores', '?')} logical cores{mem}{cap}, GPU: {hw.get('gpu') or 'none'}"
    )


def leaderboard_rows(records: list[dict], predictions: dict | None = None) -> list[dict]:
    """One dict per (task, budget, method), ranked per budget; ``predictions`` as
    ``prunebench.report.uncertainty.load_predictions`` gives them (none: intervals and tests are n/a)."""
    rows = aggregate(records)
    attach_stats(rows, predictions)
    return board_from_rows(rows)


def attach_stats(rows: list[Row], predictions: dict | None) -> None:
    """Set every row's ``stats`` (intervals, tests, tied rank) from the predictions."""
    uncertainty.attach(rows, predictions or {}, {r.key: met_budget(r) for r in rows})


def board_from_rows(rows: list[Row]) -> list[dict]:
    """The leaderboard's rows from aggregated rows whose ``stats`` are attached (``attach_stats``)."""
    met = {r.key: met_budget(r) for r in rows}
    front = pareto_front(rows, "encoder_remaining")
    front_disk = pareto_front(rows, "disk_bytes_sparse_format")
    front_b1 = pareto_front(rows, "latency_b1")
    front_bmax = pareto_front(rows, cost=lambda r: r.mean(f"latency_b{r.bmax}") if r.bmax else None)
    out = []
    for task in sorted({r.task for r in rows}):
        for budget in sorted({r.budget for r in rows if r.task == task}, reverse=True):
            group = [r for r in rows if r.task == task and r.budget == budget]
            for r, rank, label in ranked(group, met):
                bmax = r.bmax
                disk_d, disk_s = r.mean("disk_bytes_dense_format"), r.mean("disk_bytes_sparse_format")
                out.append(
                    {
                        "task": task,
                        "budget": budget,
                        "rank": rank,
                        "rank_label": label,
                        "met_budget": met[r.key],
                        "method": r.method,
                        "seeds": len(r.seeds),
                        "score_metric": r.metric,
                        "score_mean": r.score,
                        "score_std": r.std(r.metric),
                        **stats_columns(r),
                        "encoder_remaining": r.mean("encoder_remaining"),
                        **guard_columns(r),
                        "latency_b1_ms": r.mean("latency_b1"),
                        "speedup_b1": r.mean("speedup_b1"),
                        "bmax": bmax,
                        "latency_bmax_ms": r.mean(f"latency_b{bmax}") if bmax else None,
                        "speedup_bmax": r.mean(f"speedup_b{bmax}") if bmax else None,
                        "ort_speedup_b1": r.mean("ort_speedup_b1"),
                        "ort_speedup_bmax": r.mean(f"ort_speedup_b{bmax}") if bmax else None,
                        "disk_mb_dense_format": disk_d / 1e6 if disk_d else None,
                        "disk_mb_sparse_format": disk_s / 1e6 if disk_s else None,
                        "pareto_optimal": r.key in front,
                        "pareto_disk": r.key in front_disk,
                        "pareto_latency_b1": r.key in front_b1,
                        "pareto_latency_bmax": r.key in front_bmax,
                        "hardware": hardware_text(r.hardware),
                    }
                )
    return out


#: A speed-up counts as faster (slower) than dense above 1 + this (below 1 - this), else "same speed".
BACKEND_TOL = 0.10
BACKEND_TEXT = (
    f"The same pruned and dense models timed in PyTorch (eager) and in "
    f"ONNX Runtime (exported graph, ORT's fusions), with the theoretical FLOP speed-up beside them. A speed-up "
    "beyond the tolerance of its own measure job counts as faster or slower than dense, else as the same speed: "
    "the tolerance is the spread of the job's control on that backend and batch size (the dense model timed "
    "against itself, in turn with the others; the largest |control - 1| over the seeds), or "
    f"±{BACKEND_TOL:.2f} for records measured without a control; the verdict says whether the backends agree "
    "on that at batch 1 and at the largest batch."
)
DEEPSPARSE_TEXT = (
    "DeepSparse (opt-in third backend, the sparsity-aware CPU engine, in its own environment) times the same "
    "models from a TorchScript-exported graph; its control column is the dense model timed against itself "
    "in the same job (the timing's own noise)."
)


def speed_class(speedup: float | None, tol: float = BACKEND_TOL) -> str | None:
    """'faster', 'same speed' or 'slower' than dense, ``tol`` around 1; None without a value."""
    if speedup is None:
        return None
    if speedup > 1 + tol:
        return "faster"
    if speedup < 1 - tol:
        return "slower"
    return "same speed"


def control_tolerance(r: Row, key: str) -> float:
    """The tolerance of a speed-up verdict: the spread of the same job's control (the dense model timed against
    itself, ``key`` e.g. ``control_b32``), the largest |control - 1| over the seeds, where the records have one;
    else ``BACKEND_TOL``."""
    values = [v for v in r.values.get(key, []) if v is not None]
    return max(abs(v - 1.0) for v in values) if values else BACKEND_TOL


def _backend_verdict(
    pt: float | None, ort: float | None, ds: float | None = None, tols: tuple[float, float, float] | None = None
) -> str:
    """Whether the backends agree on faster / same speed / slower than dense, each within its tolerance (``tols``,
    default ``BACKEND_TOL``). DeepSparse, the opt-in third backend, joins the verdict where it was measured."""
    t = tols or (BACKEND_TOL,) * 3
    a, b, c = speed_class(pt, t[0]), speed_class(ort, t[1]), speed_class(ds, t[2])
    if a is None or b is None:
        return "no ONNX Runtime measurement" if b is None and a is not None else "n/a"
    if c is None:
        return f"both {a}" if a == b else f"backends differ: PyTorch {a}, ORT {b}"
    if a == b == c:
        return f"all three {a}"
    return f"backends differ: PyTorch {a}, ORT {b}, DeepSparse {c}"


def backend_rows(rows: list[Row]) -> list[dict]:
    """One dict per pruned (task, method, budget): the theoretical FLOP speed-up, the PyTorch and
    the ONNX Runtime speed-ups at batch 1 and at the largest batch (means over seeds; None where
    not measured), and a verdict per batch (``speed_class`` of each backend)."""
    out = []
    for r in sorted(rows, key=lambda r: (r.task, -r.budget, r.method)):
        if r.method == "dense":
            continue
        bmax = r.bmax
        pt1, ort1, ds1 = r.mean("speedup_b1"), r.mean("ort_speedup_b1"), r.mean("ds_speedup_b1")
        ptm = r.mean(f"speedup_b{bmax}") if bmax else None
        ortm = r.mean(f"ort_speedup_b{bmax}") if bmax else None
        dsm = r.mean(f"ds_speedup_b{bmax}") if bmax else None
        best1, bestm = best_backend(r, 1), best_backend(r, bmax)
        tol1 = tuple(control_tolerance(r, f"{p}control_b1") for p in ("", "ort_", "ds_"))
        tolm = tuple(control_tolerance(r, f"{p}control_b{bmax}") for p in ("", "ort_", "ds_"))
        out.append(
            {
                "task": r.task,
                "method": r.method,
                "budget": r.budget,
                "seeds": len(r.seeds),
                "bmax": bmax,
                "theoretical_speedup": r.mean("theoretical_speedup"),
                "speedup_b1": pt1,
                "ort_speedup_b1": ort1,
                "speedup_bmax": ptm,
                "ort_speedup_bmax": ortm,
                "ds_speedup_b1": ds1,
                "ds_speedup_bmax": dsm,
                "ds_control_bmax": r.mean(f"ds_control_b{bmax}") if bmax else None,
                "best_backend_b1": best1[0],
                "best_speedup_b1": best1[1],
                "best_backend_bmax": bestm[0],
                "best_speedup_bmax": bestm[1],
                "control_b1": r.mean("control_b1"),
                "control_bmax": r.mean(f"control_b{bmax}") if bmax else None,
                "tolerance_bmax": tolm[0],
                "verdict_b1": _backend_verdict(pt1, ort1, ds1, tol1),
                "verdict_bmax": _backend_verdict(ptm, ortm, dsm, tolm),
                "has_ort": ort1 is not None or ortm is not None,
                "has_ds": ds1 is not None or dsm is not None,
            }
        )
    return out


def backend_summary(table: list[dict]) -> str:
    """One sentence: how many entries with both backends measured get the same verdict on both."""
    both = [t for t in table if t["has_ort"]]
    if not both:
        return (
            "No record has an ONNX Runtime measurement yet (records measured before the second backend was "
            "added): the speed-ups are PyTorch's only."
        )
    agree = [t for t in both if t["verdict_b1"].startswith("both") and t["verdict_bmax"].startswith("both")]
    differ = [f"{t['method']} @ {t['budget']:g}" for t in both if t not in agree]
    text = (
        f"{len(agree)} of {len(both)} pruned entries measured on both backends get the same verdict from both "
        "at batch 1 and at the largest batch"
    )
    return text + (f"; the backends decide differently for {', '.join(differ)}." if differ else ".")


def ranked(group: list[Row], met: dict) -> list[tuple[Row, int | None, str | None]]:
    """(row, rank, rank label) of one budget: the entries that met the budget first, by tied rank
    when every one has predictions (``prunebench.report.uncertainty``), else in plain order of the score;
    then the others, unranked."""
    tied = all(r.stats is not None and r.stats.rank is not None for r in group if met[r.key])

    def order(r):
        score = -(r.score if r.score is not None else float("-inf"))
        return (not met[r.key], r.stats.rank if tied and met[r.key] else 0, score, r.method)

    out, plain = [], iter(range(1, len(group) + 1))
    for r in sorted(group, key=order):
        if not met[r.key]:
            out.append((r, None, None))
        elif tied:
            out.append((r, r.stats.rank, r.stats.rank_label))
        else:
            rank = next(plain)
            out.append((r, rank, str(rank)))
    return out


def _interval(iv, name: str) -> dict:
    """``{name: value, name_low: low, name_high: high}`` of a ``stats.Interval`` (or Nones)."""
    get = (lambda k: None) if iv is None else (lambda k: _float(getattr(iv, k, None)))
    return {name: get("value"), f"{name}_low": get("low"), f"{name}_high": get("high")}


def _float(x):
    return None if x is None else float(x)


def stats_columns(r: Row) -> dict:
    """The uncertainty columns of a row (all None without predictions)."""
    s = r.stats
    score = _interval(s.score if s else None, "score")
    seed_example = _interval(s.seed_example if s else None, "score_seed_example")
    return {
        "score_low": score["score_low"],
        "score_high": score["score_high"],
        "score_interval": s.score_interval if s else None,
        "score_seed_example_low": seed_example["score_seed_example_low"],
        "score_seed_example_high": seed_example["score_seed_example_high"],
        **_interval(s.diff_dense if s else None, "diff_dense"),
        "p_vs_leader": _float(s.p_vs_leader) if s else None,
        "seeds_vs_leader": s.seeds_vs_leader if s else None,
        "better_than_random": s.better_than_random if s else None,
        "p_vs_random": _float(s.p_vs_random) if s else None,
        "worse_than_dense": s.worse_than_dense if s else None,
        "p_vs_dense": _float(s.p_vs_dense) if s else None,
    }


def guard_columns(r: Row) -> dict:
    """The finalize guard: how much ``finalize`` changed the remaining fraction (the seed with the largest change,
    negative when it added weights back), and calibration."""
    enforced = r.enforced_by()
    return {
        "remaining_before_finalize": r.mean("remaining_before_finalize"),
        "finalize_removed": r.finalize_change(),
        "enforced_by_truncation": enforced == "truncation",
        "enforced_by_fill_up": enforced == "fill-up",
        "calibration_note": calibration_note(r.calibration_mismatches),
    }


def calibration_note(mismatches: list[dict]) -> str | None:
    """ "calibrated on steps=300, run on steps=200" for each calibration the run moved away from."""
    notes = []
    for c in mismatches:
        keys = c.get("differs") or sorted(c.get("calibrated_on") or {})
        on = ", ".join(f"{k}={(c.get('calibrated_on') or {}).get(k)}" for k in keys)
        run = ", ".join(f"{k}={(c.get('run') or {}).get(k)}" for k in keys)
        notes.append(f"calibrated on {on}, run on {run}")
    return "; ".join(dict.fromkeys(notes)) or None


def met_budget(row) -> bool:
    """Whether an entry reached its budget: budget-free rows (budget 1) always do."""
    remaining = row.mean("encoder_remaining")
    return row.budget >= 1.0 or (remaining is not None and remaining <= row.budget + BUDGET_TOLERANCE)


def _rank_cell(row: dict) -> str:
    if row["rank"] is not None:
        return row.get("rank_label") or str(row["rank"])
    return "– (budget not reached)"


def _fmt(value, digits=3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "★" if value else ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ort_fmt(value, digits=2) -> str:
    """An ONNX Runtime cell: '—' where the records have no ORT measurement."""
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(low, high, digits=4) -> str:
    return "[n/a]" if low is None or high is None else f"[{low:.{digits}f}, {high:.{digits}f}]"


def _score_cell(r: dict) -> str:
    spread = f" ± {_fmt(r['score_std'], 4)}" if r["seeds"] > 1 else ""
    return f"{r['score_metric']} {_fmt(r['score_mean'], 4)}{spread} {_ci(r['score_low'], r['score_high'])}"


def _diff_cell(r: dict) -> str:
    if r["diff_dense"] is None:
        return "n/a"
    return (
        f"{100 * r['diff_dense']:+.1f} pt [{100 * r['diff_dense_low']:+.1f}, {100 * r['diff_dense_high']:+.1f}]"
        if r["diff_dense_low"] is not None
        else f"{100 * r['diff_dense']:+.1f} pt [n/a]"
    )


def _verdict_cell(flag, p) -> str:
    if flag is None:
        return "n/a"
    return f"{'yes' if flag else 'no'} (p={p:.3g})"


def _seeds_cell(r: dict) -> str:
    """The entry's seed count, and the seeds its test against the group's leader used where fewer."""
    vs = r.get("seeds_vs_leader")
    return f"{r['seeds']} ({vs} vs leader)" if vs is not None and vs < r["seeds"] else str(r["seeds"])


def _method_cell(r: dict) -> str:
    enforced = r.get("enforced_by_truncation") or r.get("enforced_by_fill_up")
    marks = [TRUNCATION_MARK] * bool(enforced) + [CALIBRATION_MARK] * bool(r.get("calibration_note"))
    return " ".join([r["method"], *marks])


def footnotes(rows: list[dict]) -> list[str]:
    """One line per row flagged by the finalize guard (truncation, fill-up, calibration)."""
    lines = []
    for r in rows:
        where = f"{r['task']} {r['method']} at {r['budget']:g}"
        if r.get("enforced_by_truncation"):
            lines.append(
                f"- {TRUNCATION_MARK} {where}: budget enforced by truncation: finalize removed "
                f"{100 * r['finalize_removed']:.0f}% of the weights the method's own rule had kept "
                f"(remaining {r['remaining_before_finalize']:.3f} before finalize, "
                f"{r['encoder_remaining']:.3f} after)."
            )
        if r.get("enforced_by_fill_up"):
            lines.append(
                f"- {TRUNCATION_MARK} {where}: budget enforced by fill-up: the method's own rule stopped at "
                f"{r['remaining_before_finalize']:.3f} remaining and finalize added weights back up to "
                f"{r['encoder_remaining']:.3f} ({100 * -r['finalize_removed']:.0f}% more), with no training after."
            )
        if r.get("calibration_note"):
            lines.append(f"- {CALIBRATION_MARK} {where}: {r['calibration_note']}.")
    return lines


def prediction_warning(warnings: list[str], limit: int = 10) -> list[str]:
    """The warning under the table for records without (matching) predictions."""
    if not warnings:
        return []
    lines = [
        "",
        f"Warning: {len(warnings)} record(s) without a usable predictions file: their entries' intervals and "
        "tests are n/a, and the ranks of their budgets follow the plain order of the scores.",
        "",
    ]
    lines += [f"- {w}" for w in warnings[:limit]]
    if len(warnings) > limit:
        lines.append(f"- ... and {len(warnings) - limit} more")
    return lines


def _precisions(records: list[dict]) -> str:
    """The training precisions the records ran in (``details.training.precision``; older records: unknown)."""
    found = sorted(
        {str(((r.get("details") or {}).get("training") or {}).get("precision") or "unknown") for r in records}
    )
    return "/".join(found) or "unknown"


def _ort_text(records: list[dict]) -> str:
    """ "; second backend onnxruntime 1.32.0 (ORT speed-up columns)" when any record has it, else ""."""
    found = sorted(
        {
            str(o.get("ort_version"))
            for r in records
            for o in [((r.get("details") or {}).get("measurement") or {}).get("onnx_runtime") or {}]
            if o.get("enabled") and o.get("ort_version")
        }
    )
    if not found:
        return ""
    return f"; second backend ONNX Runtime {'/'.join(found)} (ORT speed-up columns; '—': not measured in ORT)"


def backend_markdown(table: list[dict], label=str) -> list[str]:
    """The "Which backend decides the speed-up" section (only when some record has ORT numbers);
    ``label``: the task cell's text (``task_labeller``)."""
    if not any(t["has_ort"] for t in table):
        return []
    ds = any(t["has_ds"] for t in table)  # the DeepSparse columns only where some record has them
    header = "| task | budget | method | theoretical (FLOPs) | PyTorch b1 | ORT b1 | "
    header += "DeepSparse b1 | " * ds + "verdict b1 | PyTorch bmax | ORT bmax | "
    header += "DeepSparse bmax | DeepSparse control bmax | " * ds + "verdict bmax |"
    lines = [
        "",
        "## Which backend decides the speed-up",
        "",
        BACKEND_TEXT + (" " + DEEPSPARSE_TEXT) * ds + " " + backend_summary(table),
        "",
        header,
        "|---" * (10 + 3 * ds) + "|",
    ]
    for t in table:
        ds1 = f"{_ort_fmt(t['ds_speedup_b1'])} | " * ds
        dsm = f"{_ort_fmt(t['ds_speedup_bmax'])} | {_ort_fmt(t['ds_control_bmax'])} | " * ds
        lines.append(
            f"| {label(t['task'])} | {t['budget']:g} | {t['method']} | {_ort_fmt(t['theoretical_speedup'])} | "
            f"{_ort_fmt(t['speedup_b1'])} | {_ort_fmt(t['ort_speedup_b1'])} | {ds1}{t['verdict_b1']} | "
            f"{_ort_fmt(t['speedup_bmax'])} | {_ort_fmt(t['ort_speedup_bmax'])} | {dsm}{t['verdict_bmax']} |"
        )
    return lines


def task_labeller(rows: list[dict], records: list[dict]):
    """The task cell's text: with one task the name as it is; with several the name marked when its
    evaluation split is a stand-in (``prunebench.report.cross_task.task_label``)."""
    if len({r["task"] for r in rows} | {r["task"] for r in records}) <= 1:
        return str
    kinds = cross_task.split_kinds(records)
    return lambda task: cross_task.task_label(task, kinds)


def standin_notes(rows: list[dict], records: list[dict]) -> list[str]:
    """Footnote lines for the stand-in tasks (only with several tasks, as ``task_labeller``)."""
    tasks = sorted({r["task"] for r in rows} | {r["task"] for r in records})
    if len(tasks) <= 1:
        return []
    return [f"- {n}" for n in cross_task.standin_footnotes(tasks, cross_task.split_kinds(records))]


def to_markdown(
    rows: list[dict],
    records: list[dict],
    problems: list[Problem] | None = None,
    prediction_warnings: list[str] | None = None,
    backends: list[dict] | None = None,
    glue: dict | None = None,
) -> str:
    """The leaderboard as Markdown; ``glue``: ``glue_average``'s result (default: computed from the
    records without predictions, so its shares have no interval)."""
    label = task_labeller(rows, records)
    hw = records[0]["provenance"]["hardware"] if records else {}
    m = (records[0].get("details") or {}).get("measurement", {}) if records else {}
    lines = [
        "# prunebench leaderboard",
        "",
        f"Hardware: {hardware_text(hw)}; "
        f"latency backend {m.get('backend', '?')}, {m.get('threads', '?')} threads, "
        f"sequence length {m.get('seq_len', '?')}, "
        f"batch sizes {m.get('batch_sizes', '?')}{_ort_text(records)}; training precision {_precisions(records)}; "
        f"seeds {sorted({int(r['seed']) for r in records})}. "
        "★ = Pareto-optimal: score vs. encoder weights remaining (Pareto), "
        "vs. bytes on disk in the sparse format (disk), vs. latency at batch 1 (b1) and at the largest batch (bmax). "
        f"Ranked: entries whose remaining fraction is within {BUDGET_TOLERANCE} of the budget; a method whose "
        "structure cannot reach the budget is listed after them, unranked, with the fraction it reached.",
        "",
        uncertainty.TEST_TEXT + f" {TRUNCATION_MARK}: budget enforced by finalize, by truncation (it removed more "
        f"than {ENFORCEMENT_LIMIT:.0%} of the weights the method's own rule had kept) or by fill-up (it added back "
        f"more than {ENFORCEMENT_LIMIT:.0%} of them); {CALIBRATION_MARK}: the method's "
        "settings were calibrated on another profile (notes below the table).",
        "",
        "| task | budget | rank | method | seeds | score (mean ± std over seeds) [95% CI] | "
        "Δ dense [95% CI] | > random | "
        "< dense | remaining | latency b1 (ms) | speed-up b1 | latency bmax (ms) | speed-up bmax | "
        "ORT speed-up b1 | ORT speed-up bmax | "
        "disk MB (dense fmt / sparse fmt) | Pareto | disk | b1 | bmax |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {label(r['task'])} | {r['budget']:g} | {_rank_cell(r)} | {_method_cell(r)} | {_seeds_cell(r)} | "
            f"{_score_cell(r)} | "
            f"{_diff_cell(r)} | {_verdict_cell(r['better_than_random'], r['p_vs_random'])} | "
            f"{_verdict_cell(r['worse_than_dense'], r['p_vs_dense'])} | {_fmt(r['encoder_remaining'], 4)} | "
            f"{_fmt(r['latency_b1_ms'], 2)} | {_fmt(r['speedup_b1'], 2)} | {_fmt(r['latency_bmax_ms'], 1)} | "
            f"{_fmt(r['speedup_bmax'], 2)} | {_ort_fmt(r.get('ort_speedup_b1'))} | "
            f"{_ort_fmt(r.get('ort_speedup_bmax'))} | "
            f"{_fmt(r['disk_mb_dense_format'], 1)} / {_fmt(r['disk_mb_sparse_format'], 1)} | "
            f"{_fmt(r['pareto_optimal'])} | {_fmt(r['pareto_disk'])} | {_fmt(r['pareto_latency_b1'])} | "
            f"{_fmt(r['pareto_latency_bmax'])} |"
        )
    notes = footnotes(rows) + standin_notes(rows, records)
    if notes:
        lines += ["", *notes]
    lines += prediction_warning(prediction_warnings or [])
    lines += backend_markdown(backends if backends is not None else backend_rows(aggregate(records)), label)
    lines += glue_markdown(glue if glue is not None else glue_average(records), label)
    if problems:
        lines += ["", f"Runs missing or failed ({len(problems)}):", ""]
        lines += [f"- `{p.path}`: {p.status}: {p.error.splitlines()[0] if p.error else ''}" for p in problems]
    return "\n".join(lines) + "\n"


def write_leaderboard(record_paths, markdown: Path, csv_path: Path, expected=None) -> list[dict]:
    """Markdown + CSV (+ JSON beside the CSV) from whatever of ``record_paths`` loads (a folder
    stands for every record under it), with the predictions beside the records."""
    rs = load_record_set(record_paths, expected)
    predictions, warnings = uncertainty.load_predictions(rs.paths, rs.records)
    rows = leaderboard_rows(rs.records, predictions)
    markdown = Path(markdown)
    csv_path = Path(csv_path)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    glue = glue_average(rs.records, predictions)
    markdown.write_text(to_markdown(rows, rs.records, rs.problems, warnings, glue=glue))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_json_atomic(rows, csv_path.with_suffix(".json"))
    write_glue_files(glue, csv_path)
    return rows


# ----- several tasks: the GLUE-style average ----------------------------------------------------

GLUE_TEXT = (
    "Per budget and method, the unweighted mean of each GLUE task's primary metric (CoLA Matthews, MRPC and "
    "QQP F1, STS-B Pearson, accuracy elsewhere), in points, over the GLUE tasks present; WNLI is excluded, as "
    "in the BERT paper (Devlin et al. 2019); SQuAD is not a GLUE task and is listed beside it, not averaged. "
    "⚠: the entry lacks a GLUE task the run has, so its mean is over the tasks it has (count shown). Mean share "
    "of dense (prunebench/report/cross_task.py): the mean over the GLUE tasks of the method's metric / the dense "
    "model's (same task and seeds), with a 95% interval from a bootstrap over the evaluation examples (per "
    "task, method and dense resampled together; tasks held fixed); tasks whose dense model is not above "
    "chance are left out of it (listed below). 'keeps ≥ 95% of dense': holds when the whole interval is at "
    "or above 0.95, fails when it is below, else undecided."
)


def glue_tasks(records: list[dict]) -> list[str]:
    """The GLUE tasks of the records that enter the GLUE-style average (WNLI never does)."""
    return sorted(
        {r["task"] for r in records if cross_task.is_glue(r["task"]) and r["task"] not in cross_task.EXCLUDED_ALWAYS}
    )


def _share_columns(prefix: str, est) -> dict:
    est = est or cross_task.Estimate(None)
    return {f"{prefix}": _float(est.value), f"{prefix}_low": _float(est.low), f"{prefix}_high": _float(est.high)}


def _glue_row(budget: float, method: str, tasks: list[str], others: list[str], score: dict, summary) -> dict | None:
    """One (budget, method) of the GLUE-style average; None when it has no record of these tasks."""
    have = [t for t in tasks if score.get((t, method, budget)) is not None]
    if not have and not any(score.get((t, method, budget)) is not None for t in others):
        return None
    crow = summary.row(method, budget)
    share, share_tasks, share_missing = cross_task.subset_mean(crow, summary, tasks) if crow else (None, [], [])
    out = {
        "budget": budget,
        "method": method,
        "tasks": ";".join(have),
        "n_tasks": len(have),
        "n_glue_tasks": len(tasks),
        "missing_tasks": ";".join(t for t in tasks if t not in have),
        "glue_mean": sum(score[(t, method, budget)] for t in have) / len(have) if have else None,
        **_share_columns("share_mean", share),
        "share_tasks": ";".join(share_tasks),
        "share_missing_tasks": ";".join(share_missing),
        "claim_95": cross_task.claim_verdict(share) if crow else None,
    }
    for t in others:
        out[f"{t}_score"] = score.get((t, method, budget))
        out.update(_share_columns(f"{t}_share", crow.shares.get(t) if crow else None))
    return out


def glue_average(records: list[dict], predictions: dict | None = None) -> dict:
    """``{"rows", "tasks", "others", "summary"}`` of the GLUE-style average, or ``{}`` when fewer than
    two GLUE tasks (WNLI not counted) have records."""
    tasks = glue_tasks(records)
    if len(tasks) < 2:
        return {}
    others = sorted({r["task"] for r in records if not cross_task.is_glue(r["task"])})
    summary = cross_task.cross_task_summary(records, predictions, tasks=tasks + others)
    agg = aggregate(records)
    score = {(r.task, r.method, r.budget): r.score for r in agg}
    keys = sorted({(r.budget, r.method) for r in agg}, key=lambda bm: (-bm[0], bm[1] != "dense", bm[1]))
    rows = [g for b, m in keys if (g := _glue_row(b, m, tasks, others, score, summary)) is not None]
    return {
        "rows": rows,
        "tasks": tasks,
        "others": others,
        "summary": summary,
        "wnli": any(r["task"] == "wnli" for r in records),
    }


def _points(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _share_cell(row: dict, prefix: str, n: int | None = None) -> str:
    if row["method"] == "dense":
        return "1 (reference)"
    est = cross_task.Estimate(row[prefix], row[f"{prefix}_low"], row[f"{prefix}_high"])
    return cross_task.interval_text(est) + (f" ({n} task{'s' * (n != 1)})" if n is not None else "")


def _glue_tasks_cell(row: dict, label) -> str:
    cell = f"{row['n_tasks']} of {row['n_glue_tasks']}"
    if row["missing_tasks"]:
        cell += " ⚠ missing: " + ", ".join(label(t) for t in row["missing_tasks"].split(";"))
    return cell


def glue_markdown(glue: dict, label=str) -> list[str]:
    """The "GLUE-style average" section (nothing without ``glue``)."""
    if not glue:
        return []
    others, summary = glue["others"], glue["summary"]
    head = [
        "budget",
        "method",
        "GLUE tasks",
        "GLUE-style mean (points)",
        "mean share of dense [95% CI]",
        "keeps ≥ 95% of dense",
    ]
    for t in others:
        head += [f"{label(t)} {summary.info(t).metric} (not averaged)", f"{label(t)} share of dense [95% CI]"]
    lines = [
        "",
        "## GLUE-style average",
        "",
        f"GLUE tasks present: {', '.join(label(t) for t in glue['tasks'])}"
        + (" (WNLI has records but is excluded)" if glue["wnli"] else "")
        + ". "
        + GLUE_TEXT,
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in glue["rows"]:
        n = len(r["share_tasks"].split(";")) if r["share_tasks"] else 0
        cells = [
            f"{r['budget']:g}",
            r["method"],
            _glue_tasks_cell(r, label),
            _points(r["glue_mean"]),
            _share_cell(r, "share_mean", n),
            r["claim_95"] or "–",
        ]
        for t in others:
            cells += [_fmt(r[f"{t}_score"], 4), _share_cell(r, f"{t}_share") if r[f"{t}_score"] is not None else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    left_out = [t for t in summary.excluded if t.task in glue["tasks"]]
    if left_out:
        lines += ["", "Not in the mean share of dense:", ""]
        lines += [f"- {label(t.task)}: {'; '.join(t.excluded)}." for t in left_out]
    notes = cross_task.standin_footnotes(glue["tasks"] + others, summary.kinds)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return lines


def write_glue_files(glue: dict, csv_path: Path) -> list[Path]:
    """``<stem>_glue_average.csv`` and ``.json`` beside the leaderboard's CSV (its own columns; the
    leaderboard's CSV is not touched); without a GLUE-style average, stale files of an earlier run are removed."""
    path = csv_path.with_name(f"{csv_path.stem}_glue_average.csv")
    if not glue:
        for p in (path, path.with_suffix(".json")):
            p.unlink(missing_ok=True)
        return []
    rows = glue["rows"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["budget", "method"])
        writer.writeheader()
        writer.writerows(rows)
    write_json_atomic(rows, path.with_suffix(".json"))
    return [path, path.with_suffix(".json")]
