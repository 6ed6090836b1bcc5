"""Figures of the report and the paper, written reproducibly (fixed metadata, fixed SVG hash salt).

Every function returns a matplotlib figure (or ``None`` when there is nothing to draw) and
takes ``rc`` (``style.RC`` for the report, ``style.PAPER_RC`` for paper figures); colours
and markers come from ``style.method_style`` only. ``to_svg_text``/``save`` write under the
same ``rc`` so that ``svg.hashsalt`` and the font settings apply at save time.
"""

from __future__ import annotations

import base64
import io
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from prunebench.report.collect import Row, best_backend, pareto_front
from prunebench.report.style import DIVERGING_CMAP, HEATMAP_CMAP, RC, linestyle, method_style

_METADATA = {
    "svg": {"Date": None, "Creator": "prunebench"},
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": "prunebench", "Producer": "prunebench"},
    "png": {"Software": "prunebench"},
}

#: Encoder matrix types in display order: (label, pattern on the parameter name).
MATRIX_TYPES = [
    ("Q", r"attention\.self\.query"),
    ("K", r"attention\.self\.key"),
    ("V", r"attention\.self\.value"),
    ("attn out", r"attention\.output\.dense"),
    ("FFN in", r"intermediate\.dense"),
    ("FFN out", r"(?<!attention\.)output\.dense"),
]
_LAYER_RE = re.compile(r"encoder\.layer\.(\d+)\.(.+?)(?:\.weight)?$")


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _methods(rows: list[Row]) -> list[str]:
    return sorted({r.method for r in rows})


def _metric_label(rows: list[Row], split_kind: str | None = None) -> str:
    """The score axis: "dev accuracy"; a stand-in evaluation split (``config.data.eval_split_kind``)
    never reads "dev": "qqp f1 (stand-in eval split)"."""
    metric = rows[0].metric if rows else "accuracy"
    if split_kind == "stand-in":
        return f"{rows[0].task + ' ' if rows else ''}{metric} (stand-in eval split)"
    return f"dev {metric}"


def score_error(r: Row) -> tuple[float, float]:
    """(below, above) the mean score for an error bar: the entry's 95% interval when its
    predictions gave one (``row.stats.score``, ``prunebench.report.uncertainty``), else ± std over seeds."""
    iv = getattr(r.stats, "score", None) if r.stats is not None else None
    low, high = (getattr(iv, "low", None), getattr(iv, "high", None)) if iv is not None else (None, None)
    if r.score is not None and _finite(low) and _finite(high):
        return max(0.0, r.score - low), max(0.0, high - r.score)
    sd = r.std(r.metric) or 0.0
    return sd, sd


def _yerr(rows: list[Row]) -> np.ndarray:
    """Asymmetric error bars (2 x N) for ``errorbar``."""
    return np.array([score_error(r) for r in rows], dtype=float).T.reshape(2, len(rows))


def _dense_lines(ax, rows: list[Row], task: str) -> None:
    for d in (r for r in rows if r.method == "dense" and r.task == task and r.score is not None):
        colour, _ = method_style("dense")
        ax.axhline(d.score, color=colour, linestyle="--", linewidth=1, label="dense")
        below, above = score_error(d)
        if below > 0 or above > 0:
            ax.axhspan(d.score - below, d.score + above, color=colour, alpha=0.08, linewidth=0)


