"""The result tables of the docs, rendered from the committed records.

A table in a Markdown file sits between two markers naming it,

    <!-- table:NAME:start -->
    ...
    <!-- table:NAME:end -->

where NAME is a key of ``TABLES``. Each table reads one committed source (the published leaderboard,
itself checked against ``reports/records`` by ``prunebench.report.published``, or a folder of records)
and renders Markdown from it; nothing between the markers is typed. From the repository root:

    python -m prunebench.report.docs_tables --regenerate docs/results.md   # write the tables
    python -m prunebench.report.docs_tables docs/results.md                # check them (CI)

The check fails (exit status 1, with a diff) when a table differs from what its source gives, when a
marker names no known table, or when a start marker has no end. ``make publish-leaderboard`` writes
the tables, ``make check-leaderboard`` checks them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import scipy.stats

from prunebench.report.collect import aggregate, expand_record_paths, load_records
from prunebench.report.convergence import steps_of

BLOCK = re.compile(r"<!-- table:(?P<name>[\w-]+):start -->\n(?P<body>.*?)<!-- table:(?P=name):end -->", re.S)
START = re.compile(r"<!-- table:(?P<name>[\w-]+):start -->")
DASH = "—"


class TableError(ValueError):
    """A marker names no known table, a block is not closed, or a table's source is missing."""


# ----- reading the sources --------------------------------------------------------------------------


def _leaderboard(root: Path, rel: str = "reports/leaderboard.json") -> dict[tuple[str, float], dict]:
    path = root / rel
    if not path.is_file():
        raise TableError(f"{path} is missing: the table is rendered from it (make publish-leaderboard)")
    return {(e["method"], float(e["budget"])): e for e in json.loads(path.read_text())}


def _record_paths(root: Path, rel: str) -> list[str]:
    folder = root / rel
    paths = expand_record_paths(folder) if folder.is_dir() else []
    if not paths:
        raise TableError(f"{folder} has no records: the table is rendered from them")
    return paths


def _records(root: Path, rel: str) -> list[dict]:
    return load_records(_record_paths(root, rel))


# ----- formatting -----------------------------------------------------------------------------------


def _num(x, digits: int = 3) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def _pair(a, b) -> str:
    return DASH if a is None and b is None else f"{_num(a, 2)} / {_num(b, 2)}"


def _score(e: dict | None) -> str:
    if e is None:
        return DASH
    if e.get("score_low") is None:
        return _num(e["score_mean"])
    return f"{e['score_mean']:.3f} [{e['score_low']:.3f}, {e['score_high']:.3f}]"


def _seeds(e: dict | None) -> str:
    return DASH if e is None else str(e["seeds"])


def _marks(e: dict) -> str:
    out = []
    if not e.get("met_budget", True):
        out.append(f"budget not reached: {e['encoder_remaining']:.3f} remaining, unranked")
    if e.get("enforced_by_truncation"):
        out.append(f"† {e['remaining_before_finalize']:.3f} by its own rule, enforced by truncation")
    if e.get("enforced_by_fill_up"):
        out.append(f"† {e['remaining_before_finalize']:.3f} by its own rule, enforced by fill-up")
    if e.get("calibration_note"):
        out.append("‡ " + e["calibration_note"])
    return "; ".join(out)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ----- the tables -----------------------------------------------------------------------------------

#: the rows beyond the survey (methods published after it), in the order the docs discuss them
BEYOND_SURVEY = ("obert", "sparsegpt", "wanda", "wanda_oneshot", "torch_pruning", "magnitude_2to4")
#: the quantized rows (budget 1: no weights removed)
QUANTIZED = ("int8_dynamic", "q8bert", "quant_noise", "quant_noise_int4", "qbert")
#: pruned during pre-training -> the same method during fine-tuning
PRETRAIN_PAIRS = (("gordon_pretrain", "magnitude_local"), ("rpp_pretrain", "rpp"), ("layerdrop_pretrain", "layerdrop"))
BUDGETS = (0.5, 0.1)


def beyond_survey(root: Path) -> str:
    """SST-2 score [95% interval] at each budget, and the speed-ups at the lowest budget, per backend."""
    board = _leaderboard(root)
    low = min(BUDGETS)
    rows = []
    for method in BEYOND_SURVEY:
        entries = [board.get((method, b)) for b in BUDGETS]
        if not any(entries):
            continue
        at_low = board.get((method, low))
        cells = [_score(e) + (f" ({_marks(e)})" if e and _marks(e) else "") for e in entries]
        speed = [DASH, DASH]
        if at_low and at_low.get("met_budget", True):
            speed = [
                _pair(at_low.get("speedup_b1"), at_low.get("speedup_bmax")),
                _pair(at_low.get("ort_speedup_b1"), at_low.get("ort_speedup_bmax")),
            ]
        seeds = "/".join(_seeds(e) for e in entries)
        rows.append([f"`{method}`", seeds, *cells, *speed])
    header = ["method", "seeds (0.5/0.1)", *(f"budget {b:g}" for b in BUDGETS)]
    header += [f"speed-up at {low:g}: PyTorch b1 / bmax", "ONNX Runtime b1 / bmax"]
    return _table(header, rows)


