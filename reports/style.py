"""The one place that maps a method to its colour and marker, and sets figure style."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

_PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4",
            "#b2df8a", "#fb9a99", "#cab2d6", "#ff7f00"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p"]

#: Fixed assignments so a method keeps its look across every figure and report.
_FIXED = {"dense": ("#000000", "*"), "random": ("#999999", "x")}
_ORDER = ["magnitude_global", "magnitude_local", "magnitude_oneshot", "movement_hard", "movement_soft", "rpp",
          "random_matched", "head_importance", "head_l0", "fixed_attention", "layerdrop", "flop", "int8_dynamic",
          "head_random"]


def method_style(method: str) -> tuple[str, str]:
    if method in _FIXED:
        return _FIXED[method]
    i = _ORDER.index(method) if method in _ORDER else len(_ORDER) + sum(map(ord, method))
    return _PALETTE[i % len(_PALETTE)], _MARKERS[i % len(_MARKERS)]


def linestyle(method: str) -> str:
    """Baselines dotted, everything else solid."""
    return ":" if method in ("random", "random_matched", "head_random") else "-"


#: Colour map of sparsity heatmaps (fraction remaining, 0 = all pruned) and of ablations.
HEATMAP_CMAP = "viridis"
DIVERGING_CMAP = "RdBu"

RC = {
    "figure.figsize": (6.0, 4.0),
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "prunebench",  # reproducible SVG ids
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
}

#: Paper figures: one-column size, smaller type, same colours and markers.
PAPER_RC = {
    **RC,
    "figure.figsize": (3.4, 2.5),
    "font.size": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.markersize": 4,
    "lines.linewidth": 1.2,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
}
