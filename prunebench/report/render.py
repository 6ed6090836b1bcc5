"""Render the HTML report from result records with jinja2 (self-contained: figures inline).

``render_report(record_paths, out, figure_path)`` is what ``prunebench report`` calls. The
optional keyword arguments default to the workflow's layout, derived from the records'
paths (``{results}/records/...``):

- ``expected``: the record paths the run should have produced (default: ``record_paths``,
  which is what the workflow passes); those that are missing or do not load are listed as
  missing/failed, and the report renders with whatever exists;
- ``benchmarks_dir``: Snakemake ``benchmark:`` TSVs (default ``{results}/benchmarks``);
- ``analysis_dir``: redundancy analyses (default ``{results}/analysis``);
- ``survey_path``: the survey's claims (default ``prunebench/report/survey.yaml``).

With records of more than one task the report adds the cross-task summary (``prunebench.report.cross_task``:
the share of the dense metric each method keeps, per task and on average, with intervals), one
survey table per task, and marks stand-in evaluation splits (``STANDIN_MARK``, with a footnote)
wherever a task is named; with one task a sentence replaces the summary.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jinja2

from prunebench.report import cross_task, figures
from prunebench.report.analysis import find_head_ablations
from prunebench.report.collect import aggregate, load_record_set, read_benchmarks, results_dir_of, wall_time_per_rule
from prunebench.report.convergence import convergence_section, keep_longest_steps
from prunebench.report.leaderboard import (
    BACKEND_TEXT,
    DEEPSPARSE_TEXT,
    ENFORCEMENT_LIMIT,
    attach_stats,
    backend_rows,
    backend_summary,
    board_from_rows,
    footnotes,
    hardware_text,
)
from prunebench.report.reference import budget_gaps, load_references
from prunebench.report.style import method_style
from prunebench.report.survey import (
    COLUMN_TITLES,
    COLUMNS,
    load_survey,
    mlm_loss_points,
    pretrain_comparison,
    survey_rows,
    unmeasured_cells,
)
from prunebench.report.uncertainty import TEST_TEXT, load_predictions

TEMPLATES = Path(__file__).with_name("templates")
log = logging.getLogger("prunebench.report.render")
HEAD_METHODS = ("head_importance", "head_random")


def _figure(fig, fid: str, title: str, caption: str = "") -> dict | None:
    if fig is None:
        return None
    return {"id": fid, "title": title, "caption": caption, "svg": figures.inline_svg(figures.to_svg_text(fig), fid)}


def _safe(fn, *args, **kwargs):
    """A figure that fails to draw becomes a note in the report, not a crash."""
    try:
        return fn(*args, **kwargs), None
    except Exception as exc:  # noqa: BLE001 -- any plotting failure is reported in the page
        log.exception("figure %s failed", getattr(fn, "__name__", fn))
        return None, f"{getattr(fn, '__name__', 'figure')} failed: {type(exc).__name__}: {exc}"


def _provenance_groups(records: list[dict]) -> list[dict]:
    groups: dict[str, dict] = {}
    for rec in records:
        p = rec["provenance"]
        key = json.dumps([p.get("git_sha"), p.get("git_dirty"), p.get("versions"), p.get("hardware")], sort_keys=True)
        g = groups.setdefault(
            key,
            {
                "git_sha": p.get("git_sha"),
                "git_dirty": p.get("git_dirty"),
                "versions": p.get("versions") or {},
                "hardware": hardware_text(p.get("hardware") or {}),
                "records": 0,
                "wall_time_s": 0.0,
            },
        )
        g["records"] += 1
        g["wall_time_s"] += float(p.get("wall_time_s") or 0.0)
    return sorted(groups.values(), key=lambda g: -g["records"])


def _configs(records: list[dict]) -> list[dict]:
    """Distinct run configurations (method settings differ per method: compared without them)."""
    seen: dict[str, dict] = {}
    for rec in records:
        cfg = {k: v for k, v in (rec.get("config") or {}).items() if k != "method_settings"}
        digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
        entry = seen.setdefault(digest, {"digest": digest, "config": cfg, "records": 0})
        entry["records"] += 1
    return list(seen.values())


def _settings(records: list[dict]) -> list[dict]:
    out: dict[str, dict] = {}
    for rec in records:
        m = (rec.get("details") or {}).get("method") or {}
        if rec["method"] not in out:
            out[rec["method"]] = {
                "method": rec["method"],
                "paper": m.get("paper", ""),
                "starts_from": m.get("starts_from", ""),
                "granularity": m.get("granularity", ""),
                "settings": m.get("settings", {}),
            }
    return sorted(out.values(), key=lambda x: x["method"])


def _onnx_runtime(records: list[dict]) -> dict | None:
    """The ONNX Runtime setup of the first record measured with it (version, opset, exporter,
    optimization level, int8 method of any int8 record) and how many records have it; None if none."""
    found = [
        o
        for r in records
        for o in [((r.get("details") or {}).get("measurement") or {}).get("onnx_runtime") or {}]
        if o.get("enabled")
    ]
    if not found:
        return None
    first = found[0]
    int8 = next((o.get("int8_method") for o in found if o.get("int8_method")), None)
    return {
        "ort_version": first.get("ort_version"),
        "opset": first.get("opset"),
        "exporter": first.get("exporter"),
        "optimization_level": first.get("optimization_level"),
        "int8_method": int8,
        "records": len(found),
        "failed": sum(1 for o in found if o.get("error")),
    }


def _seed_table(rows) -> list[dict]:
    return [{"task": r.task, "method": r.method, "budget": r.budget, "seeds": sorted(r.seeds)} for r in rows]


def _survey_groups(table: list, kinds: dict[str, dict]) -> list[dict]:
    """The survey table split by task: one group (id ``survey-table``, no heading) for one task,
    else one per task (id ``survey-table-<task>``, a heading with the stand-in mark and note)."""
    tasks = list(dict.fromkeys(row.task for row in table))
    if len(tasks) <= 1:
        return [{"task": tasks[0] if tasks else None, "label": None, "note": None, "id": "survey-table", "rows": table}]
    return [
        {
            "task": t,
            "label": cross_task.task_label(t, kinds),
            "id": f"survey-table-{t}",
            "note": cross_task.STANDIN_NOTE if cross_task.is_standin(t, kinds) else None,
            "rows": [r for r in table if r.task == t],
        }
        for t in tasks
    ]


def _cross_task(records: list[dict], predictions: dict, tasks: list[str]):
    """The cross-task summary with several tasks, else None."""
    return cross_task.cross_task_summary(records, predictions) if len(tasks) > 1 else None


@dataclass
class _Results:
    """The records of the longest fine-tuning length, aggregated: what the report's sections are drawn from."""

    records: list[dict]
    predictions: dict
    prediction_warnings: list
    rows: list  # one per (task, method, budget), mean over seeds, with intervals attached
    board: list
    backends: list
    tasks: list[str]
    kinds: dict[str, dict]  # task -> its evaluation split (official or stand-in)
    task_labels: dict[str, str]
    methods: list[str]
    budgets: list[float]


