"""The README's results block is rendered from the published records, and a hand edit is caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from prunebench.report import readme_excerpt

REPO = Path(__file__).resolve().parents[1]
LEADERBOARD = REPO / "reports" / "leaderboard.json"
RECORDS = REPO / "reports" / "records"

pytestmark = pytest.mark.skipif(not LEADERBOARD.is_file(), reason="no published leaderboard committed")


@pytest.fixture(scope="module")
def block() -> str:
    return readme_excerpt.render_block(LEADERBOARD, RECORDS)


def test_committed_readme_block_is_what_the_records_give(block):
    assert readme_excerpt.check_readme(REPO / "README.md", block) == []


def test_a_hand_edited_number_fails_the_check(block, tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    text = readme.read_text()
    dense = next(line for line in text.splitlines() if line.startswith("| 1 | 1= | dense |"))
    edited = dense.replace("0.8452", "0.8552", 1)
    assert edited != dense
    readme.write_text(text.replace(dense, edited))
    problems = readme_excerpt.check_readme(readme, block)
    assert any("0.8552" in p for p in problems) and any("0.8452" in p for p in problems)
    assert readme_excerpt.update_readme(readme, block)  # rewriting restores the rendered block
    assert readme_excerpt.check_readme(readme, block) == [] and readme.read_text() == text


def test_block_lists_the_tied_leaders_of_each_budget(block):
    rows = [r for r in json.loads(LEADERBOARD.read_text()) if r["task"] == "sst2"]
    for budget in {r["budget"] for r in rows if r["budget"] < 1}:
        leaders = [r for r in rows if r["budget"] == budget and r["met_budget"] and r["rank"] == 1]
        shown = [r for r in leaders[: readme_excerpt.MAX_LEADERS]]
        for r in shown:
            assert f"| {budget:g} | 1= | {r['method']} |" in block
        if len(leaders) > len(shown):
            assert f"… {len(leaders) - len(shown)} more tied" in block
    assert block.startswith(readme_excerpt.START) and block.endswith(readme_excerpt.END)


def test_missing_markers_are_a_clear_error(tmp_path, block):
    readme = tmp_path / "README.md"
    readme.write_text("# no results block\n")
    with pytest.raises(readme_excerpt.ExcerptError, match="results-excerpt:start"):
        readme_excerpt.check_readme(readme, block)
