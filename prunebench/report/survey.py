"""The survey's comparison table, measured: claims from ``survey.yaml`` beside our numbers.

One row per paper and task. Each of the survey's five columns (Memory, Inference,
Component, Pretrain, Performance) becomes a ``Cell`` with the survey's cell, the paper's
own claim (with its verification tag), our measured value and a status:

- ``agree`` / ``disagree``: the claim and the measurement say the same / different things,
  by the rules below;
- ``caveat``: agrees on the claim's own terms but the measurement shows a qualification
  (e.g. 10% of the encoder remains, but the saved model is still 55% of the dense one);
- ``no-claim``: measured, but nothing numeric or categorical to compare with;
- ``not-measured``: no measurement, with the reason (method not implemented, not run in
  this profile, needs pre-training, no run near the claimed budget).

Rules (all in this module, thresholds named below):

- Memory: ``basis: encoder`` claims are checked against the measured fraction of encoder
  weights remaining, and the whole model on disk (the smaller of the dense and sparse
  formats, dense model = 100%) is shown beside it; more than ``DISK_SLACK`` above the
  claimed range is a caveat. ``basis: model`` claims are checked against disk directly.
- Inference: measured speed-up within ``SPEEDUP_TOL`` of the claimed one agrees; slower
  disagrees; faster is a caveat (other hardware). The verdict uses the PyTorch speed-up; where a
  record also has ONNX Runtime's (``ort_speedup_b*``), the measured line shows it beside.
- Component: the kinds of structure removed (``kinds``) must intersect.
- Pretrain: a paper that compresses during pre-training is measured by its rows that started
  from the pre-training stage (``starts_from: pretrain``: ``gordon_pretrain``, ``rpp_pretrain``,
  ``layerdrop_pretrain``; ``prunebench.training.pretrain``) -- agree when such a row ran, with the
  stage's length in the measured line; without one it is not measured ("needs pre-training").
  Rows that compress while fine-tuning agree with a paper that does the same.
  ``pretrain_comparison`` pairs each pre-training row with the row that applies the same method
  during fine-tuning (``finetune_counterpart``) at the same task and budget, and
  ``mlm_loss_points`` lists the stage's held-out MLM loss against sparsity (Gordon et al.'s question:
  does pruning in pre-training delete what transfer needs?), both from the records alone.
- Performance: our score minus the dense score, in points, is put in a category
  (``categorize``) and compared with the claimed category on an ordinal scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prunebench.method import registry
from prunebench.report.collect import Row, dense_row

SURVEY_PATH = Path(__file__).with_name("survey.yaml")
COLUMNS = ["memory", "inference", "component", "pretrain", "performance"]
COLUMN_TITLES = {
    "memory": "Memory (dense = 100%)",
    "inference": "Inference (speed-up)",
    "component": "Component",
    "pretrain": "Pretrain",
    "performance": "Performance (vs. dense)",
}

#: Tolerances of the comparison rules.
RANGE_SLACK = 0.02  # a run counts as "at" a claimed remaining fraction within this distance
DISK_SLACK = 0.10  # whole-model disk fraction above the claimed range by more than this: caveat
SPEEDUP_TOL = 0.10  # x
SAME_PTS = 0.5  # |delta| below this: same
SLIGHT_PTS = 2.0  # delta down to -this: slightly worse
CATEGORY_ORDER = {"worse": 0, "slightly_worse": 1, "same": 2, "better": 3}
CATEGORY_ALIASES = {
    "similar": "same",
    "slightly worse": "slightly_worse",
    "slightly_worse": "slightly_worse",
    "same": "same",
    "worse": "worse",
    "better": "better",
}
#: The survey's Component cells as kinds of structure removed.
SURVEY_COMPONENTS = {
    "all weights": ["element"],
    "layers and heads.": ["layer", "head"],
    "layers and heads": ["layer", "head"],
    "attention heads": ["head", "attention-pattern"],
    "transformer layers": ["layer"],
    "matrix multiplication": ["matrix-rank"],
}
#: A method's declared granularity as kinds.
GRANULARITY_KINDS = {
    "element": ["element"],
    "head": ["head"],
    "heads": ["head"],
    "layer": ["layer"],
    "layers": ["layer"],
    "matrix-rank": ["matrix-rank"],
    "rank": ["matrix-rank"],
    "attention-pattern": ["attention-pattern", "head"],
    "int8-weights": ["int8-weights"],
    "int4-weights": ["int4-weights"],
    "ffn-unit": ["ffn-unit"],
    "head+ffn": ["head", "ffn-unit"],
}


@dataclass
class Cell:
    column: str
    survey: str | None = None  # the survey table's cell, verbatim
    claim: dict | None = None  # the paper's claim: text, tag, source (+ machine fields)
    measured: list[str] = field(default_factory=list)  # one line per run group
    status: str = "not-measured"  # agree | disagree | caveat | no-claim | not-measured
    reason: str = ""  # why, in words (the comparison or why not measured)


@dataclass
class SurveyRow:
    paper: dict
    task: str
    methods: list[str]
    run_methods: list[str]
    budgets: list[float]
    cells: dict[str, Cell]

    @property
    def statuses(self) -> list[str]:
        return [c.status for c in self.cells.values()]


def load_survey(path: str | Path | None = None) -> dict:
    data = yaml.safe_load(Path(path or SURVEY_PATH).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("papers"), list):
        raise ValueError(f"{path or SURVEY_PATH}: expected a mapping with a 'papers' list")
    for p in data["papers"]:
        for key in ("key", "title", "arxiv", "methods"):
            if key not in p:
                raise ValueError(f"{path or SURVEY_PATH}: paper {p.get('key', '?')} lacks {key!r}")
    return data


def _registered() -> set[str]:
    try:
        return set(registry.available())
    except Exception:  # the report renders even if a method module is broken
        return set()


def categorize(delta_pts: float) -> str:
    """Score minus dense score, in points, as a category (thresholds ``SAME_PTS``, ``SLIGHT_PTS``)."""
    delta_pts = round(delta_pts, 6)  # -2.0000000000000018 is -2.0
    if delta_pts >= SAME_PTS:
        return "better"
    if delta_pts > -SAME_PTS:
        return "same"
    if delta_pts >= -SLIGHT_PTS:
        return "slightly_worse"
    return "worse"


def _pct(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _label(r: Row) -> str:
    """``method @ budget``, with † and how when finalize, not the method's own rule, set the remaining fraction."""
    enforced = r.enforced_by()
    return f"{r.method} @ {r.budget:g}" + (f" † (budget enforced by {enforced})" if enforced else "")