def accuracy_vs_remaining(rows: list[Row], task: str | None = None, rc=None, split_kind: str | None = None):
    """Task score vs. fraction of encoder weights remaining: one line per method (error bars: the
    95% interval, ``score_error``), the dense score as a dashed line (band: its interval), the
    random floor shaded. ``split_kind``: the task's ``eval_split_kind`` (labels, ``_metric_label``)."""
    task = task or (rows[0].task if rows else None)
    rows = [r for r in rows if r.task == task]
    with plt.rc_context(rc or RC):
        fig, ax = plt.subplots(layout="constrained")
        _dense_lines(ax, rows, task)
        floor = sorted(
            (r for r in rows if r.method == "random" and r.score is not None and _finite(r.mean("encoder_remaining"))),
            key=lambda r: r.mean("encoder_remaining"),
        )
        if floor:
            xs = [r.mean("encoder_remaining") for r in floor]
            ax.fill_between(
                xs,
                [r.score for r in floor],
                [0] * len(floor),
                color=method_style("random")[0],
                alpha=0.12,
                linewidth=0,
                label="below the random floor",
            )
        for method in _methods(rows):
            if method == "dense":
                continue
            pts = sorted(
                (
                    r
                    for r in rows
                    if r.method == method and r.score is not None and _finite(r.mean("encoder_remaining"))
                ),
                key=lambda r: r.mean("encoder_remaining"),
            )
            if not pts:
                continue
            colour, marker = method_style(method)
            ax.errorbar(
                [r.mean("encoder_remaining") for r in pts],
                [r.score for r in pts],
                yerr=_yerr(pts),
                color=colour,
                marker=marker,
                capsize=3,
                linestyle=linestyle(method),
                label=method + (" (floor)" if method == "random" else ""),
            )
        ax.set_xscale("log")
        ax.set_xlabel("encoder weights remaining (fraction, log scale)")
        ax.set_ylabel(_metric_label(rows, split_kind))
        _lower_ylim(ax, rows)
        ax.set_title(f"{task}: accuracy vs. encoder weights remaining", fontsize="medium")
        _legend_below(ax, len(ax.get_legend_handles_labels()[1]))
    return fig


