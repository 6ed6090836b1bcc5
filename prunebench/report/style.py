"""The one place that maps a method to its colour and marker, and sets figure style."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

#: Fixed assignments so a method keeps its look across every figure and report (ColorBrewer
#: colours, each (colour, marker) pair unique; baselines grey or dotted).
_FIXED = {
    "dense": ("#000000", "*"),
    "random": ("#999999", "x"),
    "magnitude_global": ("#1b9e77", "o"),
    "magnitude_local": ("#d95f02", "s"),
    "magnitude_oneshot": ("#7570b3", "^"),
    "movement_hard": ("#e7298a", "D"),
    "movement_soft": ("#66a61e", "v"),
    "movement_hard_pretrained": ("#e7298a", "d"),
    "movement_soft_pretrained": ("#66a61e", "1"),
    "rpp": ("#e6ab02", "P"),
    "random_matched": ("#666666", "+"),
    "head_importance": ("#1f78b4", "<"),
    "head_random": ("#a6cee3", ">"),
    "head_magnitude": ("#08519c", "^"),
    "layer_prune": ("#fdbf6f", "s"),
    "head_l0": ("#b15928", "h"),
    "fixed_attention": ("#6a3d9a", "p"),
    "layerdrop": ("#ff7f00", "H"),
    "flop": ("#17becf", "X"),
    "int8_dynamic": ("#e31a1c", "d"),
}
#: For methods added later: a stable colour and marker from the name (never one of the above).
_PALETTE = [
    "#8c564b",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "H", "d"]


def method_style(method: str) -> tuple[str, str]:
    """(colour, marker) of ``method``: the same in every figure and table."""
    if method in _FIXED:
        return _FIXED[method]
    h = sum((i + 1) * ord(c) for i, c in enumerate(method))
    return _PALETTE[h % len(_PALETTE)], _MARKERS[(h // len(_PALETTE)) % len(_MARKERS)]


def linestyle(method: str) -> str:
    """Baselines dotted, everything else solid."""
    return ":" if method in ("random", "random_matched", "head_random", "head_magnitude", "layer_prune") else "-"


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
    "figure.figsize": (3.4, 3.0),
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