def _in_range(value: float | None, rng, slack: float = RANGE_SLACK) -> bool:
    return value is not None and rng is not None and rng[0] - slack <= value <= rng[1] + slack


def _disk_fraction(r: Row, dense: Row | None) -> tuple[float | None, float | None, float | None]:
    """(best, sparse-format, dense-format) bytes on disk over the dense model's dense-format file."""
    base = dense.mean("disk_bytes_dense_format") if dense else None
    if not base:
        return None, None, None
    s, d = r.mean("disk_bytes_sparse_format"), r.mean("disk_bytes_dense_format")
    fs, fd = (s / base if s else None), (d / base if d else None)
    best = min(v for v in (fs, fd) if v is not None) if (fs or fd) else None
    return best, fs, fd


def _budget_free(r: Row) -> bool:
    return r.budget == 1.0 and r.method != "dense"


def _runs_for_claim(rows: list[Row], rng) -> tuple[list[Row], bool]:
    """Runs at the claimed remaining range (budget-free rows always count); else the nearest."""
    if not rows:
        return [], False
    if rng is None:
        return rows, True
    hit = [r for r in rows if _budget_free(r) or _in_range(r.mean("encoder_remaining"), rng)]
    if hit:
        return hit, True
    mid = (rng[0] + rng[1]) / 2
    nearest = min(rows, key=lambda r: abs((r.mean("encoder_remaining") or r.budget) - mid))
    return [nearest], False