def _legend_below(ax, n: int) -> None:
    """Legend under the axes, in columns, so it never hides a point."""
    if not ax.get_legend_handles_labels()[1]:
        return
    ncol = min(max(1, n), max(1, int(ax.figure.get_figwidth() // 1.6)))
    ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, frameon=False)


def _lower_ylim(ax, rows: list[Row]) -> None:
    scores = [r.score for r in rows if r.score is not None]
    if scores:
        lo, hi = min(scores), max(scores)
        pad = max(0.02, 0.1 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad) if hi <= 1 else hi + pad)


# ----- Pareto plots ----------------------------------------------------------------------------


def _cost_spec(kind: str, rows: list[Row]):
    """(cost function returning (mean, std), x label, log x) for a Pareto plot kind."""
    if kind == "remaining":
        return (
            (lambda r: (r.mean("encoder_remaining"), r.std("encoder_remaining"))),
            "encoder weights remaining (fraction, log)",
            True,
        )
    if kind == "disk":

        def disk(r):
            m, s = r.mean("disk_bytes_sparse_format"), r.std("disk_bytes_sparse_format")
            return (m / 1e6 if m else None), (s / 1e6 if s else 0.0)

        return disk, "bytes on disk, sparse format (MB)", False
    if kind == "latency_b1":
        return (lambda r: (r.mean("latency_b1"), r.std("latency_b1"))), "measured latency at batch 1 (ms)", False
    if kind == "latency_bmax":
        bmax = max((r.bmax or 0 for r in rows), default=0)

        def lat(r):
            return r.mean(f"latency_b{bmax}"), r.std(f"latency_b{bmax}")

        return lat, f"measured latency at batch {bmax} (ms)", False
    if kind == "speedup_best":
        bmax = max((r.bmax or 0 for r in rows), default=0)
        return (
            (lambda r: (best_backend(r, bmax)[1], 0.0)),
            f"speed-up over dense at batch {bmax}, best backend (log)",
            True,
        )
    raise ValueError(f"unknown Pareto plot kind {kind!r}")


PARETO_KINDS = {
    "remaining": "accuracy vs. encoder weights remaining",
    "disk": "accuracy vs. bytes on disk (sparse format)",
    "latency_b1": "accuracy vs. latency at batch 1",
    "latency_bmax": "accuracy vs. latency at the largest batch",
    "speedup_best": "accuracy vs. speed-up on each row's best backend",
}
#: kinds whose x axis is a gain (higher is better): the Pareto front takes its inverse as the cost
GAIN_KINDS = frozenset({"speedup_best"})
#: backend name -> the label printed beside each point of ``speedup_best``
BACKEND_LABELS = {"PyTorch": "PT", "ONNX Runtime": "ORT", "DeepSparse": "DS"}


def pareto_plot(rows: list[Row], kind: str, task: str | None = None, rc=None, split_kind: str | None = None):
    """Score vs. a cost for every (method, budget), Pareto front drawn; vertical error bars the
    score's 95% interval (``score_error``), horizontal ± std of the cost over seeds. ``split_kind``:
    as ``accuracy_vs_remaining``."""
    task = task or (rows[0].task if rows else None)
    rows = [r for r in rows if r.task == task]
    cost, xlabel, logx = _cost_spec(kind, rows)
    pts = [
        r for r in rows if r.score is not None and _finite(cost(r)[0]) and (kind not in GAIN_KINDS or cost(r)[0] > 0)
    ]
    if not pts:
        return None
    front = pareto_front(pts, cost=(lambda r: 1 / cost(r)[0]) if kind in GAIN_KINDS else (lambda r: cost(r)[0]))
    with plt.rc_context(rc or RC):
        fig, ax = plt.subplots(layout="constrained")
        for method in _methods(pts):
            colour, marker = method_style(method)
            mine = [r for r in pts if r.method == method]
            ax.errorbar(
                [cost(r)[0] for r in mine],
                [r.score for r in mine],
                xerr=[cost(r)[1] or 0 for r in mine],
                yerr=_yerr(mine),
                color=colour,
                marker=marker,
                linestyle="none",
                capsize=2,
                label=method,
            )
        if kind == "speedup_best":  # each point says which backend gave its speed-up
            bmax = max((r.bmax or 0 for r in rows), default=0)
            for r in pts:
                name = best_backend(r, bmax)[0]
                ax.annotate(
                    BACKEND_LABELS.get(name, name),
                    (cost(r)[0], r.score),
                    textcoords="offset points",
                    xytext=(4, 3),
                    fontsize="x-small",
                )
        fr = sorted((r for r in pts if r.key in front), key=lambda r: cost(r)[0], reverse=kind in GAIN_KINDS)
        if fr:
            ax.step(
                [cost(r)[0] for r in fr],
                [r.score for r in fr],
                where="post",
                color="black",
                linewidth=1,
                alpha=0.7,
                label="Pareto front",
                zorder=1,
            )
            ax.scatter(
                [cost(r)[0] for r in fr],
                [r.score for r in fr],
                s=90,
                facecolors="none",
                edgecolors="black",
                linewidths=1,
                zorder=3,
            )
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_metric_label(pts, split_kind))
        ax.set_title(f"{task}: {PARETO_KINDS[kind]}", fontsize="medium")
        _legend_below(ax, len(ax.get_legend_handles_labels()[1]))
    return fig


# ----- per-layer sparsity ----------------------------------------------------------------------


def matrix_grid(per_matrix: dict[str, float], all_layers=None) -> tuple[list[str], list[int], np.ndarray]:
    """(matrix type labels, layer indices, types x layers array of remaining, NaN where absent).

    ``all_layers``: the dense model's layer indices, so a removed layer shows as a gap."""
    cells: dict[tuple[str, int], list[float]] = {}
    extra_types: list[str] = []
    for name, value in per_matrix.items():
        m = _LAYER_RE.search(name)
        if not m:
            continue
        layer, rest = int(m.group(1)), m.group(2)
        label = next((lab for lab, pat in MATRIX_TYPES if re.search(pat, rest)), None)
        if label is None:
            label = rest
            if label not in extra_types:
                extra_types.append(label)
        cells.setdefault((label, layer), []).append(float(value))
    types = [lab for lab, _ in MATRIX_TYPES if any(k[0] == lab for k in cells)] + extra_types
    layers = sorted({k[1] for k in cells} | set(all_layers or []))
    grid = np.full((len(types), len(layers)), np.nan)
    for (lab, layer), vals in cells.items():
        grid[types.index(lab), layers.index(layer)] = float(np.mean(vals))
    return types, layers, grid


