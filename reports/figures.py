"""Figures of the report, written reproducibly (fixed metadata, fixed SVG hash salt)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt

from reports.collect import Row
from reports.style import RC, method_style

_METADATA = {"svg": {"Date": None, "Creator": "prunebench"}, "pdf": {"CreationDate": None, "Creator": "prunebench"},
             "png": {"Software": "prunebench"}}


def accuracy_vs_remaining(rows: list[Row]):
    """Task score vs. fraction of encoder weights remaining; dense line, random floor marked."""
    with plt.rc_context(RC):
        fig, ax = plt.subplots()
        dense = [r for r in rows if r.method == "dense"]
        for d in dense:
            ax.axhline(d.score, color="black", linestyle="--", linewidth=1, label=f"dense ({d.task})")
        for method in sorted({r.method for r in rows if r.method != "dense"}):
            pts = sorted((r for r in rows if r.method == method and r.score is not None),
                         key=lambda r: r.mean("encoder_remaining") or 0)
            if not pts:
                continue
            colour, marker = method_style(method)
            ax.errorbar([r.mean("encoder_remaining") for r in pts], [r.score for r in pts],
                        yerr=[r.std(r.metric) or 0 for r in pts], color=colour, marker=marker, label=method,
                        capsize=3, linestyle="-" if method != "random" else ":")
        ax.set_xscale("log")
        ax.set_xlabel("encoder weights remaining (fraction, log scale)")
        metric = rows[0].metric if rows else "accuracy"
        ax.set_ylabel(f"dev {metric}")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
    return fig


def to_svg_text(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=_METADATA["svg"])
    plt.close(fig)
    return buf.getvalue()


def save(fig, path: Path) -> Path:
    fmt = path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=fmt, metadata=_METADATA.get(fmt))
    return path
