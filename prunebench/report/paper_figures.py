"""Paper figures: every report figure as vector PDF and SVG, one-column size, reproducibly.

    python -m prunebench.report.paper_figures --records RECORD... --out-dir results/figures/paper [--analysis-dir DIR]

(the Snakemake target ``paper_figures``). Same colours and markers as the report
(``prunebench.report.style``), ``style.PAPER_RC`` for size and type, fixed metadata (no dates) and a
fixed ``svg.hashsalt``, so the same records give byte-identical files. Records that are
missing or do not load are skipped and named on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from prunebench.report import cross_task, figures
from prunebench.report.analysis import find_head_ablations
from prunebench.report.collect import aggregate, load_record_set, results_dir_of
from prunebench.report.style import PAPER_RC

FORMATS = ("pdf", "svg")


def _strip_titles(fig) -> None:
    """Papers caption their figures: drop the report's figure titles (panel titles stay)."""
    if fig._suptitle is not None:
        fig._suptitle.set_text("")
    plots = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    if len(plots) == 1:
        plots[0].set_title("")


def _write(fig, out_dir: Path, stem: str, written: list[Path]) -> None:
    if fig is None:
        return
    _strip_titles(fig)
    for fmt in FORMATS:
        written.append(figures.save(fig, out_dir / f"{stem}.{fmt}", rc=PAPER_RC))
    plt.close(fig)


def write_paper_figures(record_paths, out_dir: Path | str, analysis_dir: Path | str | None = None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rs = load_record_set(record_paths)
    for p in rs.problems:
        print(
            f"paper_figures: skipped {p.path}: {p.status}: {p.error.splitlines()[0] if p.error else ''}",
            file=sys.stderr,
        )
    rows = aggregate(rs.records)
    if analysis_dir is None:
        root = next((results_dir_of(p) for p in rs.expected if results_dir_of(p) is not None), None)
        analysis_dir = root / "analysis" if root is not None else None
    written: list[Path] = []
    kinds = cross_task.split_kinds(rs.records)  # a stand-in evaluation split never reads "dev"
    for task in sorted({r.task for r in rows}):
        split = (kinds.get(task) or {}).get("kind")
        _write(
            figures.accuracy_vs_remaining(rows, task, rc=PAPER_RC, split_kind=split),
            out_dir,
            f"accuracy_vs_remaining_{task}",
            written,
        )
        for kind in figures.PARETO_KINDS:
            _write(
                figures.pareto_plot(rows, kind, task, rc=PAPER_RC, split_kind=split),
                out_dir,
                f"pareto_{kind}_{task}",
                written,
            )
        for method in sorted({r.method for r in rows if r.task == task and r.method != "dense"}):
            _write(
                figures.per_layer_sparsity(rows, method, task, rc=PAPER_RC),
                out_dir,
                f"per_layer_{method}_{task}",
                written,
            )
        _write(
            figures.head_pruning_curves(rows, task, rc=PAPER_RC, split_kind=split),
            out_dir,
            f"head_pruning_{task}",
            written,
        )
    for ab in find_head_ablations(analysis_dir):
        if ab.single is not None:
            _write(
                figures.head_ablation_heatmap(ab.single, ab.baseline, f"{ab.task}: one head disabled", rc=PAPER_RC),
                out_dir,
                f"head_ablation{'' if ab.mode == 'mask' else '_' + ab.mode}_{ab.task}_seed{ab.seed}",
                written,
            )
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", nargs="+", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--analysis-dir", default=None)
    args = parser.parse_args(argv)
    written = write_paper_figures(args.records, args.out_dir, args.analysis_dir)
    print(f"paper_figures: wrote {len(written)} files to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