def per_layer_sparsity(rows: list[Row], method: str, task: str | None = None, rc=None):
    """Heatmaps of the fraction remaining per layer (columns) and matrix type (rows), one
    panel per budget, mean over seeds."""
    task = task or (rows[0].task if rows else None)
    mine = sorted((r for r in rows if r.task == task and r.method == method and r.per_matrix), key=lambda r: -r.budget)
    if not mine:
        return None
    dense = next((r for r in rows if r.task == task and r.method == "dense" and r.per_matrix), None)
    dense_layers = matrix_grid(dense.per_matrix_mean())[1] if dense is not None else None
    with plt.rc_context(rc or RC):
        base_w, base_h = plt.rcParams["figure.figsize"]
        fig, axes = plt.subplots(
            1,
            len(mine),
            figsize=(max(base_w, 2.6 * len(mine)), base_h * 0.85),
            squeeze=False,
            sharey=True,
            layout="constrained",
        )
        image = None
        for ax, r in zip(axes[0], mine):
            types, layers, grid = matrix_grid(r.per_matrix_mean(), dense_layers)
            image = ax.imshow(grid, vmin=0, vmax=1, cmap=HEATMAP_CMAP, aspect="auto")
            ax.set_xticks(range(len(layers)), [str(i) for i in layers])
            ax.set_yticks(range(len(types)), types)  # sharey hides the inner panels' labels
            ax.set_xlabel("layer")
            ax.grid(False)
            enc = r.mean("encoder_remaining")
            ax.set_title(
                f"budget {r.budget:g}" + (f" (measured {enc:.3f})" if enc is not None else ""), fontsize="small"
            )
            if grid.size <= 120:
                for (i, j), v in np.ndenumerate(grid):
                    ax.text(
                        j,
                        i,
                        "gone" if np.isnan(v) else f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if not np.isnan(v) and v < 0.5 else "black",
                    )
        fig.suptitle(f"{task}: {method}, fraction of each matrix remaining", fontsize="medium")
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9, label="remaining")
    return fig


# ----- redundancy analyses ----------------------------------------------------------------------