def _claim(paper: dict, column: str) -> dict | None:
    c = (paper.get("claims") or {}).get(column)
    return c if isinstance(c, dict) else None


def _survey_cell(paper: dict, column: str) -> str | None:
    s = paper.get("survey")
    return None if not isinstance(s, dict) or s.get(column) is None else str(s[column])


def _na(text: str | None) -> bool:
    return text is None or text.strip().upper() in ("N/A", "NA", "")


# ----- one cell per column ----------------------------------------------------------------


def memory_cell(paper, rows, dense) -> Cell:
    cell = Cell("memory", _survey_cell(paper, "memory"), _claim(paper, "memory"))
    for r in rows:
        best, fs, fd = _disk_fraction(r, dense)
        cell.measured.append(
            f"{_label(r)}: encoder {_pct(r.mean('encoder_remaining'), 1)} · disk {_pct(best)}"
            f" (sparse fmt {_pct(fs)}, dense fmt {_pct(fd)})"
        )
    if not rows:
        return cell
    claim = cell.claim or {}
    rng = claim.get("remaining")
    if rng is None:
        cell.status, cell.reason = "no-claim", "no numeric memory claim"
        return cell
    runs, exact = _runs_for_claim(rows, rng)
    if not exact:
        cell.status = "not-measured"
        cell.reason = (
            f"no run near the claimed {_pct(rng[0])}–{_pct(rng[1])} remaining "
            f"(nearest: {_label(runs[0])}, encoder {_pct(runs[0].mean('encoder_remaining'), 1)})"
        )
        return cell
    disks = [d for d in (_disk_fraction(r, dense)[0] for r in runs) if d is not None]
    disk = min(disks) if disks else None
    if claim.get("basis", "encoder") == "model":
        if disk is None:
            cell.status, cell.reason = "not-measured", "no bytes-on-disk measurement"
        elif disk <= rng[1] + DISK_SLACK:
            cell.status, cell.reason = "agree", f"saved model {_pct(disk)} of dense (claimed {_pct(rng[1])})"
        else:
            cell.status = "disagree"
            cell.reason = f"saved model {_pct(disk)} of dense, claimed {_pct(rng[1])}"
        return cell
    if disk is not None and disk > rng[1] + DISK_SLACK:
        cell.status = "caveat"
        cell.reason = (
            f"encoder remaining as claimed, but the whole saved model is {_pct(disk)} of dense: "
            "embeddings, biases and sparse-format indices stay"
        )
    else:
        cell.status, cell.reason = "agree", "encoder remaining within the claimed range"
    return cell


def inference_cell(paper, rows, dense) -> Cell:
    cell = Cell("inference", _survey_cell(paper, "inference"), _claim(paper, "inference"))
    for r in rows:
        b1, bmax = r.mean("speedup_b1"), (r.mean(f"speedup_b{r.bmax}") if r.bmax else None)
        parts = [f"×{b1:.2f} at batch 1{_ort_note(r, 1)}" if b1 is not None else "batch 1 n/a"]
        if r.bmax and r.bmax != 1:
            parts.append(
                f"×{bmax:.2f} at batch {r.bmax}{_ort_note(r, r.bmax)}" if bmax is not None else f"batch {r.bmax} n/a"
            )
        cell.measured.append(f"{_label(r)}: " + ", ".join(parts))
    if not rows:
        return cell
    claim = cell.claim or {}
    wanted = {k: claim[k] for k in ("speedup_b1", "speedup_bmax") if claim.get(k) is not None}
    if not wanted:
        cell.status, cell.reason = "no-claim", "no numeric speed-up claimed"
        return cell
    runs, exact = _runs_for_claim(rows, claim.get("at_remaining"))
    if not exact:
        cell.status, cell.reason = "not-measured", f"no run at the claimed {_pct(claim['at_remaining'][0])} remaining"
        return cell
    verdicts = []
    for key, claimed in wanted.items():
        vals = [
            v
            for v in (
                (r.mean("speedup_b1") if key == "speedup_b1" else (r.mean(f"speedup_b{r.bmax}") if r.bmax else None))
                for r in runs
            )
            if v is not None
        ]
        if not vals:
            continue
        best = max(vals)
        which = "batch 1" if key == "speedup_b1" else "max batch"
        if best < claimed - SPEEDUP_TOL:
            verdicts.append(("disagree", f"{which}: ×{best:.2f} measured, ×{claimed:.2f} claimed"))
        elif best > claimed + SPEEDUP_TOL:
            verdicts.append(
                ("caveat", f"{which}: ×{best:.2f} measured, faster than the claimed ×{claimed:.2f} (other hardware)")
            )
        else:
            verdicts.append(("agree", f"{which}: ×{best:.2f} measured, ×{claimed:.2f} claimed"))
    if not verdicts:
        cell.status, cell.reason = "not-measured", "no latency measurement"
        return cell
    cell.status = _worst(v for v, _ in verdicts)
    cell.reason = "; ".join(t for _, t in verdicts)
    return cell


