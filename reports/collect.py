"""Read result records and aggregate them over seeds: the rows every table and plot uses."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from prunebench.metrics import METRIC_META
from prunebench.records import read_record
from prunebench.tasks import get_task


@dataclass
class Row:
    """One (task, method, budget) point, aggregated over its seeds."""

    task: str
    method: str
    budget: float
    seeds: list[int]
    metric: str  # the task's primary metric
    values: dict[str, list[float]] = field(default_factory=dict)
    hardware: dict = field(default_factory=dict)

    def mean(self, key: str) -> float | None:
        vals = [v for v in self.values.get(key, []) if v is not None]
        return statistics.fmean(vals) if vals else None

    def std(self, key: str) -> float | None:
        vals = [v for v in self.values.get(key, []) if v is not None]
        return statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)

    @property
    def score(self) -> float | None:
        return self.mean(self.metric)


def load_records(paths) -> list[dict]:
    return [read_record(p) for p in sorted(Path(p) for p in paths)]


def aggregate(records: list[dict]) -> list[Row]:
    rows: dict[tuple, Row] = {}
    for rec in records:
        key = (rec["task"], rec["method"], rec["budget"])
        metric = get_task(rec["task"]).primary_metric
        row = rows.setdefault(key, Row(rec["task"], rec["method"], rec["budget"], [], metric,
                                       hardware=rec["provenance"]["hardware"]))
        row.seeds.append(rec["seed"])
        for name, entry in rec["metrics"].items():
            row.values.setdefault(name, []).append(entry["value"])
    return sorted(rows.values(), key=lambda r: (r.task, -r.budget, r.method))


def pareto_front(rows: list[Row], cost_key: str) -> set[tuple]:
    """Keys (task, method, budget) of rows no other row beats on both score and lower cost."""
    front = set()
    higher = METRIC_META.get(rows[0].metric, METRIC_META["accuracy"]).higher_is_better if rows else True
    for r in rows:
        s, c = r.score, r.mean(cost_key)
        if s is None or c is None:
            continue
        s = s if higher else -s
        dominated = False
        for o in rows:
            os_, oc = o.score, o.mean(cost_key)
            if o is r or os_ is None or oc is None or o.task != r.task:
                continue
            os_ = os_ if higher else -os_
            if os_ >= s and oc <= c and (os_ > s or oc < c):
                dominated = True
                break
        if not dominated:
            front.add((r.task, r.method, r.budget))
    return front
