"""The docs' result tables are rendered from records and checked: a hand-edited number fails the check."""

import json
import shutil
from pathlib import Path

import pytest

from prunebench.report import docs_tables
from prunebench.report.docs_tables import TableError, check_file, render_file

REPO = Path(__file__).resolve().parents[1]


def _block(name: str) -> str:
    return f"<!-- table:{name}:start -->\n<!-- table:{name}:end -->\n"


def test_a_hand_edited_number_in_a_generated_table_fails_the_check(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# results\n\n" + _block("quantized") + "\nprose\n")
    doc.write_text(render_file(doc, REPO))
    assert check_file(doc, REPO) == []
    text = doc.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `q8bert`"))
    edited = row.replace("| 1 |", "| 3 |", 1)
    assert edited != row
    doc.write_text(text.replace(row, edited))
    problems = check_file(doc, REPO)
    assert any(p.startswith("-| `q8bert` | 3 |") for p in problems)
    assert any(p.startswith("+| `q8bert` | 1 |") for p in problems)
    assert docs_tables.main([str(doc), "--root", str(REPO)]) == 1


def test_the_committed_docs_tables_are_what_the_records_give():
    assert check_file(REPO / "docs" / "results.md", REPO) == []
    assert set(docs_tables.tables_in(REPO / "docs" / "results.md")) == set(docs_tables.TABLES)


def test_unknown_and_unclosed_tables_are_named(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(_block("no-such-table"))
    with pytest.raises(TableError, match="unknown table 'no-such-table'"):
        render_file(doc, REPO)
    doc.write_text("<!-- table:quantized:start -->\n| typed |\n")
    with pytest.raises(TableError, match="'quantized' has no '<!-- table:quantized:end -->'"):
        render_file(doc, REPO)


def _entry(method, budget, **kw):
    base = {
        "method": method,
        "budget": budget,
        "seeds": 1,
        "score_mean": 0.8,
        "score_low": 0.78,
        "score_high": 0.82,
        "met_budget": True,
        "encoder_remaining": budget,
        "remaining_before_finalize": budget,
        "enforced_by_truncation": False,
        "enforced_by_fill_up": False,
        "calibration_note": None,
        "speedup_b1": 1.0,
        "speedup_bmax": 1.0,
        "ort_speedup_b1": None,
        "ort_speedup_bmax": None,
    }
    return {**base, **kw}


def test_a_row_that_missed_the_budget_or_was_filled_up_says_so_and_gets_no_speed_up(tmp_path):
    board = [
        _entry("magnitude_2to4", 0.5),
        _entry("magnitude_2to4", 0.1, met_budget=False, encoder_remaining=0.5),
        _entry("obert", 0.1, enforced_by_fill_up=True, remaining_before_finalize=0.04, speedup_b1=0.97),
    ]
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "leaderboard.json").write_text(json.dumps(board))
    table = docs_tables.beyond_survey(tmp_path)
    two_four = next(line for line in table.splitlines() if line.startswith("| `magnitude_2to4`"))
    assert "budget not reached: 0.500 remaining, unranked" in two_four and two_four.endswith("| — | — |")
    obert = next(line for line in table.splitlines() if line.startswith("| `obert`"))
    assert "† 0.040 by its own rule, enforced by fill-up" in obert and "0.97 / 1.00" in obert


def test_a_missing_source_is_named(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(_block("convergence"))
    shutil.copytree(REPO / "reports" / "convergence" / "records", tmp_path / "elsewhere")
    with pytest.raises(TableError, match="reports/convergence/records has no records"):
        render_file(doc, tmp_path)