def _ort_note(r: Row, batch: int) -> str:
    """ " (ONNX Runtime ×1.31)" where the records have the ORT speed-up at ``batch``, else ""."""
    v = r.mean(f"ort_speedup_b{batch}")
    return "" if v is None else f" (ONNX Runtime ×{v:.2f})"


def _worst(statuses) -> str:
    order = ["disagree", "caveat", "agree"]
    statuses = list(statuses)
    return next((s for s in order if s in statuses), "no-claim")


def observed_structure(r: Row) -> str:
    pm = r.per_matrix_mean()
    parts = []
    stored = r.mean("encoder_stored_fraction")
    if stored is not None and stored < 0.999:
        parts.append(f"shapes shrunk (stored {_pct(stored)})")
    if pm:
        zero = sum(1 for v in pm.values() if v == 0.0)
        lo, hi = min(pm.values()), max(pm.values())
        parts.append(f"per-matrix remaining {_pct(lo)}–{_pct(hi)}")
        if zero:
            parts.append(f"{zero} of {len(pm)} matrices emptied")
    return ", ".join(parts) or "no per-matrix data"


def _kinds_of(r: Row) -> list[str]:
    g = str(r.method_info.get("granularity") or "element")
    return GRANULARITY_KINDS.get(g, [g])


def component_cell(paper, rows, dense) -> Cell:
    cell = Cell("component", _survey_cell(paper, "component"), _claim(paper, "component"))
    seen: dict[str, Row] = {}
    for r in rows:
        seen.setdefault(r.method, r)
    measured_kinds: set[str] = set()
    for method, r in seen.items():
        kinds = _kinds_of(r)
        measured_kinds |= set(kinds)
        lowest = min((x for x in rows if x.method == method), key=lambda x: x.budget)
        cell.measured.append(f"{method}: {'/'.join(kinds)} ({observed_structure(lowest)} at {lowest.budget:g})")
    if not rows:
        return cell
    survey = cell.survey
    if not _na(survey):
        claimed = SURVEY_COMPONENTS.get(survey.strip().lower())
        basis = f"survey: {survey.strip()}"
    else:
        claimed = (cell.claim or {}).get("kinds")
        basis = "paper"
    if not claimed:
        cell.status, cell.reason = "no-claim", "no component claimed"
        return cell
    if measured_kinds & set(claimed):
        cell.status = "agree"
        cell.reason = f"{basis} → {'/'.join(claimed)}; measured {'/'.join(sorted(measured_kinds))}"
    else:
        cell.status = "disagree"
        cell.reason = (
            f"{basis} → {'/'.join(claimed)}, but our implementation removes {'/'.join(sorted(measured_kinds))}"
        )
        paper_kinds = (cell.claim or {}).get("kinds")
        if paper_kinds and measured_kinds & set(paper_kinds) and not _na(survey):
            cell.reason += " (as the paper says: the survey's cell differs from the paper)"
    return cell