def quantized(root: Path) -> str:
    """Each quantized row's score, difference from dense, saved-model size relative to dense, speed-ups."""
    board = _leaderboard(root)
    dense = board.get(("dense", 1.0))
    if dense is None:
        raise TableError("the published leaderboard has no dense entry: the quantized table compares with it")
    rows = []
    for method in QUANTIZED:
        e = board.get((method, 1.0))
        if e is None:
            continue
        size = e.get("disk_mb_dense_format")
        ratio = (
            DASH
            if size is None or not dense.get("disk_mb_dense_format")
            else f"{size / dense['disk_mb_dense_format']:.0%}"
        )
        delta = DASH
        if e.get("diff_dense") is not None:
            delta = (
                f"{100 * e['diff_dense']:+.1f} pt [{100 * e['diff_dense_low']:+.1f}, {100 * e['diff_dense_high']:+.1f}]"
            )
        rows.append(
            [
                f"`{method}`",
                _seeds(e),
                _score(e),
                delta,
                ratio,
                _pair(e.get("speedup_b1"), e.get("speedup_bmax")),
                _pair(e.get("ort_speedup_b1"), e.get("ort_speedup_bmax")),
            ]
        )
    header = ["row", "seeds", f"score (dense {_score(dense)})", "vs dense", "saved model / dense"]
    header += ["speed-up PyTorch b1 / bmax", "ONNX Runtime b1 / bmax"]
    return _table(header, rows)


def pretrain(root: Path) -> str:
    """Pruned during pre-training against the same method during fine-tuning, per budget (means and seeds)."""
    board = _leaderboard(root)
    rows = []
    for budget in BUDGETS:
        cells = []
        for early, late in PRETRAIN_PAIRS:
            a, b = board.get((early, budget)), board.get((late, budget))
            if a is None and b is None:
                cells.append(DASH)
                continue
            cells.append(f"{_num(a and a['score_mean'])} ({_seeds(a)}) vs {_num(b and b['score_mean'])} ({_seeds(b)})")
        rows.append([f"{budget:g}", *cells])
    header = ["budget", *(f"{early} vs {late} (seeds)" for early, late in PRETRAIN_PAIRS)]
    return _table(header, rows)