def head_ablation_heatmap(matrix: list[list[float]], baseline: float | None, title: str, rc=None):
    """Layers x heads: score with that single head disabled, as a difference to the baseline
    when there is one (blue = better without the head)."""
    grid = np.array(matrix, dtype=float)
    with plt.rc_context(rc or RC):
        base_w, base_h = plt.rcParams["figure.figsize"]
        fig, ax = plt.subplots(figsize=(base_w, max(base_h * 0.7, 0.3 * grid.shape[0] + 1.5)), layout="constrained")
        if baseline is not None:
            data = 100 * (grid - baseline)
            lim = max(0.1, float(np.nanmax(np.abs(data)))) if np.isfinite(data).any() else 1.0
            dark = 0.6 * lim
            image = ax.imshow(data, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto")
            label = "points vs. all heads"
        else:
            data = grid
            dark = None
            image = ax.imshow(data, cmap=HEATMAP_CMAP, aspect="auto")
            label = "score"
        ax.set_xticks(range(grid.shape[1]), [str(i) for i in range(grid.shape[1])])
        ax.set_yticks(range(grid.shape[0]), [str(i) for i in range(grid.shape[0])])
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.grid(False)
        ax.set_title(title, fontsize="medium")
        if grid.size <= 200:
            for (i, j), v in np.ndenumerate(data):
                if np.isfinite(v):
                    ax.text(
                        j,
                        i,
                        f"{v:+.1f}" if baseline is not None else f"{v:.3f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if dark is not None and abs(v) > dark else "black",
                    )
        fig.colorbar(image, ax=ax, label=label)
    return fig


def per_layer_bars(series: dict[str, list[float]], baseline: float | None, title: str, rc=None):
    """Grouped bars per layer (e.g. all-but-one head kept, whole layer's heads disabled)."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    n = max(len(v) for v in series.values())
    with plt.rc_context(rc or RC):
        fig, ax = plt.subplots(layout="constrained")
        width = 0.8 / len(series)
        for i, (name, vals) in enumerate(series.items()):
            xs = np.arange(len(vals)) + (i - (len(series) - 1) / 2) * width
            ax.bar(
                xs,
                [v if v is not None else np.nan for v in vals],
                width=width,
                label=name,
                color=["#1f78b4", "#ff7f00", "#33a02c", "#6a3d9a"][i % 4],
            )
        if baseline is not None:
            ax.axhline(baseline, color="black", linestyle="--", linewidth=1, label="all heads")
        ax.set_xticks(range(n), [str(i) for i in range(n)])
        ax.set_xlabel("layer")
        ax.set_ylabel("score")
        ax.set_title(title, fontsize="medium")
        vals = [v for vs in series.values() for v in vs if v is not None] + ([baseline] if baseline is not None else [])
        if vals:
            lo, hi = min(vals), max(vals)
            ax.set_ylim(max(0.0, lo - 0.05), hi + 0.02)
        _legend_below(ax, 1)
    return fig


def head_pruning_curves(
    rows: list[Row],
    task: str | None = None,
    methods=("head_importance", "head_random", "head_magnitude"),
    rc=None,
    split_kind: str | None = None,
):
    """Iterative head pruning: score vs. fraction of heads (or encoder weights) remaining,
    importance order vs. random order. ``split_kind``: as ``accuracy_vs_remaining``."""
    task = task or (rows[0].task if rows else None)
    rows = [r for r in rows if r.task == task]
    mine = [r for r in rows if r.method in methods and r.score is not None]
    if not mine:
        return None
    key = "heads_remaining" if all(r.mean("heads_remaining") is not None for r in mine) else "encoder_remaining"
    with plt.rc_context(rc or RC):
        fig, ax = plt.subplots(layout="constrained")
        _dense_lines(ax, rows, task)
        for method in methods:
            pts = sorted((r for r in mine if r.method == method and _finite(r.mean(key))), key=lambda r: r.mean(key))
            if not pts:
                continue
            colour, marker = method_style(method)
            ax.errorbar(
                [r.mean(key) for r in pts],
                [r.score for r in pts],
                yerr=[r.std(r.metric) or 0 for r in pts],
                color=colour,
                marker=marker,
                linestyle=linestyle(method),
                capsize=3,
                label=method,
            )
        ax.set_xlabel(("attention heads" if key == "heads_remaining" else "encoder weights") + " remaining (fraction)")
        ax.set_ylabel(_metric_label(mine, split_kind))
        ax.invert_xaxis()
        ax.set_title(f"{task}: iterative head pruning, importance vs. random order", fontsize="medium")
        _legend_below(ax, 3)
    return fig


# ----- output ------------------------------------------------------------------------------------


def to_svg_text(fig, rc=None) -> str:
    buf = io.StringIO()
    with plt.rc_context(rc or RC):
        fig.savefig(buf, format="svg", metadata=_METADATA["svg"])
    plt.close(fig)
    return buf.getvalue()


def inline_svg(svg: str, prefix: str) -> str:
    """The SVG document as an element to put inside HTML: no XML prolog or doctype, every
    ``id`` (and reference to it) prefixed so that several figures on one page never clash,
    and sized by CSS (width 100%) instead of fixed points."""
    body = svg[svg.index("<svg") :]
    ids = set(re.findall(r'\bid="([^"]+)"', body))
    if ids:
        pattern = re.compile(
            r'(\bid="|#)(' + "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)) + r')(?=["\)])'
        )
        body = pattern.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", body)
    body = re.sub(r'<svg([^>]*?)\swidth="[^"]*"', r"<svg\1", body, count=1)
    body = re.sub(r'<svg([^>]*?)\sheight="[^"]*"', r"<svg\1", body, count=1)
    return body.replace("<svg", '<svg role="img" preserveAspectRatio="xMidYMid meet"', 1)


def svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def save(fig, path: Path, rc=None, close: bool = False) -> Path:
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(rc or RC):
        fig.savefig(path, format=fmt, metadata=_METADATA.get(fmt))
    if close:
        plt.close(fig)
    return path