def _load_records(record_paths: list[str], expected) -> tuple:
    """The record set and the convergence section. The convergence section compares every fine-tuning
    length; the record set returned keeps only the longest, which the other sections compare."""
    rs = load_record_set(record_paths, expected)
    convergence, convergence_error = _safe(convergence_section, rs.records)
    return keep_longest_steps(rs), {"convergence": convergence, "convergence_error": convergence_error}


def _result_folders(rs, record_paths: list[str], results_dir, benchmarks_dir, analysis_dir) -> tuple:
    """The results folder (given, else derived from the record paths) and the benchmarks and analysis
    folders (given, else its ``benchmarks`` and ``analysis``); None where there is no results folder."""
    if results_dir is None:
        roots = [results_dir_of(p) for p in (rs.expected or record_paths)]
        results_dir = next((r for r in roots if r is not None), None)
    results_dir = Path(results_dir) if results_dir is not None else None
    if benchmarks_dir is None and results_dir is not None:
        benchmarks_dir = results_dir / "benchmarks"
    if analysis_dir is None and results_dir is not None:
        analysis_dir = results_dir / "analysis"
    return results_dir, benchmarks_dir, analysis_dir


def _budget_gap_section(records: list[dict], reference_dir) -> dict:
    """How far each record's remaining weights are from the reference implementations' at its budget."""
    budget_gap, budget_gap_error = _safe(lambda: budget_gaps(records, load_references(reference_dir)))
    return {"budget_gap": budget_gap or [], "budget_gap_error": budget_gap_error}


