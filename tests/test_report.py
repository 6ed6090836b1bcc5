"""The report, leaderboard, survey table and paper figures, on synthetic records built here.

``tests/report_records.py`` writes schema-valid records of several methods, budgets and two
seeds (plus a corrupt record, a failed and a missing run, benchmark files and a head
ablation) into a temporary folder; nothing here reads ``results/``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prunebench.report.analysis import read_head_ablation
from prunebench.report.collect import aggregate, load_record_set, pareto_front, read_benchmarks, wall_time_per_rule
from prunebench.report.leaderboard import to_markdown, write_leaderboard
from prunebench.report.render import render_report
from prunebench.report.survey import categorize, load_survey, survey_rows, unmeasured_cells
from tests.conftest import REPO
from tests.report_records import FRONT_REMAINING, RUNS, TASK, build_results, make_record


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "results"
    info = build_results(root)
    info["root"] = root
    return info


@pytest.fixture(scope="module")
def rows(results):
    return aggregate(load_record_set(results["expected"]).records)


@pytest.fixture(scope="module")
def html(results):
    out = render_report(
        results["expected"],
        results["root"] / "report.html",
        results["root"] / "figures" / "accuracy_vs_remaining.svg",
        generated="2026-01-01T00:00:00+00:00",
    )
    return out.read_text()


@pytest.fixture(scope="module")
def table(rows):
    return {row.paper["key"]: row for row in survey_rows(rows)}


# ----- reading records ----------------------------------------------------------------------


def test_record_set_lists_corrupt_failed_and_missing_runs(results):
    rs = load_record_set(results["expected"])
    assert len(rs.records) == len(results["present"]) == 22
    problems = {p.path: p for p in rs.problems}
    assert set(problems) == {results["corrupt"], results["failed"], results["missing"]}
    assert problems[results["corrupt"]].status == "failed"
    assert "corrupt or truncated" in problems[results["corrupt"]].error
    assert problems[results["failed"]].status == "failed"
    assert "training loss became nan" in problems[results["failed"]].log_tail
    assert problems[results["missing"]].status == "missing"
    assert (problems[results["missing"]].method, problems[results["missing"]].budget) == ("magnitude_local", "0.1")


def test_aggregate_over_two_seeds(rows):
    mg = next(r for r in rows if r.method == "magnitude_global" and r.budget == 0.1)
    assert sorted(mg.seeds) == [0, 1]
    assert mg.score == pytest.approx(0.81)
    assert mg.std("accuracy") == pytest.approx(0.0141421, rel=1e-4)
    assert mg.bmax == 32
    assert len(mg.per_matrix_mean()) == 12


def test_pareto_front_on_a_known_example(rows):
    front = pareto_front(rows, "encoder_remaining")
    assert front == {(TASK, m, b) for m, b in FRONT_REMAINING}
    # latency at batch 1: int8 is fastest at the best score below dense; head_importance@0.4 is as fast but worse
    assert pareto_front(rows, "latency_b1") == {(TASK, "dense", 1.0), (TASK, "int8_dynamic", 1.0)}


def test_benchmark_files_give_wall_time_per_rule(results):
    bench = read_benchmarks(results["root"] / "benchmarks")
    rules = {r["rule"]: r for r in wall_time_per_rule(bench)}
    assert rules["finetune_dense"]["jobs"] == 2 and rules["finetune_dense"]["total_s"] == pytest.approx(24.0)
    assert rules["prune"]["max_s"] == pytest.approx(21.0)
    assert rules["head_ablation"]["total_s"] == pytest.approx(40.0)
    broken = next(b for b in bench if b["job"] == "broken")
    assert broken["s"] is None and "empty" in broken["error"]


# ----- the survey table -------------------------------------------------------------------------


def test_survey_file_names_every_paper_of_the_survey_table():
    survey = load_survey()
    keys = [p["key"] for p in survey["papers"]]
    for key in [
        "zafrir2019q8bert",
        "fan2020training",
        "shen2020q",
        "gordon2020compressing",
        "guo2019reweighted",
        "sanh2020movement",
        "raganato2020fixed",
        "fan2019reducing",
        "wang2019structured",
        "michel2019sixteen",
        "voita2019analyzing",
        "kovaleva2019revealing",
    ]:
        assert key in keys
    for p in survey["papers"]:
        assert re.fullmatch(r"\d{4}\.\d{5}", p["arxiv"]), p["key"]
        for claim in (p.get("claims") or {}).values():
            assert claim["tag"] in ("V", "S", "U"), p["key"]
        if p["in_survey_table"]:
            assert set(p["survey"]) == {"memory", "inference", "component", "pretrain", "performance"}


def test_survey_cells_compare_claims_with_measurements(table):
    sanh = table["sanh2020movement"].cells
    assert sanh["memory"].status == "caveat"  # 10% of the encoder remains, the saved model is 56% of dense
    assert "56%" in sanh["memory"].reason
    assert sanh["component"].status == "disagree"  # survey: layers and heads; movement pruning is element-wise
    assert "as the paper says" in sanh["component"].reason
    assert sanh["pretrain"].status == "agree"
    assert sanh["performance"].status == "agree" and "-5.0 pt" in sanh["performance"].reason

    q8 = table["zafrir2019q8bert"].cells
    assert q8["memory"].status == "disagree" and "44%" in q8["memory"].reason  # claimed 4x smaller
    assert q8["performance"].status == "agree"
    assert q8["inference"].status == "no-claim" and any("×1.65" in m for m in q8["inference"].measured)

    gordon = table["gordon2020compressing"].cells
    assert gordon["memory"].status == "not-measured" and "no run near" in gordon["memory"].reason
    assert gordon["pretrain"].status == "not-measured" and gordon["pretrain"].reason.startswith("needs pre-training")
    assert gordon["component"].status == "agree"
    assert gordon["performance"].status == "caveat"  # claimed same; -2.0 pt at the nearest budget 0.5


def test_unrun_papers_say_why(table, rows):
    for column, cell in table["fan2020training"].cells.items():
        # implemented (methods/quant_noise.py) but without records in these test runs: said, not guessed
        assert cell.status == "not-measured" and cell.reason.startswith("method not run in this profile"), column
        assert "quant_noise" in cell.reason, column
    flop = table["wang2019structured"].cells["memory"]
    assert flop.status == "not-measured"
    assert flop.reason.startswith(("not implemented yet", "method not run in this profile"))
    assert table["kovaleva2019revealing"].cells["performance"].reason.startswith("an analysis")
    cells = unmeasured_cells(list(table.values()))
    assert all(c["reason"] for c in cells)
    assert {"paper": "Quant-Noise", "task": TASK, "column": "memory"} in [
        {k: c[k] for k in ("paper", "task", "column")} for c in cells
    ]


def test_performance_categories():
    assert [categorize(d) for d in (1.0, 0.2, -0.4, -1.0, -2.0, -2.1)] == [
        "better",
        "same",
        "same",
        "slightly_worse",
        "slightly_worse",
        "worse",
    ]


# ----- the HTML report ----------------------------------------------------------------------------


def test_report_is_self_contained_with_figures(html, results):
    assert not re.search(r"""(src|href)=["']https?:""", html), "no external resources"
    assert "<script src" not in html and "<link" not in html
    figs = re.findall(r'<figure id="([^"]+)"[^>]*><div class="svg"[^>]*><svg role="img"', html)
    assert len(figs) >= 4 + 1 + 6 + 2 + 1  # Pareto x4, accuracy, per-layer x6, ablation x2, head curves
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "figure ids are unique on the page"
    for ref in set(re.findall(r'(?:href="|url\()#([^")]+)', html)):
        assert ref in ids, f"dangling reference #{ref}"
    assert (results["root"] / "figures" / "accuracy_vs_remaining.svg").read_text().startswith("<?xml")
    assert "@media print" in html


