"""Render the HTML report from result records with jinja2 (self-contained: figures inline)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jinja2

from reports import figures
from reports.collect import aggregate, load_records
from reports.leaderboard import leaderboard_rows

TEMPLATES = Path(__file__).with_name("templates")


def render_report(record_paths, out: Path, figure_path: Path | None = None) -> Path:
    records = load_records(record_paths)
    rows = aggregate(records)
    fig = figures.accuracy_vs_remaining(rows)
    if figure_path is not None:
        figures.save(fig, figure_path)
    svg = figures.to_svg_text(fig)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined)
    provenance = records[0]["provenance"] if records else {}
    html = env.get_template("report.html.j2").render(
        board=leaderboard_rows(records),
        figure_svg=svg,
        records=records,
        provenance=provenance,
        measurement=records[0]["details"]["measurement"] if records else {},
        config=records[0]["config"] if records else {},
        generated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        n_records=len(records),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    return out