def _stage_text(r: Row) -> str:
    """ "gordon_pretrain @ 0.5: magnitude_local over 2,400 MLM steps, held-out loss 2.10 -> 2.31 at 50% remaining"."""
    pre = r.method_info.get("pretrain") or {}
    final = pre.get("final") or {}
    steps = (pre.get("training") or {}).get("steps")
    loss = final.get("mlm_loss")
    start = final.get("mlm_loss_start")
    text = f"{_label(r)}: {pre.get('stage_method') or r.method_info.get('stage_method') or '?'}"
    if steps:
        text += f" over {steps:,} MLM steps"
    if loss is not None and start is not None:
        text += f", held-out MLM loss {start:.2f} → {loss:.2f} at {_pct(final.get('remaining'))} remaining"
    return text


def pretrain_cell(paper, rows, dense) -> Cell:
    cell = Cell("pretrain", _survey_cell(paper, "pretrain"), _claim(paper, "pretrain"))
    staged = [r for r in rows if r.method_info.get("starts_from") == "pretrain"]
    finetuned = [r for r in rows if r.method_info.get("starts_from") != "pretrain"]
    starts = sorted({str(r.method_info.get("starts_from") or "dense") for r in finetuned})
    if staged:
        cell.measured.append(
            "yes: pruned during continued MLM pre-training, then fine-tuned per task with the mask "
            "kept -- " + "; ".join(_stage_text(r) for r in staged)
        )
    if finetuned:
        cell.measured.append(
            "no: compressed while fine-tuning, starting from the "
            + " / ".join("fine-tuned dense checkpoint" if s == "dense" else "pretrained weights" for s in starts)
        )
    claimed = None
    if not _na(cell.survey):
        claimed = cell.survey.strip().lower() == "true"
    elif cell.claim is not None and cell.claim.get("value") is not None:
        claimed = bool(cell.claim["value"])
    if claimed is True and staged:
        cell.status = "agree"
        cell.reason = (
            "both compress during pre-training (here: continued masked-language-model training of the "
            "pretrained model on the tasks' training texts, not pre-training from scratch on the papers' "
            "corpus)"
        )
    elif claimed is True:
        cell.status = "not-measured"
        cell.reason = (
            "needs pre-training: the paper compresses during pre-training; no row that starts from the "
            "pre-training stage ("
            + ", ".join(PRETRAIN_ROWS.get(paper.get("key"), []) or ["none"])
            + ") ran; the runs here compress during fine-tuning only"
        )
    elif claimed is False:
        cell.status = "agree" if rows else "not-measured"
        cell.reason = "both compress at fine-tuning" if rows else ""
    else:
        cell.status = "no-claim" if rows else "not-measured"
    return cell


def _interval_of(r: Row, name: str):
    """``row.stats.<name>`` as (low, high), or ``None`` (no predictions, or one seed's t interval)."""
    iv = getattr(r.stats, name, None) if r.stats is not None else None
    low, high = (getattr(iv, "low", None), getattr(iv, "high", None)) if iv is not None else (None, None)
    return (low, high) if low is not None and high is not None else None


def score_ci_text(r: Row) -> str:
    """ " [88.1, 91.9]": the score's 95% interval in points (``prunebench.report.uncertainty``), or ""."""
    iv = _interval_of(r, "score")
    return f" [{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]" if iv else ""


def diff_ci_text(r: Row) -> str:
    """ " [-3.1, -0.9]": 95% interval of the difference to dense of the same seeds, in points, or ""."""
    iv = _interval_of(r, "diff_dense")
    return f" [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else ""


