"""The report in a real browser: headless Chromium (Debian's ``chromium``) over the DevTools
pipe (``tests/browser.py``, no Python dependency). Checks that the page has no console errors,
that every figure (inline SVG) renders with a size and content, every image loads, that
clicking a column header sorts and that the filters hide rows, and saves a full-page
screenshot to ``results/report_screenshot.png`` for a person to look at.
"""

from __future__ import annotations

import pytest

from prunebench.report.render import render_report
from tests.browser import Chromium, find_chromium
from tests.conftest import REPO
from tests.report_records import build_results

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="chromium is not installed (Debian: apt-get install -y chromium; CI installs it)"
)

SCREENSHOT = REPO / "results" / "report_screenshot.png"
ROWS = "Array.from(document.querySelectorAll('#leaderboard-table tbody tr'))"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser") / "results"
    info = build_results(root)
    out = render_report(info["expected"], root / "report.html", generated="2026-01-01T00:00:00+00:00")
    with Chromium(width=1366, height=768) as browser:
        browser.navigate(out.resolve().as_uri())
        yield browser


def _column(page, index: int) -> list[str]:
    return page.evaluate(f"{ROWS}.filter(r => !r.hidden).map(r => r.cells[{index}].textContent.trim())")


def test_no_console_errors_and_every_figure_loads(page):
    assert page.evaluate("document.readyState") == "complete"
    figures = page.evaluate("""Array.from(document.querySelectorAll('figure')).map(f => {
        const svg = f.querySelector('svg'), r = svg ? svg.getBoundingClientRect() : null;
        const marks = svg ? svg.querySelectorAll('path, use, text').length : 0;
        return [f.id, !!svg, r ? r.width : 0, r ? r.height : 0, marks]; })""")
    assert len(figures) >= 14
    broken = [fid for fid, has_svg, w, h, marks in figures if not (has_svg and w > 100 and h > 50 and marks > 10)]
    assert not broken, f"figures that did not render: {broken}"
    images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
    assert all(complete and width > 0 for complete, width, _ in images), images
    assert page.console_errors == []


def test_clicking_a_header_sorts_the_rows(page):
    before = _column(page, 5)  # score, ranked within budgets: not globally sorted
    assert before != sorted(before)
    page.click("#leaderboard-table thead th:nth-child(6)")
    ascending = _column(page, 5)
    assert ascending == sorted(ascending, key=float) and ascending != before
    assert (
        page.evaluate("document.querySelector('#leaderboard-table thead th:nth-child(6)').getAttribute('aria-sort')")
        == "ascending"
    )
    page.click("#leaderboard-table thead th:nth-child(6)")
    assert _column(page, 5) == sorted(ascending, key=float, reverse=True)
    page.click("#leaderboard-table thead th:nth-child(4)")  # method names sort as text
    methods = _column(page, 3)
    assert methods == sorted(methods)
    assert page.console_errors == []


def test_filters_hide_rows(page):
    page.evaluate("""(() => { const s = document.querySelector('select[data-filter="method"]');
        s.value = 'random'; s.dispatchEvent(new Event('change')); })()""")
    assert set(_column(page, 3)) == {"random"}
    survey_shown = page.evaluate(
        "Array.from(document.querySelectorAll('#survey-table tbody tr')).filter(r => !r.hidden).length"
    )
    assert survey_shown == 0  # no paper maps to the random floor
    page.evaluate("""(() => { const s = document.querySelector('select[data-filter="method"]');
        s.value = ''; s.dispatchEvent(new Event('change'));
        const b = document.querySelector('select[data-filter="budget"]');
        b.value = '0.1'; b.dispatchEvent(new Event('change')); })()""")
    assert set(_column(page, 1)) == {"0.1"}
    page.evaluate("""(() => { const b = document.querySelector('select[data-filter="budget"]');
        b.value = ''; b.dispatchEvent(new Event('change')); })()""")
    assert len(_column(page, 1)) == 11
    assert page.console_errors == []


def test_screenshot_for_a_person(page):
    page.evaluate("window.scrollTo(0, 0)")
    path = page.screenshot(SCREENSHOT, full_page=True)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000