def _aggregate_results(records: list[dict], paths: list[str]) -> _Results:
    """Rows per (task, method, budget) with their intervals (from the per-example predictions), the
    leaderboard and backend rows, and the tasks, methods and budgets present."""
    predictions, prediction_warnings = load_predictions(paths, records)
    rows = aggregate(records)
    attach_stats(rows, predictions)
    board = board_from_rows(rows)
    backends = backend_rows(rows)
    tasks = sorted({r.task for r in rows})
    kinds = cross_task.split_kinds(records)
    return _Results(
        records=records,
        predictions=predictions,
        prediction_warnings=prediction_warnings,
        rows=rows,
        board=board,
        backends=backends,
        tasks=tasks,
        kinds=kinds,
        task_labels={t: cross_task.task_label(t, kinds) for t in tasks},
        methods=sorted({r.method for r in rows}),
        budgets=sorted({r.budget for r in rows}, reverse=True),
    )


def _cross_task_section(res: _Results) -> dict:
    """The cross-task summary (several tasks only) and the texts around it."""
    cross, cross_error = _safe(_cross_task, res.records, res.predictions, res.tasks)
    return {
        "cross": cross,
        "cross_error": cross_error,
        "cross_text": cross_task.METHOD_TEXT,
        "claim_threshold": cross_task.CLAIM_THRESHOLD,
        "wnli_note": cross_task.EXCLUDED_ALWAYS.get("wnli"),
        "standin_notes": cross_task.standin_footnotes(res.tasks, res.kinds),
        "task_labels": res.task_labels,
    }


def _accuracy_figure(res: _Results, task: str, figure_path: Path | None, notes: list[str]) -> dict | None:
    """The main figure of one task: score vs. encoder weights remaining. The first task's is also
    saved to ``figure_path`` (the workflow rule's declared figure)."""
    fig, err = _safe(figures.accuracy_vs_remaining, res.rows, task, split_kind=(res.kinds.get(task) or {}).get("kind"))
    if task == res.tasks[0] and fig is not None and figure_path is not None:
        figures.save(fig, Path(figure_path))
    f = _figure(
        fig,
        f"acc-{task}",
        f"{res.task_labels[task]}: accuracy vs. encoder weights remaining",
        "Mean over seeds, error bars the 95% interval (bootstrap over the examples for one seed, "
        "t over seeds for several; ± std where a record has no predictions); dashed: dense model "
        "(band: its interval); shaded: below the random-pruning floor.",
    )
    if err:
        notes.append(err)
    return f


def _pareto_figures(res: _Results, task: str, notes: list[str]) -> list[dict]:
    """One task's Pareto plots: score against each cost (``figures.PARETO_KINDS``)."""
    out = []
    for kind, title in figures.PARETO_KINDS.items():
        fig, err = _safe(figures.pareto_plot, res.rows, kind, task, split_kind=(res.kinds.get(task) or {}).get("kind"))
        if err:
            notes.append(err)
        f = _figure(
            fig,
            f"pareto-{kind}-{task}",
            f"{res.task_labels[task]}: {title}",
            "Every (method, budget) mean over seeds; vertical error bars the score's 95% interval (± std "
            "without predictions), horizontal ± std over seeds; circled and joined: "
            "the Pareto front (no other point has a better score at a lower cost).",
        )
        if f:
            out.append(f)
    return out


def _layer_sparsity_figures(res: _Results, task: str, notes: list[str]) -> list[dict]:
    """One task's per-layer sparsity, one figure per pruning method."""
    out = []
    for method in res.methods:
        if method == "dense":
            continue
        fig, err = _safe(figures.per_layer_sparsity, res.rows, method, task)
        if err:
            notes.append(err)
        f = _figure(
            fig,
            f"layers-{method}-{task}",
            f"{task}: {method}",
            "Fraction of each encoder matrix remaining (non-zero over its stored size), per layer, mean "
            "over seeds; 'gone': the matrix was removed (a structurally compacted model keeps smaller "
            "matrices, see 'remaining' in the leaderboard for the total).",
        )
        if f:
            f["method"] = method
            out.append(f)
    return out


def _result_figures(res: _Results, figure_path: Path | None, notes: list[str]) -> dict:
    """Per task, in this order: the main figure, the Pareto plots, the per-layer sparsity. Without
    records the (empty) main figure is still saved to ``figure_path``, the workflow rule's output."""
    main_figs, pareto_figs, layer_figs = [], [], []
    for task in res.tasks:
        main_figs.append(_accuracy_figure(res, task, figure_path, notes))
        pareto_figs += _pareto_figures(res, task, notes)
        layer_figs += _layer_sparsity_figures(res, task, notes)
    if figure_path is not None and not res.tasks:
        fig, _ = _safe(figures.accuracy_vs_remaining, res.rows, None)
        if fig is not None:
            figures.save(fig, Path(figure_path), close=True)
    return {"main_figs": [f for f in main_figs if f], "pareto_figs": pareto_figs, "layer_figs": layer_figs}