def performance_cell(paper, rows, dense) -> Cell:
    cell = Cell("performance", _survey_cell(paper, "performance"), _claim(paper, "performance"))
    if dense is None or dense.score is None:
        cell.status, cell.reason = "not-measured", "no dense baseline record for this task"
        return cell
    d = dense.score
    for r in rows:
        if r.score is None:
            cell.measured.append(f"{_label(r)}: n/a")
            continue
        delta = 100 * (r.score - d)
        sd = 100 * (r.std(r.metric) or 0.0)
        spread = f" ± {sd:.1f}" if len(r.seeds) > 1 else ""
        cell.measured.append(
            f"{_label(r)}: {100 * r.score:.1f}{score_ci_text(r)} ({delta:+.1f}{spread} pt"
            f"{diff_ci_text(r)}, {categorize(delta).replace('_', ' ')})"
        )
    if not rows:
        return cell
    claim = cell.claim or {}
    survey = cell.survey
    category = CATEGORY_ALIASES.get(survey.strip().lower()) if not _na(survey) else None
    category = category or CATEGORY_ALIASES.get(str(claim.get("category", "")).lower())
    if category is None:
        cell.status, cell.reason = "no-claim", "no performance claim"
        return cell
    rng = claim.get("at_remaining") or (_claim(paper, "memory") or {}).get("remaining")
    runs, exact = _runs_for_claim(rows, rng)
    runs = [r for r in runs if r.score is not None]
    if not runs:
        cell.status, cell.reason = "not-measured", "no score"
        return cell
    best = max(runs, key=lambda r: r.score)
    delta = 100 * (best.score - d)
    got = categorize(delta)
    diff = CATEGORY_ORDER[got] - CATEGORY_ORDER[category]
    where = "" if exact else f" (nearest run to the claimed {_pct(rng[0])}–{_pct(rng[1])} remaining)"
    if diff == 0 or (diff > 0 and category in ("same", "better")):
        cell.status = "agree"
    elif abs(diff) == 1:
        cell.status = "caveat"
    else:
        cell.status = "disagree"
    cell.reason = (
        f"claimed {category.replace('_', ' ')}; {_label(best)} is {delta:+.1f} pt{diff_ci_text(best)} vs dense"
        f" ({got.replace('_', ' ')}){where}"
    )
    deltas = claim.get("deltas") or {}
    if deltas and claim.get("task") == dense.task:
        notes = []
        for rem, pd in sorted(deltas.items(), key=lambda kv: -float(kv[0])):
            match = [
                r
                for r in rows
                if r.score is not None and _in_range(r.mean("encoder_remaining"), (float(rem), float(rem)))
            ]
            if match:
                m = max(match, key=lambda r: r.score)
                notes.append(f"at {_pct(float(rem))}: paper {float(pd):+.1f} pt, ours {100 * (m.score - d):+.1f} pt")
        if notes:
            cell.reason += "; " + "; ".join(notes)
    return cell


#: The rows that start from the pre-training stage, per paper key (survey.yaml maps them too).
PRETRAIN_ROWS = {
    "gordon2020compressing": ["gordon_pretrain"],
    "guo2019reweighted": ["rpp_pretrain"],
    "fan2019reducing": ["layerdrop_pretrain"],
}


def pretrain_comparison(rows: list[Row]) -> list[dict]:
    """'Pruned during pre-training, then fine-tuned' vs 'pruned during fine-tuning': each row that started
    from the pre-training stage beside its ``finetune_counterpart`` at the same task and budget (seeds
    averaged), with the dense score, the remaining fractions and the stage's final held-out MLM loss."""
    by_key = {(r.task, r.method, r.budget): r for r in rows}
    out = []
    for r in rows:
        info = r.method_info
        if info.get("starts_from") != "pretrain":
            continue
        other = by_key.get((r.task, info.get("finetune_counterpart"), r.budget))
        dense = dense_row(rows, r.task)
        pre = info.get("pretrain") or {}
        final = pre.get("final") or {}
        delta = (
            100 * (r.score - other.score)
            if other is not None and r.score is not None and other.score is not None
            else None
        )
        out.append(
            {
                "task": r.task,
                "budget": r.budget,
                "row": r.method,
                "counterpart": info.get("finetune_counterpart"),
                "stage_method": info.get("stage_method"),
                "metric": r.metric,
                "seeds": sorted(r.seeds),
                "score": r.score,
                "counterpart_score": other.score if other is not None else None,
                "dense_score": dense.score if dense is not None else None,
                "delta_pts": delta,
                "remaining": r.mean("encoder_remaining"),
                "counterpart_remaining": other.mean("encoder_remaining") if other is not None else None,
                "mlm_loss": final.get("mlm_loss"),
                "mlm_loss_start": final.get("mlm_loss_start"),
                "pretrain_steps": (pre.get("training") or {}).get("steps"),
                "missing": None
                if other is not None
                else f"no record of {info.get('finetune_counterpart')} at budget {r.budget:g} on {r.task}",
            }
        )
    return sorted(out, key=lambda d: (d["task"], d["row"], -d["budget"]))