def test_report_tables(html):
    board = html.split('id="leaderboard-table"')[1].split("</table>")[0]
    assert board.count("<tr data-task=") == 11
    assert 'data-method="int8_dynamic"' in board
    survey = html.split('id="survey-table"')[1].split("</table>")[0]
    assert survey.count("<tr data-task=") == 12
    assert "st-disagree" in survey and "st-caveat" in survey and "st-agree" in survey and "st-not-measured" in survey
    assert "Quantized 8Bit BERT" in survey and "1910.06188" in survey


def test_report_lists_missing_and_failed_runs(html, results):
    runs = html.split('id="problems-table"')[1].split("</table>")[0]
    for key in ("corrupt", "failed", "missing"):
        assert results[key] in runs
    assert (
        "corrupt or truncated" in runs and "training loss became nan" in runs and "not run (no record, no log)" in runs
    )
    assert "3 of 25 expected records" in html


def test_report_provenance_and_analyses(html):
    prov = html.split('id="provenance"')[1]
    assert "0123456789abcdef" in prov and "torch 2.13.0+cpu" in prov and "Test CPU" in prov
    rules = prov.split('id="rules-table"')[1].split("</table>")[0]
    assert "finetune_dense" in rules and "24.0" in rules
    red = html.split('id="redundancy"')[1].split('id="provenance"')[0]
    assert "head_ablation_seed0.json" in red and 'id="abl-single-sst2-0"' in red
    # Kovaleva's uniform-attention variant is a second, separately labelled analysis
    assert "head_ablation_uniform_seed0.json" in red and 'id="abl-single-sst2-0-uniform"' in red
    assert "uniform attention 1/L" in red
    assert "Not shown: unreadable" in red  # the corrupt seed-1 analysis
    assert 'id="heads-sst2"' in red