def _head_ablation(ab, notes: list[str]) -> dict:
    """One redundancy analysis of the dense model: the score with single heads disabled (heatmap) and,
    per layer, with the best head alone kept or the whole layer's attention disabled."""
    entry = {"a": ab, "figs": []}
    tag = f"{ab.task}-{ab.seed}" + ("" if ab.mode == "mask" else f"-{ab.mode}")
    how = "" if ab.mode == "mask" else f" ({ab.mode} attention)"
    if ab.single is not None:
        fig, err = _safe(
            figures.head_ablation_heatmap,
            ab.single,
            ab.baseline,
            f"{ab.task} seed {ab.seed}: one head disabled{how}",
        )
        entry["figs"].append(
            _figure(
                fig,
                f"abl-single-{tag}",
                "single head disabled",
                "Score with one head disabled minus the score with all heads, in points "
                "(blue: better without the head)."
                if ab.baseline is not None
                else "",
            )
        )
        if err:
            notes.append(err)
    series = {
        "best single head kept (all others in the layer disabled)": ab.best_kept,
        "whole layer's attention disabled": ab.layer_disabled,
    }
    if any(series.values()):
        fig, err = _safe(figures.per_layer_bars, series, ab.baseline, f"{ab.task} seed {ab.seed}: per layer{how}")
        entry["figs"].append(_figure(fig, f"abl-layer-{tag}", "per layer", ""))
        if err:
            notes.append(err)
    entry["figs"] = [f for f in entry["figs"] if f]
    return entry


def _head_pruning_curves(res: _Results, notes: list[str]) -> tuple[list[dict], list[str]]:
    """Per task, iterative head pruning in importance order vs. random order; and which of the two
    methods have no records."""
    head_curves, head_missing = [], []
    for task in res.tasks:
        present = {r.method for r in res.rows if r.task == task and r.method in HEAD_METHODS + ("head_magnitude",)}
        head_missing += [f"{task}: no records of {m}" for m in HEAD_METHODS if m not in present]
        if present:
            fig, err = _safe(
                figures.head_pruning_curves, res.rows, task, split_kind=(res.kinds.get(task) or {}).get("kind")
            )
            if err:
                notes.append(err)
            f = _figure(
                fig,
                f"heads-{task}",
                f"{task}: iterative head pruning",
                "Importance order (Michel et al. 2019) vs. random order, mean ± std over seeds.",
            )
            if f:
                head_curves.append(f)
    return head_curves, head_missing


def _missing_ablations(res: _Results, results_dir: Path | None, ablations: list[dict]) -> list[str]:
    """The analyses the workflow writes (one per task, of its first seed's dense model) that were not found."""
    expected = (
        sorted(
            {
                f"{results_dir / 'analysis' / t}/head_ablation_seed{s}.json"
                for t in res.tasks
                for s in {min(r["seed"] for r in res.records if r["task"] == t)}
            }
        )
        if results_dir
        else []
    )
    found = {a["a"].path for a in ablations}
    return [p for p in expected if p not in found]


def _head_sections(res: _Results, analysis_dir, results_dir: Path | None, notes: list[str]) -> dict:
    """The redundancy analyses of the dense models and the head pruning curves."""
    ablations = [_head_ablation(ab, notes) for ab in find_head_ablations(analysis_dir)]
    head_curves, head_missing = _head_pruning_curves(res, notes)
    return {
        "ablations": ablations,
        "ablations_missing": _missing_ablations(res, results_dir, ablations),
        "head_curves": head_curves,
        "head_missing": head_missing,
    }


