"""Read the redundancy analyses for the report, defensively.

``{results}/analysis/{task}/head_ablation_seed{seed}.json`` (heads masked) and
``head_ablation_uniform_seed{seed}.json`` (uniform attention) are written by
``prunebench.analysis.head_ablation``: ``baseline``, ``single_head_disabled`` (layers x heads),
``one_head_kept`` (layers x heads) with ``best_one_head_score`` (per layer),
``layer_attention_disabled`` (per layer), ``metric``, ``disable`` (how a head is disabled).
A file that is unreadable or lacks a field is reported with the reason, never a crash;
ragged matrices are padded with NaN.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

_FILE_RE = re.compile(r"head_ablation(?:_(?P<mode>uniform))?_seed(?P<seed>\d+)\.json$")


@dataclass
class HeadAblation:
    path: str
    task: str
    seed: int | None
    mode: str = "mask"
    baseline: float | None = None
    metric: str = "accuracy"
    disable: str | None = None
    single: list[list[float]] | None = None  # layers x heads
    kept: list[list[float]] | None = None  # layers x heads
    best_kept: list[float] | None = None  # per layer
    layer_disabled: list[float] | None = None  # per layer
    eval_examples: int | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def _num(x):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _matrix(x) -> list[list[float]] | None:
    if not isinstance(x, list) or not x or not all(isinstance(r, list) for r in x):
        return None
    width = max(len(r) for r in x)
    if width == 0:
        return None
    return [[(_num(v) if _num(v) is not None else math.nan) for v in r] + [math.nan] * (width - len(r)) for r in x]


def _vector(x) -> list[float] | None:
    if not isinstance(x, list) or not x:
        return None
    vals = [_num(v) for v in x]
    return vals if any(v is not None for v in vals) else None


def read_head_ablation(path: str | Path, task: str | None = None) -> HeadAblation:
    path = Path(path)
    m = _FILE_RE.search(path.name)
    out = HeadAblation(
        str(path),
        task or path.parent.name,
        int(m.group("seed")) if m else None,
        (m.group("mode") or "mask") if m else "mask",
    )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        out.error = f"unreadable: {type(exc).__name__}: {exc}"
        return out
    if not isinstance(data, dict):
        out.error = "not a JSON object"
        return out
    out.baseline = _num(data.get("baseline"))
    out.metric = str(data.get("metric") or "accuracy")
    out.disable = data.get("disable") if isinstance(data.get("disable"), str) else None
    out.eval_examples = data.get("eval_examples") if isinstance(data.get("eval_examples"), int) else None
    out.single = _matrix(data.get("single_head_disabled"))
    if out.single is None and _matrix(data.get("single_head_delta")) is not None and out.baseline is not None:
        out.single = [[out.baseline + v for v in row] for row in _matrix(data["single_head_delta"])]
    out.kept = _matrix(data.get("one_head_kept"))
    out.best_kept = _vector(data.get("best_one_head_score"))
    if out.best_kept is None and out.kept is not None:
        out.best_kept = [max((v for v in row if not math.isnan(v)), default=None) for row in out.kept]
    out.layer_disabled = _vector(data.get("layer_attention_disabled"))
    for name, value in (
        ("single-head matrix", out.single),
        ("all-but-one per layer", out.best_kept),
        ("per-layer disabled", out.layer_disabled),
        ("baseline", out.baseline),
    ):
        if value is None:
            out.notes.append(f"{name} missing")
    if out.single is None and out.best_kept is None and out.layer_disabled is None:
        out.error = "no ablation data (expected single_head_disabled, one_head_kept, layer_attention_disabled)"
    return out


def find_head_ablations(analysis_dir: str | Path | None) -> list[HeadAblation]:
    if analysis_dir is None or not Path(analysis_dir).is_dir():
        return []
    paths = [p for p in sorted(Path(analysis_dir).glob("*/head_ablation*_seed*.json")) if _FILE_RE.search(p.name)]
    return [read_head_ablation(p) for p in paths]