def mlm_loss_points(rows: list[Row]) -> list[dict]:
    """The pre-training stage's held-out MLM loss against encoder sparsity: one entry per (row, budget) with
    its evaluation points (step, remaining, loss; the first at step 0 unpruned, the last after finalize).
    The stage is task-independent, so each (row, budget) is listed once (from its first task's record)."""
    seen, out = set(), []
    for r in sorted(rows, key=lambda r: (r.method, -r.budget, r.task)):
        pre = r.method_info.get("pretrain") or {}
        if r.method_info.get("starts_from") != "pretrain" or not pre.get("points") or (r.method, r.budget) in seen:
            continue
        seen.add((r.method, r.budget))
        out.append(
            {
                "row": r.method,
                "budget": r.budget,
                "stage_method": pre.get("stage_method"),
                "points": pre["points"],
                "final": pre.get("final") or {},
            }
        )
    return out


CELL_BUILDERS = {
    "memory": memory_cell,
    "inference": inference_cell,
    "component": component_cell,
    "pretrain": pretrain_cell,
    "performance": performance_cell,
}


def survey_rows(
    rows: list[Row], survey: dict | None = None, profile_methods: list[str] | None = None
) -> list[SurveyRow]:
    """The comparison table: one ``SurveyRow`` per (paper, task) for every task with records."""
    survey = survey or load_survey()
    registered = _registered()
    tasks = sorted({r.task for r in rows}) or ["(no task)"]
    out = []
    for task in tasks:
        dense = dense_row(rows, task)
        for paper in survey["papers"]:
            mapped = list(paper.get("methods") or [])
            mine = sorted(
                (r for r in rows if r.task == task and r.method in mapped),
                key=lambda r: (mapped.index(r.method), -r.budget),
            )
            cells = {c: CELL_BUILDERS[c](paper, mine, dense) for c in COLUMNS}
            if not mine:
                reason = _why_not_run(paper, mapped, registered, profile_methods)
                for c in cells.values():
                    extra = f"; {c.reason}" if c.reason.startswith("needs pre-training") else ""
                    c.status, c.reason, c.measured = "not-measured", reason + extra, []
            out.append(
                SurveyRow(
                    paper,
                    task,
                    mapped,
                    sorted({r.method for r in mine}),
                    sorted({r.budget for r in mine}, reverse=True),
                    cells,
                )
            )
    return out


def _why_not_run(paper: dict, mapped: list[str], registered: set[str], profile_methods) -> str:
    if not mapped:
        return paper.get("not_run") or "no method of this paper in the registry"
    missing = [m for m in mapped if registered and m not in registered]
    if registered and len(missing) == len(mapped):
        return f"not implemented yet ({', '.join(mapped)} not in the registry)"
    if profile_methods is not None and not set(mapped) & set(profile_methods):
        return f"method not run in this profile ({', '.join(mapped)} not in the config's methods)"
    return f"method not run in this profile (no record of {', '.join(mapped)})"


def unmeasured_cells(table: list[SurveyRow]) -> list[dict]:
    """Every cell of the table without a measurement, and why (for the report and the docs)."""
    return [
        {"paper": row.paper.get("short") or row.paper["key"], "task": row.task, "column": c.column, "reason": c.reason}
        for row in table
        for c in row.cells.values()
        if c.status == "not-measured"
    ]