def _by_steps(records: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for rec in records:
        steps = steps_of(rec)
        if steps is None:
            raise TableError(f"record {rec['method']}/{rec['budget']}/seed{rec['seed']} does not say its steps")
        out.setdefault(steps, []).append(rec)
    return dict(sorted(out.items()))


def _steps_table(records: list[dict], first_column: str) -> str:
    """Method x fine-tuning length: the mean primary metric over seeds; marks per length: † (finalize changed
    the remaining fraction by more than a quarter, by truncation or fill-up, from what the method's own rule
    kept) and ‡ (the method's calibration was made for another run)."""
    by_steps = {steps: {r.method: r for r in aggregate(recs)} for steps, recs in _by_steps(records).items()}
    methods = sorted({m for rows in by_steps.values() for m in rows}, key=lambda m: (m != "dense", m))
    table = []
    for method in methods:
        cells, marks = [], []
        for steps, rows in by_steps.items():
            row = rows.get(method)
            cells.append(DASH if row is None else f"{_num(row.score)} ({len(row.seeds)})")
            here = []
            if row is not None and row.enforced_by():
                here.append(f"† {row.enforced_by()} from {_num(row.mean('remaining_before_finalize'))}")
            if row is not None and row.calibration_mismatches:
                here.append("‡")
            if here:
                marks.append(f"{steps:,}: {' '.join(here)}")
        table.append([f"`{method}`", *cells, "; ".join(marks)])
    budgets = sorted({float(r["budget"]) for r in records if r["method"] != "dense"})
    header = [f"{first_column} (budget {', '.join(f'{b:g}' for b in budgets)})"]
    header += [f"{steps:,} steps (seeds)" for steps in by_steps] + ["marks"]
    return _table(header, table)


def convergence(root: Path) -> str:
    """The convergence profile: score per method and fine-tuning length."""
    return _steps_table(_records(root, "reports/convergence/records"), "method")


def movement_paper(root: Path) -> str:
    """Movement pruning from the pretrained weights: score per row and fine-tuning length."""
    return _steps_table(_records(root, "reports/movement_paper/records"), "row")


def glue(root: Path) -> str:
    """The glue subset: each task's primary metric per row (mean over seeds; ≤c at or below the task's chance
    level), the tasks out of the cross-task mean with the reason, and each row's mean share of dense with
    its 95% interval (``prunebench.report.cross_task``)."""
    from prunebench.report.cross_task import cross_task_summary, interval_text
    from prunebench.report.uncertainty import load_predictions

    paths = _record_paths(root, "reports/glue/records")
    records = load_records(paths)
    predictions, _ = load_predictions(paths, records)
    with warnings.catch_warnings():  # a task where every model scores 0 (CoLA's MCC) has a degenerate bootstrap
        warnings.simplefilter("ignore", category=getattr(scipy.stats, "DegenerateDataWarning", RuntimeWarning))
        summary = cross_task_summary(records, predictions)
    rows = list(summary.rows)
    scores: dict[tuple[str, str, float], list[float]] = {}
    for rec in records:
        value = rec["metrics"].get(next(t.metric for t in summary.tasks if t.task == rec["task"]), {}).get("value")
        if value is not None:
            scores.setdefault((rec["task"], rec["method"], float(rec["budget"])), []).append(float(value))

    def cell(task: str, method: str, budget: float, at_chance: bool) -> str:
        vals = scores.get((task, method, budget))
        return DASH if not vals else f"{sum(vals) / len(vals):.3f}" + (" ≤c" if at_chance else "")

    table = []
    for info in sorted(summary.tasks, key=lambda t: (not t.in_mean, t.task)):
        label = f"{info.label} ({info.metric})"
        if not info.in_mean:
            label += " — not in the mean: " + "; ".join(r.split(" (")[0].split(":")[0] for r in info.excluded)
        dense = cell(info.task, "dense", 1.0, False) + f" ({len(info.dense_seeds)})"
        table.append([label, dense, *(cell(info.task, r.method, r.budget, info.task in r.at_chance) for r in rows)])
    n = len(summary.mean_tasks)
    table.append(
        [f"**mean share of dense** over the {n} tasks [95% CI]", "1", *(f"**{interval_text(r.mean)}**" for r in rows)]
    )
    header = ["task (metric)", "dense (seeds)", *(f"{r.method} at {r.budget:g}" for r in rows)]
    return _table(header, table)


@dataclass(frozen=True)
class Table:
    render: Callable[[Path], str]
    source: str  # what it is rendered from, relative to the repository root


TABLES: dict[str, Table] = {
    "beyond-survey": Table(beyond_survey, "reports/leaderboard.json"),
    "quantized": Table(quantized, "reports/leaderboard.json"),
    "pretrain": Table(pretrain, "reports/leaderboard.json"),
    "convergence": Table(convergence, "reports/convergence/records"),
    "movement-paper": Table(movement_paper, "reports/movement_paper/records"),
    "glue": Table(glue, "reports/glue/records"),
}


# ----- the blocks in a Markdown file ----------------------------------------------------------------


def _check_markers(text: str, path: Path) -> None:
    for m in START.finditer(text):
        if m.group("name") not in TABLES:
            raise TableError(f"{path}: unknown table {m.group('name')!r} (known: {', '.join(TABLES)})")
    closed = {m.start() for m in BLOCK.finditer(text)}
    for m in START.finditer(text):
        if m.start() not in closed:
            raise TableError(f"{path}: table {m.group('name')!r} has no '<!-- table:{m.group('name')}:end -->'")


def _note(name: str) -> str:
    return (
        f"<!-- generated from {TABLES[name].source} by `python -m prunebench.report.docs_tables --regenerate`;"
        " do not edit -->\n"
    )


def render_file(path: Path, root: Path) -> str:
    """``path``'s text with every table block rendered from its source."""
    text = path.read_text()
    _check_markers(text, path)
    return BLOCK.sub(
        lambda m: (
            f"<!-- table:{m['name']}:start -->\n{_note(m['name'])}{TABLES[m['name']].render(root)}"
            f"<!-- table:{m['name']}:end -->"
        ),
        text,
    )


def check_file(path: Path, root: Path) -> list[str]:
    """Differences between ``path``'s tables and what their sources give (empty: the same)."""
    text, rendered = path.read_text(), render_file(path, root)
    if text == rendered:
        return []
    return list(
        difflib.unified_diff(
            text.splitlines(),
            rendered.splitlines(),
            f"{path} (committed)",
            f"{path} (from the records)",
            lineterm="",
            n=0,
        )
    )


def tables_in(path: Path) -> list[str]:
    return [m.group("name") for m in START.finditer(path.read_text())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prunebench.report.docs_tables", description=__doc__.splitlines()[0]
    )
    parser.add_argument("files", nargs="+", type=Path, help="Markdown files holding table blocks")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root the sources are read from")
    parser.add_argument("--regenerate", action="store_true", help="write the tables instead of checking them")
    args = parser.parse_args(argv)
    try:
        if args.regenerate:
            for path in args.files:
                path.write_text(render_file(path, args.root))
                print(f"wrote {', '.join(tables_in(path)) or 'no tables'} in {path}")
            return 0
        problems = [line for path in args.files for line in check_file(path, args.root)]
    except TableError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    if problems:
        print(
            "FAIL: a generated table differs from what its records give (regenerate: make publish-leaderboard):\n"
            + "\n".join(problems),
            file=sys.stderr,
        )
        return 1
    names = [n for path in args.files for n in tables_in(path)]
    print(f"OK: {len(names)} generated tables ({', '.join(names)}) match their records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
