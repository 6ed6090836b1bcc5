"""The cross-task summary: share of the dense metric kept, its intervals, the exclusion
rules, the GLUE-style average of the leaderboard and the report's section, on tiny synthetic
records and predictions (``tests/report_records.write_task_run``)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from prunebench.report import cross_task
from prunebench.report.collect import load_record_set
from prunebench.report.cross_task import Estimate, check_claim, claim_verdict, cross_task_summary, parse_claim
from prunebench.report.uncertainty import load_predictions
from tests.report_records import task_predictions, write_task_run


def _summary(root, tasks=None):
    rs = load_record_set(root / "records")
    predictions, warnings = load_predictions(rs.paths, rs.records)
    assert not warnings
    return cross_task_summary(rs.records, predictions, tasks=tasks), rs.records, predictions


def _runs(root, spec, n=200, **kw):
    """``spec``: {(task, method, budget): {seed: quality}}."""
    for (task, method, budget), seeds in spec.items():
        for seed, quality in seeds.items():
            write_task_run(root, task, method, budget, seed, quality, n=n, **kw)


def test_share_is_the_ratio_of_seed_matched_means(tmp_path):
    # dense has seeds 0, 1, 2; the method 0 and 1 only: seed 2 (a bad dense seed) must not count
    _runs(
        tmp_path,
        {
            ("sst2", "dense", 1.0): {0: 0.9, 1: 0.8, 2: 0.5},
            ("sst2", "magnitude_global", 0.1): {0: 0.81, 1: 0.72},
            ("cola", "dense", 1.0): {0: 0.9},
            ("cola", "magnitude_global", 0.1): {0: 0.8},
        },
    )
    summary, _, _ = _summary(tmp_path)
    row = summary.row("magnitude_global", 0.1)
    assert row.seeds["sst2"] == [0, 1]
    assert row.shares["sst2"].value == pytest.approx((0.81 + 0.72) / 2 / ((0.9 + 0.8) / 2))  # 0.9
    # CoLA ranks by Matthews: computed here independently, as the Pearson correlation of the binary vectors
    _, _, dense_pred, refs = task_predictions("cola", 0.9, 200)
    _, _, pred, _ = task_predictions("cola", 0.8, 200)
    mcc = lambda p: np.corrcoef(p, refs)[0, 1]  # noqa: E731
    assert row.shares["cola"].value == pytest.approx(mcc(pred) / mcc(dense_pred))
    assert row.mean.value == pytest.approx((row.shares["sst2"].value + row.shares["cola"].value) / 2)


def test_interval_contains_the_estimate_and_narrows_with_more_examples(tmp_path):
    widths = {}
    for n in (100, 1600):
        root = tmp_path / f"n{n}"
        _runs(
            root,
            {
                ("sst2", "dense", 1.0): {0: 0.9},
                ("sst2", "random", 0.5): {0: 0.75},
                ("stsb", "dense", 1.0): {0: 0.9},
                ("stsb", "random", 0.5): {0: 0.6},
            },
            n=n,
        )
        summary, _, _ = _summary(root)
        row = summary.row("random", 0.5)
        for est in [*row.shares.values(), row.mean]:
            assert est.low < est.value < est.high
            assert len(est.distribution) == cross_task.N_RESAMPLES
        # the mean's replicates are the elementwise mean of the tasks' replicates
        assert np.allclose(
            row.mean.distribution, (row.shares["sst2"].distribution + row.shares["stsb"].distribution) / 2
        )
        widths[n] = {k: v.high - v.low for k, v in {**row.shares, "mean": row.mean}.items()}
    for key in widths[100]:
        assert widths[1600][key] < 0.5 * widths[100][key], key  # 16x the examples: about a quarter of the width


def test_a_task_whose_dense_model_is_at_chance_is_excluded_and_listed(tmp_path):
    # RTE labels 60% positive: the majority class scores 0.6; a dense model at 0.6 is not above chance
    _runs(
        tmp_path,
        {
            ("rte", "dense", 1.0): {0: 0.6},
            ("rte", "random", 0.5): {0: 0.55},
            ("sst2", "dense", 1.0): {0: 0.9},
            ("sst2", "random", 0.5): {0: 0.8},
        },
        positive_share=0.6,
    )
    # WNLI well above chance is still out of the mean (BERT paper)
    _runs(tmp_path, {("wnli", "dense", 1.0): {0: 0.95}, ("wnli", "random", 0.5): {0: 0.5}})
    summary, _, _ = _summary(tmp_path)
    assert summary.mean_tasks == ["sst2"]
    rte = summary.info("rte")
    assert rte.chance == pytest.approx(0.6) and "majority-class" in rte.chance_rule
    assert any("not above chance" in why for why in rte.excluded)
    wnli = summary.info("wnli")
    assert wnli.dense.low > wnli.chance and any("BERT paper" in why for why in wnli.excluded)
    row = summary.row("random", 0.5)
    assert set(row.shares) == {"rte", "sst2", "wnli"}  # shown, but
    assert row.tasks_in_mean == ["sst2"] and row.mean.value == pytest.approx(0.8 / 0.9)  # averaged over sst2 only
    assert not row.flagged


def test_chance_levels():
    assert cross_task.chance_level("cola", None)[0] == 0.0
    assert cross_task.chance_level("stsb", None)[0] == 0.0
    assert cross_task.chance_level("mnli", None) == (pytest.approx(1 / 3), "1/3 labels (no labels stored)")
    assert cross_task.chance_level("mrpc", None)[0] is None  # F1 without stored labels: no check
    assert cross_task.chance_level("squad", None)[0] is None


def test_claim_verdict_from_the_interval(tmp_path):
    assert claim_verdict(Estimate(0.97, 0.951, 0.99)) == "holds"
    assert claim_verdict(Estimate(0.95, 0.93, 0.97)) == "undecided"
    assert claim_verdict(Estimate(0.90, 0.88, 0.949)) == "fails"
    assert claim_verdict(Estimate(0.97)) == "n/a" and claim_verdict(None) == "n/a"
    assert parse_claim("keeps >= 95% of dense at 10% remaining") == (0.95, 0.1)
    _runs(
        tmp_path,
        {
            ("sst2", "dense", 1.0): {0: 0.9},
            ("sst2", "magnitude_global", 0.1): {0: 0.9},
            ("sst2", "random", 0.1): {0: 0.6},
            ("qnli", "dense", 1.0): {0: 0.9},
            ("qnli", "magnitude_global", 0.1): {0: 0.9},
            ("qnli", "random", 0.1): {0: 0.6},
        },
        n=400,
    )
    summary, _, _ = _summary(tmp_path)
    kept = check_claim(summary, "magnitude_global", "keeps >= 95% of dense at 10% remaining")
    assert kept.verdict == "holds" and "over 2 of 2 tasks" in kept.text  # identical predictions: share 1 [1, 1]
    assert check_claim(summary, "random", budget=0.1).verdict == "fails"  # 0.667
    assert check_claim(summary, "random", budget=0.1, threshold=0.6).verdict == "holds"
    assert check_claim(summary, "flop", budget=0.1).verdict == "n/a"


def test_a_missing_task_is_flagged_never_silent(tmp_path):
    _runs(
        tmp_path,
        {
            ("sst2", "dense", 1.0): {0: 0.9},
            ("sst2", "random", 0.5): {0: 0.8},
            ("qnli", "dense", 1.0): {0: 0.9},
            ("qnli", "random", 0.5): {0: 0.7},
            ("qnli", "magnitude_global", 0.5): {0: 0.85},
        },
    )
    summary, records, predictions = _summary(tmp_path)
    mg = summary.row("magnitude_global", 0.5)
    assert mg.flagged and mg.missing == ["sst2"] and mg.tasks_in_mean == ["qnli"]
    assert mg.mean.value == pytest.approx(0.85 / 0.9)
    assert "1 of 2 tasks; missing: sst2" in cross_task.mean_text(mg, summary)
    assert not summary.row("random", 0.5).flagged

    from prunebench.report.leaderboard import glue_average, glue_markdown

    md = "\n".join(glue_markdown(glue_average(records, predictions)))
    assert "| 0.5 | magnitude_global | 1 of 2 ⚠ missing: sst2 |" in md


def test_predictions_on_other_examples_give_no_interval_and_say_so(tmp_path):
    write_task_run(tmp_path, "sst2", "dense", 1.0, 0, 0.9, n=200)
    write_task_run(tmp_path, "sst2", "random", 0.5, 0, 0.8, n=150)  # another evaluation set
    summary, _, _ = _summary(tmp_path)
    share = summary.row("random", 0.5).shares["sst2"]
    assert share.value == pytest.approx(0.8 / 0.9) and share.low is None
    assert summary.row("random", 0.5).verdict == "n/a"
    assert len(summary.warnings) == 1 and "not on the same evaluation examples" in summary.warnings[0]


def test_glue_average_excludes_wnli_and_lists_squad_apart(tmp_path):
    from prunebench.report.leaderboard import COLUMNS, write_leaderboard

    _runs(
        tmp_path,
        {
            ("sst2", "dense", 1.0): {0: 0.9},
            ("sst2", "random", 0.5): {0: 0.8},
            ("rte", "dense", 1.0): {0: 0.7},
            ("rte", "random", 0.5): {0: 0.6},
            ("wnli", "dense", 1.0): {0: 0.5},
            ("wnli", "random", 0.5): {0: 0.1},
            ("squad", "dense", 1.0): {0: 0.8},
            ("squad", "random", 0.5): {0: 0.4},
        },
    )
    _runs(
        tmp_path,
        {("qqp", "dense", 1.0): {0: 0.9}, ("qqp", "random", 0.5): {0: 0.8}},
        split_kind="stand-in",
        split_note="the disjoint 1k train sample",
    )
    board = write_leaderboard(tmp_path / "records", tmp_path / "lb.md", tmp_path / "lb.csv")
    md = (tmp_path / "lb.md").read_text()
    glue = md.split("## GLUE-style average")[1]
    assert "GLUE tasks present: qqp†, rte, sst2 (WNLI has records but is excluded)" in glue
    with (tmp_path / "lb_glue_average.csv").open() as fh:
        rows = {r["method"]: r for r in csv.DictReader(fh)}
    rnd = rows["random"]
    assert rnd["tasks"] == "qqp;rte;sst2" and int(rnd["n_tasks"]) == 3  # no wnli, no squad
    qqp_f1 = next(r["score_mean"] for r in board if r["task"] == "qqp" and r["method"] == "random")
    assert float(rnd["glue_mean"]) == pytest.approx((qqp_f1 + 0.6 + 0.8) / 3)
    assert float(rnd["squad_score"]) == pytest.approx(0.4) and float(rnd["squad_share"]) == pytest.approx(0.5)
    assert float(rnd["share_mean_low"]) < float(rnd["share_mean"]) < float(rnd["share_mean_high"])
    # every table names the task; the stand-in task is marked in them and footnoted once per table
    assert "| qqp† | 0.5 |" in md and "| qqp | 0.5 |" not in md
    assert (
        "qqp†: stand-in evaluation split: not comparable with published dev numbers (the disjoint 1k train sample)"
        in md
    )
    with (tmp_path / "lb.csv").open() as fh:
        assert next(csv.reader(fh)) == COLUMNS  # the leaderboard's own CSV keeps its columns


def test_single_task_leaderboard_is_unchanged(tmp_path):
    from prunebench.report.leaderboard import to_markdown, write_leaderboard

    outs = {}
    for kind in (None, "stand-in"):
        root = tmp_path / str(kind)
        _runs(root, {("sst2", "dense", 1.0): {0: 0.9}, ("sst2", "random", 0.5): {0: 0.8}}, split_kind=kind)
        write_leaderboard(root / "records", root / "lb.md", root / "lb.csv")
        outs[kind] = (root / "lb.md").read_text()
        assert not (root / "lb_glue_average.csv").exists()
    assert outs[None] == outs["stand-in"]  # a single task: no mark, no footnote, no section
    assert "GLUE-style" not in outs[None] and "†" not in outs[None].split("| task |")[1]
    # two GLUE tasks, but WNLI does not count: no GLUE-style average
    rs = load_record_set([*(tmp_path / "None" / "records").rglob("seed0.json")])
    wnli = write_task_run(tmp_path / "w", "wnli", "dense", 1.0, 0, 0.6, n=71)
    records = rs.records + load_record_set([wnli]).records
    assert "GLUE-style" not in to_markdown([], records)


def test_report_renders_the_cross_task_section_with_two_tasks(tmp_path):
    from prunebench.report.render import render_report

    root = tmp_path / "results"
    _runs(root, {("sst2", "dense", 1.0): {0: 0.9}, ("sst2", "random", 0.5): {0: 0.8}})
    _runs(root, {("qqp", "dense", 1.0): {0: 0.9}, ("qqp", "random", 0.5): {0: 0.7}}, split_kind="stand-in")
    paths = sorted(str(p) for p in (root / "records").rglob("seed0.json"))
    html = render_report(paths, root / "report.html", generated="2026-01-01T00:00:00+00:00").read_text()
    section = html.split('id="across-tasks"')[1].split('id="backends"')[0]
    assert "the share of the dense metric kept" in section and 'id="cross-task-table"' in section
    assert "qqp†" in section and "stand-in evaluation split: not comparable with published dev numbers" in section
    assert "keeps ≥ 95% of dense" in section and "2 of 2 tasks" in section
    assert "BERT paper" in section  # WNLI's rule is stated even without WNLI records
    # one survey table per task, the stand-in task marked in its heading
    assert 'id="survey-table-sst2"' in html and 'id="survey-table-qqp"' in html and 'id="survey-table"' not in html
    assert '<h3 id="survey-qqp">qqp† <span class="muted small">(stand-in evaluation split' in html
    assert '<h3 id="survey-sst2">sst2</h3>' in html
    # the stand-in task's figures never read "dev"
    assert "qqp f1 (stand-in eval split)" in html and "dev f1" not in html and "dev accuracy" in html

    one = render_report([p for p in paths if "/sst2/" in p], tmp_path / "one.html").read_text()
    assert 'id="across-tasks-single"' in one and "records of more than one task" in one
    assert 'id="survey-table"' in one and '<h3 id="survey-' not in one


def test_a_method_at_or_below_chance_on_a_task_is_marked(tmp_path):
    # a method whose accuracy is below the majority share keeps a share of dense that a constant
    # predictor would keep: the row names the task, the other method's row does not
    _runs(
        tmp_path,
        {
            ("sst2", "dense", 1.0): {0: 0.9},
            ("sst2", "random", 0.1): {0: 0.45},
            ("sst2", "magnitude_global", 0.1): {0: 0.8},
            ("qnli", "dense", 1.0): {0: 0.9},
            ("qnli", "random", 0.1): {0: 0.8},
            ("qnli", "magnitude_global", 0.1): {0: 0.8},
        },
    )
    from prunebench.report.render import render_report

    summary, _, _ = _summary(tmp_path)
    assert summary.info("sst2").chance == pytest.approx(0.5)
    assert summary.row("random", 0.1).at_chance == ["sst2"]
    assert summary.row("magnitude_global", 0.1).at_chance == []
    paths = sorted(str(p) for p in (tmp_path / "records").rglob("seed0.json"))
    html = render_report(paths, tmp_path / "report.html").read_text()
    assert "≤ chance: random at 0.1 scores at or below the chance level on sst2" in html


def test_published_glue_records_give_the_verdict_in_docs_results():
    """The committed glue subset (reports/glue/records: magnitude_global, movement_soft and FLOP at 0.1 and
    the dense model, seed 0, on all ten staged tasks) has predictions for every record, and the
    cross-task summary computed from it is the one docs/results.md states."""
    from pathlib import Path

    from prunebench.records.record import read_record

    folder = Path(__file__).resolve().parents[1] / "reports" / "glue" / "records"
    paths = sorted(p for p in folder.rglob("*.json") if not p.name.endswith(".predictions.json"))
    assert len(paths) == 40, "expected 10 tasks x (dense + 3 methods)"
    for p in paths:
        assert p.with_name(p.name[: -len(".json")] + ".predictions.json").is_file(), p
        rec = read_record(p)
        assert rec["provenance"]["git_sha"] and rec["provenance"]["git_dirty"] is False, p
    summary, _, _ = _summary(folder.parent)
    assert summary.mean_tasks == ["mnli", "mrpc", "qnli", "qqp", "squad", "sst2", "stsb"]  # cola, rte: dense at chance
    means = {r.method: r.mean for r in summary.rows}
    assert {m: round(e.value, 3) for m, e in means.items()} == {
        "flop": 0.473,
        "magnitude_global": 0.463,
        "movement_soft": 0.551,
    }
    assert all(r.verdict == "fails" for r in summary.rows)  # nobody keeps 95% of dense at 10% remaining
    assert means["movement_soft"].low > max(means["flop"].high, means["magnitude_global"].high)
    assert means["flop"].low < means["magnitude_global"].high  # flop and magnitude: not separated
    soft = summary.row("movement_soft", 0.1)
    assert round(soft.shares["sst2"].value, 3) == 0.908 and soft.at_chance == ["cola", "qqp", "rte", "wnli"]
