"""Check that the published leaderboard is what its committed records give.

The records behind ``reports/leaderboard.{md,csv,json}`` (with their ``.predictions.json``)
are committed under ``reports/records/{task}/{method}/{budget}/seed{N}.json``. This module
regenerates the leaderboard from them with the project's own command,

    python -m prunebench leaderboard --records reports/records --markdown OUT/leaderboard.md --csv OUT/leaderboard.csv

into a temporary folder and compares it with the committed files: the Markdown line by line,
the CSV and JSON value by value (numbers within ``REL_TOL``, so that a last-digit difference of
a float on another CPU does not fail CI; the Markdown prints rounded numbers). Volatile content
(a generation time) is ignored. Run it from the repository root:

    python -m prunebench.report.published [--records reports/records] [--published reports]

``--publish RECORD...`` instead copies a run's records with their predictions under
``reports/records`` and writes the leaderboard from them (the workflow's ``publish_leaderboard``).

Exit status 0: identical (or no records committed yet: says "SKIP" and why); 1: differs,
with a unified diff of the Markdown and the first differing values of the CSV/JSON.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import math
import re
import shutil
import sys
import tempfile
from pathlib import Path

from prunebench.report import readme_excerpt
from prunebench.report.leaderboard import write_leaderboard
from prunebench.report.render import render_report

FILES = ("leaderboard.md", "leaderboard.csv", "leaderboard.json")
#: lines (Markdown) and keys (JSON/CSV) whose content changes from run to run
VOLATILE_LINE = re.compile(r"^\s*(Generated|generated)\b")
VOLATILE_KEYS = frozenset({"generated", "generated_at"})
REL_TOL = 1e-9
MAX_REPORTED = 20


def regenerate(records: Path, out: Path) -> list[Path]:
    """Write the leaderboard of the records under ``records`` into ``out`` (as ``prunebench leaderboard``)."""
    out.mkdir(parents=True, exist_ok=True)
    write_leaderboard([str(records)], out / FILES[0], out / FILES[1])
    return [out / f for f in FILES]


def _markdown_lines(path: Path) -> list[str]:
    """The Markdown's lines without volatile ones (and without the blank lines they leave at the end)."""
    lines = [line for line in path.read_text().splitlines() if not VOLATILE_LINE.match(line)]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _same_value(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        try:
            a, b = float(a), float(b)
        except ValueError:
            return a == b
    if (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=REL_TOL) or (math.isnan(a) and math.isnan(b))
    return a == b


def _compare_rows(name: str, published: list[dict], regenerated: list[dict]) -> list[str]:
    if len(published) != len(regenerated):
        return [f"{name}: {len(published)} rows published, {len(regenerated)} regenerated"]
    out = []
    for i, (p, r) in enumerate(zip(published, regenerated)):
        for key in sorted((set(p) | set(r)) - VOLATILE_KEYS):
            if not _same_value(p.get(key), r.get(key)):
                out.append(
                    f"{name} row {i} ({p.get('method')} @ {p.get('budget')}), {key}: "
                    f"published {p.get(key)!r}, regenerated {r.get(key)!r}"
                )
    return out


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def compare(published: Path, regenerated: Path) -> list[str]:
    """Differences between the committed leaderboard in ``published`` and ``regenerated`` (empty: same)."""
    problems = [
        f"{published / f} is missing (regenerate it: make publish-leaderboard)"
        for f in FILES
        if not (published / f).exists()
    ]
    if problems:
        return problems
    md_pub, md_new = _markdown_lines(published / FILES[0]), _markdown_lines(regenerated / FILES[0])
    if md_pub != md_new:
        problems += list(
            difflib.unified_diff(
                md_pub,
                md_new,
                f"{published / FILES[0]} (committed)",
                f"{FILES[0]} (regenerated from the records)",
                lineterm="",
                n=1,
            )
        )
    problems += _compare_rows(FILES[1], _csv_rows(published / FILES[1]), _csv_rows(regenerated / FILES[1]))
    problems += _compare_rows(
        FILES[2], json.loads((published / FILES[2]).read_text()), json.loads((regenerated / FILES[2]).read_text())
    )
    return problems


def has_records(records: Path) -> bool:
    return records.is_dir() and any(records.rglob("seed*.json"))


def render_published_report(records: Path, out: Path) -> Path:
    """The HTML report of the committed records (as ``prunebench report``)."""
    paths = sorted(str(p) for p in records.rglob("seed*.json") if not p.name.endswith(".predictions.json"))
    render_report(paths, out)
    return out


def write_readme_excerpt(records: Path, published: Path, readme: Path) -> list[Path]:
    """Draw the headline figure into ``published/figures`` and render the README's results block."""
    figure = readme_excerpt.write_figure(records, published / readme_excerpt.FIGURE)
    readme_excerpt.update_readme(readme, readme_excerpt.render_block(published / FILES[2], records))
    return [figure, readme]


def compare_readme_excerpt(records: Path, regenerated: Path, published: Path, readme: Path) -> list[str]:
    """Differences between the README's results block and headline figure and what the records give."""
    problems = readme_excerpt.check_readme(readme, readme_excerpt.render_block(regenerated / FILES[2], records))
    drawn = readme_excerpt.write_figure(records, regenerated / readme_excerpt.FIGURE)
    committed = published / readme_excerpt.FIGURE
    if not committed.is_file():
        problems.append(f"{committed} is missing")
    elif committed.read_bytes() != drawn.read_bytes():
        problems.append(f"{committed} differs from the figure the records give")
    return problems


def check(records: Path, published: Path, render: bool = False, readme: Path | None = None) -> tuple[int, str]:
    """(exit status, message): 0 and "SKIP ..." without records, 0 when equal, 1 with the differences.
    With ``render``, the HTML report of the records is also rendered (it must not fail); with
    ``readme``, its results block and headline figure are compared with what the records give."""
    if not has_records(records):
        return 0, (
            f"SKIP: no committed records under {records}: the published leaderboard cannot be checked "
            "until the records behind it are committed there (with their .predictions.json)"
        )
    with tempfile.TemporaryDirectory(prefix="leaderboard-check-") as tmp:
        regenerate(records, Path(tmp))
        problems = compare(published, Path(tmp))
        if readme is not None:
            problems += compare_readme_excerpt(records, Path(tmp), published, readme)
        if render:
            render_published_report(records, Path(tmp) / "report.html")
    if not problems:
        return 0, (
            f"OK: {published}/leaderboard.{{md,csv,json}}"
            + (f", {readme}'s results block and {published / readme_excerpt.FIGURE}" if readme else "")
            + f" match the records under {records}"
            + (" (and their report renders)" if render else "")
        )
    shown = problems[:MAX_REPORTED] + (
        [f"... and {len(problems) - MAX_REPORTED} more"] if len(problems) > MAX_REPORTED else []
    )
    return 1, (
        f"FAIL: the published leaderboard in {published} differs from what the records under {records} give "
        "(regenerate it with: make publish-leaderboard):\n" + "\n".join(shown)
    )


def publish(run_records: list[Path], records: Path, published: Path) -> list[Path]:
    """Publish a run: copy its records (and each one's ``.predictions.json``, which must exist) under
    ``records`` (replacing what was there), then write the leaderboard from them into ``published``.

    ``run_records`` are paths ``.../records/{task}/{method}/{budget}/seed{N}.json``; the last four
    parts are kept. Returns the leaderboard files written."""
    from prunebench.report.stats import predictions_path

    pairs = []
    for rec in run_records:
        pred = predictions_path(rec)
        if not pred.exists():
            raise FileNotFoundError(f"{pred}: the predictions of {rec} are missing; a published record needs them")
        rel = Path(*rec.parts[-4:])
        pairs += [(rec, records / rel), (pred, records / rel.parent / pred.name)]
    if records.exists():
        shutil.rmtree(records)
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return regenerate(records, published)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prunebench.report.published", description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="reports/records", help="folder of the committed records")
    parser.add_argument("--published", default="reports", help="folder of the committed leaderboard.{md,csv,json}")
    parser.add_argument(
        "--render-report",
        action="store_true",
        help="also render the HTML report of the records (it must render without error)",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also check (or, with --regenerate, write) this README's results block and headline figure",
    )
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="instead of checking: write the leaderboard (and, with --readme, the README block and figure) "
        "from the committed records",
    )
    parser.add_argument(
        "--publish",
        nargs="+",
        metavar="RECORD",
        type=Path,
        help="instead of checking: copy these run records (with predictions) under --records "
        "and write the leaderboard from them into --published",
    )
    args = parser.parse_args(argv)
    records, published = Path(args.records), Path(args.published)
    if args.publish or args.regenerate:
        if args.publish:
            written = publish(args.publish, records, published)
        else:
            written = regenerate(records, published)
        if args.readme is not None:
            written += write_readme_excerpt(records, published, args.readme)
        print(f"wrote from the records under {records}: " + ", ".join(map(str, written)))
        return 0
    status, message = check(records, published, render=args.render_report, readme=args.readme)
    print(message, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
