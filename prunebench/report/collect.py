"""Read result records and aggregate them over seeds: the rows every table and plot uses.

Reading is defensive for the report: ``load_record_set`` takes the *expected* record
paths (the workflow's list) and returns the records that load, plus one ``Problem`` per
path that is missing or does not load (corrupt JSON, schema mismatch), with the error and
the tail of the job's log when there is one; it never raises for a bad record.
``load_records`` stays strict (the leaderboard of a finished run).
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from prunebench.data.metrics import METRIC_META
from prunebench.data.tasks import get_task
from prunebench.records.record import RecordError, read_record

#: finalize changing the remaining fraction by more than this share of what the method's own rule kept: the
#: budget was "enforced by truncation" (removed) or "enforced by fill-up" (added back), mark †
ENFORCEMENT_LIMIT = 0.25


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
    per_matrix: dict[str, list[float]] = field(default_factory=dict)
    method_info: dict = field(default_factory=dict)
    #: per seed: the fraction of the weights the method's own rule had kept that ``finalize``
    #: removed, (before - after) / before (the finalize guard; negative when finalize added weights back);
    #: only seeds whose record says ``details.method.remaining_before_finalize``
    finalize_removed: list[float] = field(default_factory=list)
    #: ``details.method.calibration`` of the seeds whose profile moved away from the calibration
    calibration_mismatches: list[dict] = field(default_factory=list)
    #: uncertainty, tests and tied rank of the entry (``prunebench.report.uncertainty.EntryStats``), set by
    #: ``prunebench.report.uncertainty.attach``; ``None`` when the records have no predictions
    stats: object | None = None

    def mean(self, key: str) -> float | None:
        vals = [v for v in self.values.get(key, []) if v is not None]
        return statistics.fmean(vals) if vals else None

    def std(self, key: str) -> float | None:
        vals = [v for v in self.values.get(key, []) if v is not None]
        return statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)

    @property
    def score(self) -> float | None:
        return self.mean(self.metric)

    @property
    def key(self) -> tuple:
        return (self.task, self.method, self.budget)

    def batch_sizes(self) -> list[int]:
        return sorted(int(k[len("latency_b") :]) for k in self.values if re.fullmatch(r"latency_b\d+", k))

    @property
    def bmax(self) -> int | None:
        sizes = self.batch_sizes()
        return sizes[-1] if sizes else None

    def finalize_change(self) -> float | None:
        """``finalize_removed`` of the seed where finalize changed the most (negative: it added weights back)."""
        return max(self.finalize_removed, key=abs) if self.finalize_removed else None

    def enforced_by(self) -> str | None:
        """ "truncation" or "fill-up" when finalize changed what the method's own rule had kept by more than
        ``ENFORCEMENT_LIMIT`` of it (in the seed with the largest change), else ``None``."""
        change = self.finalize_change()
        if change is None or abs(change) <= ENFORCEMENT_LIMIT:
            return None
        return "truncation" if change > 0 else "fill-up"

    def per_matrix_mean(self) -> dict[str, float]:
        return {k: statistics.fmean(v) for k, v in self.per_matrix.items() if v}


@dataclass
class Problem:
    """An expected record that is missing or does not load."""

    path: str
    status: str  # "missing" or "failed"
    error: str
    task: str | None = None
    method: str | None = None
    budget: str | None = None
    seed: str | None = None
    log: str | None = None
    log_tail: str | None = None


@dataclass
class RecordSet:
    records: list[dict]
    paths: list[str]  # path of each record, same order
    problems: list[Problem]
    expected: list[str]


def expand_record_paths(paths) -> list[str]:
    """Record paths, with a folder standing for every ``seed{N}.json`` under it (not the
    ``seed{N}.predictions.json`` beside them): ``--records reports/records`` works."""
    out = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        p = Path(p)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("seed*.json") if re.fullmatch(r"seed\d+(?:_steps\d+)?\.json", f.name))
        else:
            out.append(str(p))
    return out


_RECORD_RE = re.compile(
    r"records/(?P<task>[^/]+)/(?P<method>[^/]+)/(?P<budget>[^/]+)/seed(?P<seed>\d+(?:_steps\d+)?)\.json$"
)  # seed '0_steps800' in a steps sweep


def parse_record_path(path: str | Path) -> dict[str, str] | None:
    """``{task, method, budget, seed}`` from ``.../records/{task}/{method}/{budget}/seed{seed}.json``."""
    m = _RECORD_RE.search(Path(path).as_posix())
    return m.groupdict() if m else None


def results_dir_of(path: str | Path) -> Path | None:
    """The results folder a record path lies in (the parent of its ``records`` folder)."""
    p = Path(path)
    for parent in p.parents:
        if parent.name == "records":
            return parent.parent
    return None


def log_path_of(path: str | Path) -> Path | None:
    """The Snakemake log of the job that last worked towards the record ``path`` (workflow layout):
    the measure job's log once it started (training had finished), else the training job's."""
    parts, root = parse_record_path(path), results_dir_of(path)
    if parts is None or root is None:
        return None
    measure = root / "logs" / "measure" / parts["task"] / parts["method"] / parts["budget"] / f"seed{parts['seed']}.log"
    if measure.exists():
        return measure
    if parts["method"] == "dense":
        return root / "logs" / parts["task"] / "dense" / f"seed{parts['seed']}.log"
    return root / "logs" / parts["task"] / parts["method"] / parts["budget"] / f"seed{parts['seed']}.log"


def _tail(path: Path, lines: int = 6) -> str | None:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return None
    return "\n".join(text[-lines:]) if text else None


def load_records(paths) -> list[dict]:
    """Strict: every path must be a valid record."""
    return [read_record(p) for p in sorted(Path(p) for p in paths)]


def load_record_set(paths, expected=None) -> RecordSet:
    """Load what exists of ``paths`` (and of ``expected``, default: ``paths``); list the rest."""
    given = expand_record_paths(paths)
    expected = expand_record_paths(expected) if expected is not None else list(given)
    wanted = sorted(set(given) | set(expected))
    records, ok_paths, problems = [], [], []
    for p in wanted:
        parts = parse_record_path(p) or {}
        path = Path(p)
        log = log_path_of(p)
        if not path.exists():
            tail = _tail(log) if log is not None and log.exists() else None
            status = "failed" if tail is not None else "missing"
            error = (
                "no record; the job's log exists (the job failed or was interrupted)"
                if tail
                else "not run (no record, no log)"
            )
            problems.append(Problem(p, status, error, log=str(log) if tail else None, log_tail=tail, **parts))
            continue
        try:
            records.append(read_record(path))
            ok_paths.append(p)
        except RecordError as exc:
            problems.append(
                Problem(
                    p,
                    "failed",
                    str(exc),
                    log=str(log) if log and log.exists() else None,
                    log_tail=_tail(log) if log and log.exists() else None,
                    **parts,
                )
            )
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(p, "failed", f"{type(exc).__name__}: {exc}", **parts))
    return RecordSet(records, ok_paths, problems, expected)


def aggregate(records: list[dict]) -> list[Row]:
    rows: dict[tuple, Row] = {}
    for rec in records:
        key = (rec["task"], rec["method"], rec["budget"])
        metric = get_task(rec["task"]).primary_metric
        details = rec.get("details") or {}
        row = rows.setdefault(
            key,
            Row(
                rec["task"],
                rec["method"],
                rec["budget"],
                [],
                metric,
                hardware=rec["provenance"]["hardware"],
                method_info=details.get("method") or {},
            ),
        )
        row.seeds.append(rec["seed"])
        for name, entry in rec["metrics"].items():
            row.values.setdefault(name, []).append(entry["value"])
        for name, frac in (details.get("per_matrix_remaining") or {}).items():
            if isinstance(frac, (int, float)):
                row.per_matrix.setdefault(name, []).append(float(frac))
        _add_guard(row, rec)
    return sorted(rows.values(), key=lambda r: (r.task, -r.budget, r.method))


def finalize_removed_fraction(rec: dict) -> float | None:
    """The finalize guard: the share of the weights the method's own rule had kept that ``finalize``
    removed, ``(before - after) / before`` with before = ``details.method.remaining_before_finalize``
    and after = the record's measured ``encoder_remaining``: negative when ``finalize`` added weights back
    (a fill-up to the budget); ``None`` when the record does not say."""
    before = ((rec.get("details") or {}).get("method") or {}).get("remaining_before_finalize")
    after = (rec.get("metrics", {}).get("encoder_remaining") or {}).get("value")
    if not (_finite(before) and _finite(after)) or before <= 0:
        return None
    return (before - after) / before


def _add_guard(row: Row, rec: dict) -> None:
    removed = finalize_removed_fraction(rec)
    if removed is not None:
        row.finalize_removed.append(removed)
        before = rec["details"]["method"]["remaining_before_finalize"]
        row.values.setdefault("remaining_before_finalize", []).append(float(before))
    calibration = ((rec.get("details") or {}).get("method") or {}).get("calibration")
    if (
        isinstance(calibration, dict)
        and calibration.get("matches") is False
        and calibration not in row.calibration_mismatches
    ):
        row.calibration_mismatches.append(calibration)


def higher_is_better(metric: str) -> bool:
    return METRIC_META.get(metric, METRIC_META["accuracy"]).higher_is_better


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


#: speed-up metric prefix -> backend name (``{prefix}_b{batch}`` is the speed-up over dense at that batch)
BACKEND_NAMES = {"speedup": "PyTorch", "ort_speedup": "ONNX Runtime", "ds_speedup": "DeepSparse"}


def best_backend(r: Row, batch: int | None) -> tuple[str | None, float | None]:
    """The backend with the largest mean speed-up of ``r`` at ``batch`` (name, speed-up), or (None, None)."""
    if batch is None:
        return None, None
    found = {name: r.mean(f"{key}_b{batch}") for key, name in BACKEND_NAMES.items()}
    found = {k: v for k, v in found.items() if v is not None}
    if not found:
        return None, None
    name = max(found, key=found.get)
    return name, found[name]


def pareto_front(rows: list[Row], cost_key: str | None = None, cost=None) -> set[tuple]:
    """Keys (task, method, budget) of rows no other row of the same task beats on both a
    better score and a lower cost. Cost: the mean of metric ``cost_key`` or ``cost(row)``."""
    cost = cost or (lambda r: r.mean(cost_key))
    front = set()
    for r in rows:
        s, c = r.score, cost(r)
        if not (_finite(s) and _finite(c)):
            continue
        sign = 1 if higher_is_better(r.metric) else -1
        dominated = False
        for o in rows:
            os_, oc = o.score, cost(o)
            if o is r or o.task != r.task or not (_finite(os_) and _finite(oc)):
                continue
            if sign * os_ >= sign * s and oc <= c and (sign * os_ > sign * s or oc < c):
                dominated = True
                break
        if not dominated:
            front.add(r.key)
    return front


def dense_row(rows: list[Row], task: str) -> Row | None:
    return next((r for r in rows if r.task == task and r.method == "dense"), None)


# ----- Snakemake benchmark files --------------------------------------------------------------


def rule_of_benchmark(rel: Path) -> str:
    """The workflow rule that wrote a benchmark file, from its path under ``benchmarks/``."""
    parts = rel.parts
    if parts[0] == "analysis":
        return re.sub(r"_seed\d+$", "", rel.stem)  # analysis/{task}/head_ablation_seed0.tsv
    if parts[0] == "measure":
        return "measure"  # measure/{task}/{method}/{budget}/seed0.tsv
    if len(parts) == 1:
        return rel.stem  # leaderboard.tsv, report.tsv, paper_figures.tsv ...
    if len(parts) == 3 and parts[1] == "dense":
        return "finetune_dense"
    if len(parts) == 4:
        return "prune"
    return "/".join(parts[:-1]) or rel.stem


def read_benchmarks(folder: str | Path | None) -> list[dict]:
    """One entry per benchmark TSV under ``folder``: the job, its rule and its wall time ``s``."""
    if folder is None or not Path(folder).is_dir():
        return []
    out = []
    for path in sorted(Path(folder).rglob("*.tsv")):
        rel = path.relative_to(folder)
        entry = {
            "job": rel.with_suffix("").as_posix(),
            "rule": rule_of_benchmark(rel),
            "s": None,
            "max_rss": None,
            "cpu_time": None,
            "error": None,
        }
        try:
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            if not rows:
                raise ValueError("empty benchmark file")
            last = rows[-1]  # a repeated benchmark has one line per repeat; the last is kept
            for k in ("s", "max_rss", "cpu_time"):
                try:
                    entry[k] = float(last.get(k)) if last.get(k) not in (None, "", "NA", "-") else None
                except ValueError:
                    entry[k] = None
        except (OSError, ValueError, csv.Error) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out.append(entry)
    return out


def wall_time_per_rule(benchmarks: list[dict]) -> list[dict]:
    rules: dict[str, dict] = {}
    for b in benchmarks:
        r = rules.setdefault(b["rule"], {"rule": b["rule"], "jobs": 0, "total_s": None, "max_s": None})
        r["jobs"] += 1
        if b["s"] is not None:
            r["total_s"] = (r["total_s"] or 0.0) + b["s"]
            r["max_s"] = max(r["max_s"] or 0.0, b["s"])
    return sorted(rules.values(), key=lambda r: -(r["total_s"] or 0.0))