def _survey_section(res: _Results, survey_path) -> dict:
    """The survey's claims beside the measured numbers, one table per task; a survey file that does
    not load is shown as an error and the rest of the report renders."""
    survey_error, table, unmeasured = None, [], []
    try:
        survey = load_survey(survey_path)
        table = survey_rows(res.rows, survey)
        unmeasured = unmeasured_cells(table)
    except Exception as exc:  # noqa: BLE001 -- a broken survey file is shown, the rest renders
        survey, survey_error = {"source": {}}, f"{type(exc).__name__}: {exc}"
    return {
        "survey": survey,
        "survey_error": survey_error,
        "table": table,
        "columns": COLUMNS,
        "column_titles": COLUMN_TITLES,
        "survey_groups": _survey_groups(table, res.kinds),
        "unmeasured": unmeasured,
        "pretrain_pairs": pretrain_comparison(res.rows),
        "mlm_points": mlm_loss_points(res.rows),
        "status_counts": Counter(c.status for row in table for c in row.cells.values()),
    }


def _benchmarks_section(benchmarks_dir, results_dir: Path | None) -> dict:
    """The Snakemake benchmark files of the run and the wall time per rule."""
    benchmarks = read_benchmarks(benchmarks_dir)
    return {
        "benchmarks": benchmarks,
        "rule_times": wall_time_per_rule(benchmarks),
        "benchmarks_dir": str(benchmarks_dir) if benchmarks_dir else None,
        "results_dir": str(results_dir) if results_dir else None,
    }


def _leaderboard_context(res: _Results) -> dict:
    """The leaderboard, the backend comparison and the ONNX Runtime setup."""
    return {
        "board": res.board,
        "board_notes": footnotes(res.board),
        "backends": res.backends,
        "backend_text": BACKEND_TEXT,
        "backend_summary": backend_summary(res.backends),
        "has_deepsparse": any(t["has_ds"] for t in res.backends),
        "deepsparse_text": DEEPSPARSE_TEXT,
        "onnx_runtime": _onnx_runtime(res.records),
        "prediction_warnings": res.prediction_warnings,
        "test_text": TEST_TEXT,
        "truncation_limit": ENFORCEMENT_LIMIT,
    }


def _run_context(rs, res: _Results) -> dict:
    """What was run and where: records found and missing, tasks, methods, budgets, seeds, method
    settings, configurations, provenance and the measurement setup (of the first record)."""
    records = res.records
    first = records[0] if records else {}
    provenance = first.get("provenance", {})
    return {
        "records": records,
        "n_records": len(records),
        "n_expected": len(rs.expected),
        "problems": rs.problems,
        "tasks": res.tasks,
        "methods": res.methods,
        "budgets": res.budgets,
        "styles": {m: method_style(m)[0] for m in res.methods},
        "provenance": provenance,
        "hardware": hardware_text(provenance.get("hardware") or {}),
        "provenance_groups": _provenance_groups(records),
        "measurement": (first.get("details") or {}).get("measurement", {}),
        "configs": _configs(records),
        "settings": _settings(records),
        "seeds": _seed_table(res.rows),
    }


def _environment() -> jinja2.Environment:
    """The jinja2 environment of the report template, with its number filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters["num"] = lambda v, fmt="%.3f": (fmt % v) if isinstance(v, (int, float)) and v == v else "n/a"
    env.filters["sortval"] = lambda v: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
    return env


def render_report(
    record_paths,
    out: Path,
    figure_path: Path | None = None,
    *,
    expected=None,
    benchmarks_dir: Path | str | None = None,
    analysis_dir: Path | str | None = None,
    survey_path: Path | str | None = None,
    results_dir: Path | str | None = None,
    generated: str | None = None,
    reference_dir: Path | str | None = None,
) -> Path:
    record_paths = [str(p) for p in record_paths]
    rs, convergence = _load_records(record_paths, expected)
    results_dir, benchmarks_dir, analysis_dir = _result_folders(
        rs, record_paths, results_dir, benchmarks_dir, analysis_dir
    )
    budget_gap = _budget_gap_section(rs.records, reference_dir)
    res = _aggregate_results(rs.records, rs.paths)
    cross = _cross_task_section(res)
    notes: list[str] = []  # figures that failed to draw, shown in the page
    result_figures = _result_figures(res, figure_path, notes)
    heads = _head_sections(res, analysis_dir, results_dir, notes)
    survey = _survey_section(res, survey_path)
    benchmarks = _benchmarks_section(benchmarks_dir, results_dir)
    html = (
        _environment()
        .get_template("report.html.j2")
        .render(
            **_leaderboard_context(res),
            **_run_context(rs, res),
            **result_figures,
            **heads,
            **survey,
            **cross,
            **benchmarks,
            **convergence,
            **budget_gap,
            notes=notes,
            generated=generated or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    return out