def test_report_renders_with_no_records(tmp_path):
    expected = [
        tmp_path / "results/records/sst2/dense/1/seed0.json",
        tmp_path / "results/records/sst2/random/0.5/seed0.json",
    ]
    out = render_report(expected, tmp_path / "results/report.html", tmp_path / "results/figures/a.svg")
    text = out.read_text()
    assert "0 result records of 2 expected" in text and "not run (no record, no log)" in text
    assert (tmp_path / "results/figures/a.svg").exists()


def test_cli_report_keeps_working_with_corrupt_records(results, tmp_path):
    from prunebench.runner.cli import main

    out = tmp_path / "cli.html"
    assert main(["report", "--records", *results["expected"], "--out", str(out)]) == 0
    assert "corrupt or truncated" in out.read_text()


def test_head_ablation_reader_is_defensive(tmp_path):
    odd = tmp_path / "sst2" / "head_ablation_seed3.json"
    odd.parent.mkdir()
    odd.write_text(
        json.dumps({"baseline": 0.9, "single_head_disabled": [[0.89, 0.9], [0.88]], "layer_attention_disabled": "x"})
    )
    ab = read_head_ablation(odd)
    assert ab.error is None and ab.seed == 3 and ab.task == "sst2"
    assert len(ab.single[1]) == 2  # ragged rows padded
    assert ab.layer_disabled is None and "per-layer disabled missing" in ab.notes
    odd.write_text("[1, 2]")
    assert read_head_ablation(odd).error == "not a JSON object"


# ----- leaderboard ----------------------------------------------------------------------------------


