"""Converged dense references: how short is the common fine-tuning budget?

The benchmark's verdicts are made at a short common fine-tuning budget (200 steps in the default
profile). To say how far that is from convergence, the same dense model fine-tuned much longer on
the same data (e.g. 3 epochs) is kept as a *reference*: a training summary written by
``python -m prunebench dense`` with ``finetune.steps`` raised, committed under
``reports/reference/{task}_dense_steps{N}_seed{S}.json``. The report compares it with the dense
records of the run and prints the gap next to the verdicts; the leaderboard does not rank it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prunebench.data.tasks import get_task

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "reports" / "reference"


@dataclass(frozen=True)
class Reference:
    task: str
    model: str
    metric: str
    value: float
    steps: int
    batch_size: int
    seed: int
    precision: str | None
    path: str


def load_references(folder: Path | str | None = None) -> list[Reference]:
    """Every reference summary under ``folder`` (default ``reports/reference``); a file that is not a
    dense training summary raises ValueError naming it."""
    folder = Path(folder) if folder is not None else DEFAULT_DIR
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.endswith(".predictions.json"):
            continue
        try:
            s = json.loads(path.read_text())
            metric = get_task(s["task"]).primary_metric
            ft = s["config"]["finetune"]
            training = s["details"]["training"]
            ref = Reference(
                s["task"],
                str(s["config"]["model"]),
                metric,
                float(s["metrics"][metric]["value"]),
                int(training["steps"]),
                int(ft["batch_size"]),
                int(s["seed"]),
                training.get("precision"),
                str(path),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a dense training summary usable as a converged reference ({exc})") from exc
        if s.get("method") != "dense":
            raise ValueError(f"{path}: a converged reference must be a dense training summary, not {s.get('method')!r}")
        out.append(ref)
    return out


def budget_gaps(records: list[dict], references: list[Reference]) -> list[dict]:
    """Per task with a reference of the same model: the run's dense metric (mean over seeds) at its
    fine-tuning length against the converged reference, and the gap in points."""
    rows = []
    for ref in references:
        dense = [
            r
            for r in records
            if r.get("task") == ref.task
            and r.get("method") == "dense"
            and r.get("config", {}).get("model") == ref.model
            and ref.metric in r.get("metrics", {})
        ]
        if not dense:
            continue
        value = sum(r["metrics"][ref.metric]["value"] for r in dense) / len(dense)
        steps = sorted({int(r["config"]["finetune"]["steps"]) for r in dense})
        rows.append(
            {
                "task": ref.task,
                "model": ref.model,
                "metric": ref.metric,
                "run_steps": steps,
                "run_value": value,
                "run_seeds": len(dense),
                "reference_steps": ref.steps,
                "reference_value": ref.value,
                "reference_seed": ref.seed,
                "gap_points": 100 * (ref.value - value),
                "short": max(steps) < ref.steps,
                "path": ref.path,
            }
        )
    return rows
