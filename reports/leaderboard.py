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
"""

from __future__ import annotations

import csv
from pathlib import Path

from prunebench.records import write_json_atomic
from reports.collect import Problem, aggregate, load_record_set, pareto_front

BUDGET_TOLERANCE = 0.005  # absolute, in fraction of encoder weights remaining

COLUMNS = ["task", "budget", "rank", "method", "seeds", "score_metric", "score_mean", "score_std",
           "encoder_remaining", "met_budget", "latency_b1_ms", "speedup_b1", "bmax", "latency_bmax_ms", "speedup_bmax",
           "disk_mb_dense_format", "disk_mb_sparse_format", "pareto_optimal", "pareto_disk", "pareto_latency_b1",
           "pareto_latency_bmax", "hardware"]


def hardware_text(hw: dict) -> str:
    if not hw:
        return "unknown"
    mem = f", {hw['memory_gib']} GiB" if hw.get("memory_gib") else ""
    return f"{hw.get('cpu', '?')}, {hw.get('logical_cores', '?')} logical cores{mem}, GPU: {hw.get('gpu') or 'none'}"


def leaderboard_rows(records: list[dict]) -> list[dict]:
    rows = aggregate(records)
    front = pareto_front(rows, "encoder_remaining")
    front_disk = pareto_front(rows, "disk_bytes_sparse_format")
    front_b1 = pareto_front(rows, "latency_b1")
    front_bmax = pareto_front(rows, cost=lambda r: r.mean(f"latency_b{r.bmax}") if r.bmax else None)
    out = []
    for task in sorted({r.task for r in rows}):
        for budget in sorted({r.budget for r in rows if r.task == task}, reverse=True):
            group = [r for r in rows if r.task == task and r.budget == budget]
            met = {r.key: met_budget(r) for r in group}
            group.sort(key=lambda r: (not met[r.key], -(r.score if r.score is not None else float("-inf")), r.method))
            ranks = iter(range(1, len(group) + 1))
            for r in group:
                rank = next(ranks) if met[r.key] else None
                bmax = r.bmax
                disk_d, disk_s = r.mean("disk_bytes_dense_format"), r.mean("disk_bytes_sparse_format")
                out.append({
                    "task": task, "budget": budget, "rank": rank, "met_budget": met[r.key], "method": r.method,
                    "seeds": len(r.seeds),
                    "score_metric": r.metric, "score_mean": r.score, "score_std": r.std(r.metric),
                    "encoder_remaining": r.mean("encoder_remaining"),
                    "latency_b1_ms": r.mean("latency_b1"), "speedup_b1": r.mean("speedup_b1"), "bmax": bmax,
                    "latency_bmax_ms": r.mean(f"latency_b{bmax}") if bmax else None,
                    "speedup_bmax": r.mean(f"speedup_b{bmax}") if bmax else None,
                    "disk_mb_dense_format": disk_d / 1e6 if disk_d else None,
                    "disk_mb_sparse_format": disk_s / 1e6 if disk_s else None,
                    "pareto_optimal": r.key in front,
                    "pareto_disk": r.key in front_disk,
                    "pareto_latency_b1": r.key in front_b1,
                    "pareto_latency_bmax": r.key in front_bmax,
                    "hardware": hardware_text(r.hardware),
                })
    return out


def met_budget(row) -> bool:
    """Whether an entry reached its budget: budget-free rows (budget 1) always do."""
    remaining = row.mean("encoder_remaining")
    return row.budget >= 1.0 or (remaining is not None and remaining <= row.budget + BUDGET_TOLERANCE)


def _rank_cell(row: dict) -> str:
    if row["rank"] is not None:
        return str(row["rank"])
    return "– (budget not reached)"


def _fmt(value, digits=3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "★" if value else ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(rows: list[dict], records: list[dict], problems: list[Problem] | None = None) -> str:
    hw = records[0]["provenance"]["hardware"] if records else {}
    m = (records[0].get("details") or {}).get("measurement", {}) if records else {}
    lines = [
        "# prunebench leaderboard", "",
        f"Hardware: {hardware_text(hw)}; "
        f"latency backend {m.get('backend', '?')}, {m.get('threads', '?')} threads, sequence length {m.get('seq_len', '?')}, "
        f"batch sizes {m.get('batch_sizes', '?')}. ★ = Pareto-optimal: score vs. encoder weights remaining (Pareto), "
        "vs. bytes on disk in the sparse format (disk), vs. latency at batch 1 (b1) and at the largest batch (bmax). "
        f"Ranked: entries whose remaining fraction is within {BUDGET_TOLERANCE} of the budget; a method whose "
        "structure cannot reach the budget is listed after them, unranked, with the fraction it reached.", "",
        "| task | budget | rank | method | seeds | score (mean ± std) | remaining | latency b1 (ms) | speed-up b1 | "
        "latency bmax (ms) | speed-up bmax | disk MB (dense fmt / sparse fmt) | Pareto | disk | b1 | bmax |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['budget']:g} | {_rank_cell(r)} | {r['method']} | {r['seeds']} | "
            f"{r['score_metric']} {_fmt(r['score_mean'], 4)} ± {_fmt(r['score_std'], 4)} | {_fmt(r['encoder_remaining'], 4)} | "
            f"{_fmt(r['latency_b1_ms'], 2)} | {_fmt(r['speedup_b1'], 2)} | {_fmt(r['latency_bmax_ms'], 1)} | "
            f"{_fmt(r['speedup_bmax'], 2)} | {_fmt(r['disk_mb_dense_format'], 1)} / {_fmt(r['disk_mb_sparse_format'], 1)} | "
            f"{_fmt(r['pareto_optimal'])} | {_fmt(r['pareto_disk'])} | {_fmt(r['pareto_latency_b1'])} | "
            f"{_fmt(r['pareto_latency_bmax'])} |")
    if problems:
        lines += ["", f"Runs missing or failed ({len(problems)}):", ""]
        lines += [f"- `{p.path}`: {p.status}: {p.error.splitlines()[0] if p.error else ''}" for p in problems]
    return "\n".join(lines) + "\n"


def write_leaderboard(record_paths, markdown: Path, csv_path: Path, expected=None) -> list[dict]:
    """Markdown + CSV (+ JSON beside the CSV) from whatever of ``record_paths`` loads."""
    rs = load_record_set(record_paths, expected)
    rows = leaderboard_rows(rs.records)
    markdown = Path(markdown)
    csv_path = Path(csv_path)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(to_markdown(rows, rs.records, rs.problems))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_json_atomic(rows, csv_path.with_suffix(".json"))
    return rows