def test_leaderboard_marks_fronts_hardware_and_problems(results, tmp_path):
    rows = write_leaderboard(results["expected"], tmp_path / "lb.md", tmp_path / "lb.csv")
    front = {(r["method"], r["budget"]) for r in rows if r["pareto_optimal"]}
    assert front == FRONT_REMAINING
    assert all(r["hardware"].startswith("Test CPU, 2 logical cores") for r in rows)
    md = (tmp_path / "lb.md").read_text()
    assert md.count(f"| {TASK} |") == 11 and "Runs missing or failed (3)" in md and "Hardware: Test CPU" in md
    with (tmp_path / "lb.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 11
    assert json.loads((tmp_path / "lb.json").read_text())[0]["rank"] == 1


def test_leaderboard_ranks_only_entries_that_met_the_budget(tmp_path):
    from prunebench.report.leaderboard import leaderboard_rows

    over = dict(acc=(0.95, 0.95), rem=0.694, disk=(78e6, 79e6), lat=(8.0, 70.0), gran="head")  # head floor
    met = dict(acc=(0.70, 0.70), rem=0.1, disk=(90e6, 52e6), lat=(10.0, 100.0), gran="element")
    near = dict(acc=(0.60, 0.60), rem=0.104, disk=(90e6, 52e6), lat=(10.0, 100.0), gran="element")
    records = [
        make_record("head_importance", 0.1, 0, over),
        make_record("magnitude_global", 0.1, 0, met),
        make_record("random", 0.1, 0, near),
        make_record("dense", 1.0, 0, RUNS[("dense", 1.0)]),
    ]
    rows = [r for r in leaderboard_rows(records) if r["budget"] == 0.1]
    assert [(r["method"], r["rank"], r["met_budget"]) for r in rows] == [
        ("magnitude_global", 1, True),
        ("random", 2, True),
        ("head_importance", None, False),
    ]
    md = to_markdown(rows, records)
    assert "| – (budget not reached) | head_importance |" in md


# ----- paper figures --------------------------------------------------------------------------------


def test_paper_figures_are_vector_and_reproducible(results, tmp_path):
    from prunebench.report.paper_figures import write_paper_figures

    a = write_paper_figures(results["expected"], tmp_path / "a")
    b = write_paper_figures(results["expected"], tmp_path / "b")
    names = sorted(p.name for p in a)
    assert names == sorted(p.name for p in b)
    assert "accuracy_vs_remaining_sst2.pdf" in names and "pareto_latency_bmax_sst2.svg" in names
    assert "head_ablation_sst2_seed0.pdf" in names and "per_layer_int8_dynamic_sst2.svg" in names
    for p in a:
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes(), f"{p.name} differs between two runs"
        if p.suffix == ".pdf":
            assert p.read_bytes().startswith(b"%PDF")
        else:
            assert "<svg" in p.read_text()


# ----- workflow rules (parsing only) ---------------------------------------------------------------


def _snakemake(*args):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--nolock", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_publish_leaderboard_rule_only_for_the_real_results_dir(tmp_path):
    default = _snakemake("--list-rules")
    assert default.returncode == 0, default.stderr[-2000:]
    assert "publish_leaderboard" in default.stdout and "paper_figures" in default.stdout
    smoke = _snakemake("--list-rules", "--config", "profile=smoke", f"results_dir={tmp_path}")
    assert smoke.returncode == 0 and "publish_leaderboard" not in smoke.stdout


def test_paper_figures_target_is_not_in_all(tmp_path):
    out = _snakemake(
        "paper_figures", "--dry-run", "--cores", "2", "--config", "profile=smoke", f"results_dir={tmp_path}"
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    stats = (out.stdout + out.stderr).split("Job stats")[-1]
    assert "paper_figures" in stats and "report " not in stats
    default = _snakemake("--dry-run", "--cores", "2", "--config", "profile=smoke", f"results_dir={tmp_path}")
    assert "paper_figures" not in (default.stdout + default.stderr).split("Job stats")[-1]


# ----- uncertainty, tied ranks and tests -------------------------------------------------------------


def _by(rows, method, budget):
    return next(r for r in rows if r["method"] == method and r["budget"] == budget)


@pytest.fixture(scope="module")
def board(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    rows = write_leaderboard(results["expected"], out / "lb.md", out / "lb.csv")
    return {"rows": rows, "md": (out / "lb.md").read_text()}


def test_leaderboard_ties_entries_the_paired_test_cannot_separate(board):
    rows = board["rows"]
    # dense and int8 disagree on 1 and 3 of 400 examples: a tie; at 0.1 the entries differ on 12-84 examples
    assert [(r["method"], r["rank"], r["rank_label"]) for r in rows if r["budget"] == 1.0] == [
        ("dense", 1, "1="),
        ("int8_dynamic", 1, "1="),
    ]
    assert [(r["method"], r["rank_label"]) for r in rows if r["budget"] == 0.1] == [
        ("movement_soft", "1"),
        ("magnitude_global", "2"),
        ("random", "3"),
    ]
    assert _by(rows, "int8_dynamic", 1.0)["p_vs_leader"] >= 0.05
    assert "| 1= | dense |" in board["md"] and "| 1= | int8_dynamic |" in board["md"]
    assert "paired permutation test on the evaluation examples" in board["md"] and "Holm" in board["md"]


def test_leaderboard_says_better_than_random_and_worse_than_dense(board):
    rows = board["rows"]
    soft = _by(rows, "movement_soft", 0.1)
    assert soft["better_than_random"] is True and soft["p_vs_random"] < 0.05
    assert soft["worse_than_dense"] is True  # 20 of 400 examples fewer in each seed, all against it
    assert _by(rows, "random", 0.1)["better_than_random"] is None  # random is not tested against itself
    int8 = _by(rows, "int8_dynamic", 1.0)
    assert int8["worse_than_dense"] is False and int8["p_vs_dense"] >= 0.05
    assert _by(rows, "dense", 1.0)["worse_than_dense"] is None
    assert _by(rows, "head_importance", 0.7)["better_than_random"] is None  # no random run at 0.7


def test_leaderboard_intervals_over_seeds_and_to_dense(board):
    from scipy import stats as st

    rows = board["rows"]
    dense = _by(rows, "dense", 1.0)  # seeds 0.90, 0.91: t interval with 1 degree of freedom
    half = st.t.ppf(0.975, 1) * 0.005  # standard error of the mean of 0.90 and 0.91
    assert dense["score_interval"] == "t over seeds"
    assert (dense["score_low"], dense["score_high"]) == pytest.approx((0.905 - half, 0.905 + half), abs=1e-9)
    assert dense["score_seed_example_low"] <= 0.905 <= dense["score_seed_example_high"]
    mg = _by(rows, "magnitude_global", 0.5)  # per-seed differences to dense: -0.01, -0.03
    half = st.t.ppf(0.975, 1) * 0.01  # standard error of the mean of -0.01 and -0.03
    assert mg["diff_dense"] == pytest.approx(-0.02)
    assert (mg["diff_dense_low"], mg["diff_dense_high"]) == pytest.approx((-0.02 - half, -0.02 + half), abs=1e-9)


def test_single_seed_interval_is_a_bootstrap_over_examples(tmp_path):
    from prunebench.records.record import write_record
    from prunebench.report.leaderboard import write_leaderboard as write
    from tests.report_records import N_EXAMPLES, record_path, write_record_predictions

    for method, budget in [("dense", 1.0), ("magnitude_global", 0.5), ("random", 0.5)]:
        rec = make_record(method, budget, 0, RUNS[(method, budget)])
        write_record(rec, record_path(tmp_path, method, budget, 0))
        write_record_predictions(rec, record_path(tmp_path, method, budget, 0))
    rows = write(tmp_path / "records", tmp_path / "lb.md", tmp_path / "lb.csv")  # a folder stands for its records
    mg = _by(rows, "magnitude_global", 0.5)
    assert mg["score_interval"] == "bootstrap over examples" and mg["score_seed_example_low"] is None
    normal = 1.96 * (0.89 * 0.11 / N_EXAMPLES) ** 0.5  # the binomial interval the bootstrap approximates
    assert mg["score_low"] < 0.89 < mg["score_high"]
    assert (mg["score_high"] - mg["score_low"]) / 2 == pytest.approx(normal, rel=0.2)
    # paired: the two models differ on 4 examples only, so the difference is much tighter than either score
    assert -0.01 == pytest.approx(mg["diff_dense"])
    assert mg["diff_dense_low"] >= -0.02 - 1e-9 and mg["diff_dense_high"] <= 0.0
    assert mg["better_than_random"] is True


def test_records_without_predictions_render_with_na_and_a_warning(tmp_path):
    info = build_results(tmp_path / "results", predictions=False)
    rows = write_leaderboard(info["expected"], tmp_path / "lb.md", tmp_path / "lb.csv")
    assert all(r["score_low"] is None and r["better_than_random"] is None for r in rows)
    assert [(r["method"], r["rank_label"]) for r in rows if r["budget"] == 1.0] == [
        ("dense", "1"),
        ("int8_dynamic", "2"),
    ]
    md = (tmp_path / "lb.md").read_text()
    assert "Warning: 22 record(s) without a usable predictions file" in md and "[n/a]" in md
    html = render_report(info["expected"], tmp_path / "r.html").read_text()
    assert 'id="prediction-warnings"' in html and "22 record(s) without a usable" in html


def test_a_predictions_file_that_does_not_match_its_record_is_named(tmp_path):
    from tests.report_records import record_path

    info = build_results(tmp_path / "results")
    bad = record_path(tmp_path / "results", "random", 0.1, 0).with_name("seed0.predictions.json")
    data = json.loads(bad.read_text())
    data["predictions"][0] = 1 - data["predictions"][0]  # the accuracy no longer equals the record's
    bad.write_text(json.dumps(data))
    rows = write_leaderboard(info["expected"], tmp_path / "lb.md", tmp_path / "lb.csv")
    md = (tmp_path / "lb.md").read_text()
    assert "Warning: 1 record(s)" in md and str(bad) in md
    assert _by(rows, "random", 0.1)["score_low"] is None and _by(rows, "random", 0.5)["score_low"] is not None


def test_report_shows_intervals_tied_ranks_and_error_bars(html, rows):
    board = html.split('id="leaderboard-table"')[1].split("</table>")[0]
    assert board.count(">1=</td>") == 2 and "95% CI" in html.split('id="leaderboard-table"')[1].split("</thead>")[0]
    assert re.search(r'class="nowrap ci"[^>]*>\[0\.8\d{3}, 0\.9\d{3}\]', board)
    assert "paired permutation test" in html.split('id="leaderboard"')[1].split('id="pareto"')[0]
    survey = html.split('id="survey-table"')[1].split("</table>")[0]
    assert re.search(r"movement_soft @ 0\.1: 85\.5 \[\d+\.\d, \d+\.\d\] \(-5\.0 ± 0\.7 pt \[[-+]\d", survey)


def test_error_bars_are_the_interval_when_there_is_one(results):
    from prunebench.report.figures import score_error
    from prunebench.report.leaderboard import attach_stats
    from prunebench.report.uncertainty import load_predictions

    rs = load_record_set(results["expected"])
    rows = aggregate(rs.records)
    mg = next(r for r in rows if r.method == "magnitude_global" and r.budget == 0.1)
    assert score_error(mg) == pytest.approx((0.0141421, 0.0141421), rel=1e-4)  # no predictions: ± std
    attach_stats(rows, load_predictions(rs.paths, rs.records)[0])
    below, above = score_error(mg)
    assert below == pytest.approx(mg.score - mg.stats.score.low) and above == pytest.approx(
        mg.stats.score.high - mg.score
    )
    assert below > 0.1  # two seeds: the t interval (12.7 x the standard error) is far wider than ± std


# ----- the finalize guard ----------------------------------------------------------------------------


def _guarded(before, after, calibration=None):
    spec = dict(RUNS[("magnitude_global", 0.1)], rem=after)
    rec = make_record("flop", 0.1, 0, spec)
    rec["details"]["method"]["remaining_before_finalize"] = before
    if calibration is not None:
        rec["details"]["method"]["calibration"] = calibration
    return rec


def test_leaderboard_flags_budget_enforced_by_truncation_and_calibration(tmp_path):
    from prunebench.report.leaderboard import leaderboard_rows

    calib = {
        "calibrated_on": {"steps": 300, "task": "sst2"},
        "run": {"steps": 200, "task": "sst2"},
        "matches": False,
        "differs": ["steps"],
    }
    truncated = leaderboard_rows([_guarded(0.465, 0.1, calib)])[0]
    assert truncated["enforced_by_truncation"] is True
    assert truncated["finalize_removed"] == pytest.approx((0.465 - 0.1) / 0.465)
    assert truncated["calibration_note"] == "calibrated on steps=300, run on steps=200"
    mild = leaderboard_rows([_guarded(0.13, 0.1, {**calib, "matches": True, "differs": []})])[0]
    assert mild["enforced_by_truncation"] is False and mild["calibration_note"] is None  # 23% <= a quarter
    assert leaderboard_rows([make_record("random", 0.1, 0, RUNS[("random", 0.1)])])[0]["finalize_removed"] is None
    md = to_markdown([truncated, mild], [_guarded(0.465, 0.1)])
    assert "| flop † ‡ |" in md and "| flop |" in md
    assert "budget enforced by truncation: finalize removed 78% of the weights" in md
    assert "‡ sst2 flop at 0.1: calibrated on steps=300, run on steps=200." in md


def test_leaderboard_flags_budget_enforced_by_fill_up():
    """Finalize adding weights back (FLOP's gates at 0.24 filled up to 0.5) is flagged like a truncation."""
    from prunebench.report.leaderboard import leaderboard_rows

    filled = leaderboard_rows([_guarded(0.24, 0.5)])[0]
    assert filled["enforced_by_fill_up"] is True and filled["enforced_by_truncation"] is False
    assert filled["finalize_removed"] == pytest.approx((0.24 - 0.5) / 0.24)
    slight = leaderboard_rows([_guarded(0.45, 0.5)])[0]  # 11% added back: within a quarter
    assert slight["enforced_by_fill_up"] is False
    md = to_markdown([filled, slight], [_guarded(0.24, 0.5)])
    assert "| flop † |" in md and "| flop |" in md
    assert "budget enforced by fill-up: the method's own rule stopped at 0.240 remaining" in md
    assert "(108% more)" in md


def test_guard_reports_the_seed_with_the_largest_change_either_way():
    from prunebench.report.collect import aggregate

    recs = [_guarded(0.48, 0.5), _guarded(0.2, 0.5)]
    recs[1]["seed"] = 1
    (row,) = aggregate(recs)
    assert row.finalize_change() == pytest.approx((0.2 - 0.5) / 0.2) and row.enforced_by() == "fill-up"


def test_survey_table_labels_a_filled_up_row():
    from prunebench.report.collect import aggregate
    from prunebench.report.survey import _label

    (row,) = aggregate([_guarded(0.24, 0.5)])
    assert _label(row) == "flop @ 0.1 † (budget enforced by fill-up)"


def test_report_flags_truncation_and_calibration(tmp_path):
    from prunebench.records.record import write_record

    calib = {"calibrated_on": {"steps": 300}, "run": {"steps": 200}, "matches": False, "differs": ["steps"]}
    path = tmp_path / "results" / "records" / TASK / "flop" / "0.1" / "seed0.json"
    write_record(_guarded(0.465, 0.1, calib), path)
    html = render_report([path], tmp_path / "r.html").read_text()
    board = html.split('id="leaderboard-table"')[1].split("</table>")[0]
    assert 'class="flag truncation"' in board and 'class="flag calibration"' in board
    notes = html.split('id="leaderboard-notes"')[1].split("</ul>")[0]
    assert "budget enforced by truncation" in notes and "calibrated on steps=300, run on steps=200" in notes


# ----- the published leaderboard, regenerated from committed records -----------------------------------


def _small_record_folder(root: Path) -> Path:
    from prunebench.records.record import write_record
    from tests.report_records import record_path, write_record_predictions

    for method, budget in [("dense", 1.0), ("magnitude_global", 0.5), ("random", 0.5)]:
        rec = make_record(method, budget, 0, RUNS[(method, budget)])
        write_record(rec, record_path(root, method, budget, 0))
        write_record_predictions(rec, record_path(root, method, budget, 0))
    return root / "records"


def test_published_leaderboard_check_passes_skips_and_fails_with_a_diff(tmp_path):
    from prunebench.report.published import check, regenerate

    status, message = check(tmp_path / "absent", tmp_path)
    assert status == 0 and message.startswith("SKIP: no committed records")
    records, published = _small_record_folder(tmp_path), tmp_path / "published"
    regenerate(records, published)
    assert check(records, published) == (
        0,
        f"OK: {published}/leaderboard.{{md,csv,json}} match the records under {records}",
    )
    status, message = check(records, published, render=True)
    assert status == 0 and message.endswith("(and their report renders)")
    md = published / "leaderboard.md"
    md.write_text(md.read_text() + "\nGenerated 2031-01-01T00:00:00+00:00\n")  # volatile: ignored
    assert check(records, published)[0] == 0
    md.write_text(md.read_text().replace("accuracy 0.8900", "accuracy 0.9900"))
    rows = json.loads((published / "leaderboard.json").read_text())
    rows[1]["score_low"] += 0.01
    (published / "leaderboard.json").write_text(json.dumps(rows))
    status, message = check(records, published)
    assert status == 1 and message.startswith("FAIL")
    assert "-| sst2 | 0.5 | 1 | magnitude_global | 1 | accuracy 0.9900" in message
    assert "+| sst2 | 0.5 | 1 | magnitude_global | 1 | accuracy 0.8900" in message
    assert "leaderboard.json row 1 (magnitude_global @ 0.5), score_low" in message


def test_publish_copies_records_with_predictions_and_the_check_then_passes(tmp_path):
    from prunebench.report.published import check, publish
    from prunebench.report.stats import predictions_path

    run = _small_record_folder(tmp_path / "run")
    run_records = sorted(p for p in run.rglob("seed*.json") if not p.name.endswith(".predictions.json"))
    records, published = tmp_path / "reports" / "records", tmp_path / "reports"
    (records / "stale").mkdir(parents=True)  # what an earlier publication left is replaced
    publish(run_records, records, published)
    assert not (records / "stale").exists()
    copied = sorted(p.relative_to(records) for p in records.rglob("*.json"))
    assert len(copied) == 2 * len(run_records)
    assert check(records, published)[0] == 0
    predictions_path(run_records[0]).unlink()
    with pytest.raises(FileNotFoundError, match="predictions"):
        publish(run_records, tmp_path / "other", tmp_path / "other")


def test_cli_leaderboard_takes_a_records_folder(tmp_path):
    from prunebench.runner.cli import main

    records = _small_record_folder(tmp_path)
    assert (
        main(
            [
                "leaderboard",
                "--records",
                str(records),
                "--markdown",
                str(tmp_path / "a.md"),
                "--csv",
                str(tmp_path / "a.csv"),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "a.json").read_text())
    assert [r["method"] for r in rows] == ["dense", "magnitude_global", "random"]
    assert "predictions" not in (tmp_path / "a.md").read_text().split("| task |")[1]  # no .predictions.json as a record


def test_committed_leaderboard_is_what_the_committed_records_give(monkeypatch):
    from prunebench.report.published import check, has_records

    if not has_records(REPO / "reports" / "records"):
        pytest.skip("no records committed under reports/records yet: the published leaderboard cannot be regenerated")
    monkeypatch.chdir(REPO)
    status, message = check(Path("reports/records"), Path("reports"))
    assert status == 0, message


# ----- converged dense reference: how short is the fine-tuning budget? --------------------------------


def test_report_states_the_gap_to_the_converged_dense_reference(tmp_path):
    from prunebench.report.reference import budget_gaps, load_references

    info = build_results(tmp_path / "results", predictions=False)
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    dense = [json.loads(Path(p).read_text()) for p in info["expected"] if "/dense/" in str(p)]
    summary = {
        "task": TASK,
        "method": "dense",
        "budget": 1.0,
        "seed": 0,
        "metrics": {"accuracy": {"value": 0.95, "unit": "fraction"}},
        "details": {"training": {"steps": 6315, "precision": "bf16"}},
        "config": {"model": "tiny-random", "finetune": {"steps": 6315, "batch_size": 32}},
    }
    (ref_dir / f"{TASK}_dense_steps6315_seed0.json").write_text(json.dumps(summary))
    refs = load_references(ref_dir)
    gaps = budget_gaps(dense, refs)
    run_mean = sum(r["metrics"]["accuracy"]["value"] for r in dense) / len(dense)
    assert len(gaps) == 1 and gaps[0]["gap_points"] == pytest.approx(100 * (0.95 - run_mean))
    assert budget_gaps(dense, [refs[0].__class__(**{**refs[0].__dict__, "model": "embedded"})]) == []  # other model
    html = render_report(info["expected"], tmp_path / "r.html", reference_dir=ref_dir).read_text()
    assert 'id="finetune-budget"' in html and "fine-tuned for 6315 steps" in html
    assert "Verdicts at a short fine-tuning budget" in html
    (ref_dir / "broken.json").write_text(json.dumps({"task": TASK, "method": "random"}))
    with pytest.raises(ValueError, match="broken.json"):
        load_references(ref_dir)
    html = render_report(info["expected"], tmp_path / "r2.html", reference_dir=ref_dir).read_text()
    assert "Converged reference not shown" in html and 'id="finetune-budget"' not in html
