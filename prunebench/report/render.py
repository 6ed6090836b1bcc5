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
wherever a task is named; with one task the page looks as before (a sentence replaces the summary).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import jinja2

from prunebench.report import cross_task, figures
from prunebench.report.analysis import find_head_ablations
from prunebench.report.collect import aggregate, load_record_set, read_benchmarks, results_dir_of, wall_time_per_rule
from prunebench.report.convergence import convergence_section, keep_longest_steps
from prunebench.report.leaderboard import (
    BACKEND_TEXT,
    TRUNCATION_LIMIT,
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
    rs = load_record_set(record_paths, expected)
    convergence, convergence_error = _safe(convergence_section, rs.records)  # all lengths; the rest: the longest
    rs = keep_longest_steps(rs)
    if results_dir is None:
        roots = [results_dir_of(p) for p in (rs.expected or record_paths)]
        results_dir = next((r for r in roots if r is not None), None)
    results_dir = Path(results_dir) if results_dir is not None else None
    if benchmarks_dir is None and results_dir is not None:
        benchmarks_dir = results_dir / "benchmarks"
    if analysis_dir is None and results_dir is not None:
        analysis_dir = results_dir / "analysis"

    records = rs.records
    budget_gap, budget_gap_error = _safe(lambda: budget_gaps(records, load_references(reference_dir)))
    predictions, prediction_warnings = load_predictions(rs.paths, records)
    rows = aggregate(records)
    attach_stats(rows, predictions)
    board = board_from_rows(rows)
    backends = backend_rows(rows)
    tasks = sorted({r.task for r in rows})
    kinds = cross_task.split_kinds(records)
    task_labels = {t: cross_task.task_label(t, kinds) for t in tasks}
    cross, cross_error = _safe(_cross_task, records, predictions, tasks)
    methods_run = sorted({r.method for r in rows})
    budgets = sorted({r.budget for r in rows}, reverse=True)
    notes: list[str] = []

    # figures: accuracy vs. remaining (the main figure), Pareto plots, per-layer sparsity
    main_figs, pareto_figs, layer_figs = [], [], []
    for task in tasks:
        split = (kinds.get(task) or {}).get("kind")
        fig, err = _safe(figures.accuracy_vs_remaining, rows, task, split_kind=split)
        if task == tasks[0] and fig is not None and figure_path is not None:
            figures.save(fig, Path(figure_path))
        main_figs.append(
            _figure(
                fig,
                f"acc-{task}",
                f"{task_labels[task]}: accuracy vs. encoder weights remaining",
                "Mean over seeds, error bars the 95% interval (bootstrap over the examples for one seed, "
                "t over seeds for several; ± std where a record has no predictions); dashed: dense model "
                "(band: its interval); shaded: below the random-pruning floor.",
            )
        )
        if err:
            notes.append(err)
        for kind, title in figures.PARETO_KINDS.items():
            fig, err = _safe(figures.pareto_plot, rows, kind, task, split_kind=split)
            if err:
                notes.append(err)
            f = _figure(
                fig,
                f"pareto-{kind}-{task}",
                f"{task_labels[task]}: {title}",
                "Every (method, budget) mean over seeds; vertical error bars the score's 95% interval (± std "
                "without predictions), horizontal ± std over seeds; circled and joined: "
                "the Pareto front (no other point has a better score at a lower cost).",
            )
            if f:
                pareto_figs.append(f)
        for method in methods_run:
            if method == "dense":
                continue
            fig, err = _safe(figures.per_layer_sparsity, rows, method, task)
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
                layer_figs.append(f)
    if figure_path is not None and not tasks:  # keep the rule's declared output even with no records
        fig, _ = _safe(figures.accuracy_vs_remaining, rows, None)
        if fig is not None:
            figures.save(fig, Path(figure_path), close=True)

    # redundancy analyses
    ablations = []
    for ab in find_head_ablations(analysis_dir):
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
        ablations.append(entry)
    head_curves, head_missing = [], []
    for task in tasks:
        present = {r.method for r in rows if r.task == task and r.method in HEAD_METHODS + ("head_magnitude",)}
        head_missing += [f"{task}: no records of {m}" for m in HEAD_METHODS if m not in present]
        if present:
            fig, err = _safe(figures.head_pruning_curves, rows, task, split_kind=(kinds.get(task) or {}).get("kind"))
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
    expected_ablations = (
        sorted(
            {
                f"{results_dir / 'analysis' / t}/head_ablation_seed{s}.json"
                for t in tasks
                for s in {min(r["seed"] for r in records if r["task"] == t)}
            }
        )
        if results_dir
        else []
    )  # the workflow analyses the first seed's dense model
    found = {a["a"].path for a in ablations}
    ablations_missing = [p for p in expected_ablations if p not in found]

    # survey table
    survey_error, table, unmeasured = None, [], []
    try:
        survey = load_survey(survey_path)
        table = survey_rows(rows, survey)
        unmeasured = unmeasured_cells(table)
    except Exception as exc:  # noqa: BLE001 -- a broken survey file is shown, the rest renders
        survey, survey_error = {"source": {}}, f"{type(exc).__name__}: {exc}"

    benchmarks = read_benchmarks(benchmarks_dir)
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
    first = records[0] if records else {}
    provenance = first.get("provenance", {})
    html = env.get_template("report.html.j2").render(
        board=board,
        board_notes=footnotes(board),
        backends=backends,
        backend_text=BACKEND_TEXT,
        backend_summary=backend_summary(backends),
        onnx_runtime=_onnx_runtime(records),
        prediction_warnings=prediction_warnings,
        test_text=TEST_TEXT,
        truncation_limit=TRUNCATION_LIMIT,
        records=records,
        n_records=len(records),
        n_expected=len(rs.expected),
        problems=rs.problems,
        tasks=tasks,
        methods=methods_run,
        budgets=budgets,
        styles={m: method_style(m)[0] for m in methods_run},
        provenance=provenance,
        hardware=hardware_text(provenance.get("hardware") or {}),
        provenance_groups=_provenance_groups(records),
        measurement=(first.get("details") or {}).get("measurement", {}),
        configs=_configs(records),
        settings=_settings(records),
        seeds=_seed_table(rows),
        main_figs=[f for f in main_figs if f],
        pareto_figs=pareto_figs,
        layer_figs=layer_figs,
        ablations=ablations,
        ablations_missing=ablations_missing,
        head_curves=head_curves,
        head_missing=head_missing,
        survey=survey,
        survey_error=survey_error,
        table=table,
        columns=COLUMNS,
        column_titles=COLUMN_TITLES,
        survey_groups=_survey_groups(table, kinds),
        task_labels=task_labels,
        standin_notes=cross_task.standin_footnotes(tasks, kinds),
        cross=cross,
        cross_error=cross_error,
        cross_text=cross_task.METHOD_TEXT,
        claim_threshold=cross_task.CLAIM_THRESHOLD,
        wnli_note=cross_task.EXCLUDED_ALWAYS.get("wnli"),
        unmeasured=unmeasured,
        pretrain_pairs=pretrain_comparison(rows),
        mlm_points=mlm_loss_points(rows),
        benchmarks=benchmarks,
        rule_times=wall_time_per_rule(benchmarks),
        benchmarks_dir=str(benchmarks_dir) if benchmarks_dir else None,
        results_dir=str(results_dir) if results_dir else None,
        notes=notes,
        convergence=convergence,
        convergence_error=convergence_error,
        budget_gap=budget_gap or [],
        budget_gap_error=budget_gap_error,
        generated=generated or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        status_counts=Counter(c.status for row in table for c in row.cells.values()),
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    return out
