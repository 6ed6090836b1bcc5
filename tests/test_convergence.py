"""The fine-tuning-length axis: rankings per length and Kendall's tau on constructed records,
the convergence profile's plan, and a tiny steps sweep through the whole workflow."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prunebench.report.convergence import (
    convergence_section,
    kendall,
    longest_steps_records,
    ranking,
    step_counts,
    steps_of,
)
from tests.background import background_fixture, run_captured
from tests.conftest import REPO, snakemake_env


def _rec(method, steps, acc, budget=0.1, seed=0):
    return {
        "task": "sst2",
        "method": method,
        "budget": 1.0 if method == "dense" else budget,
        "seed": seed,
        "metrics": {"accuracy": {"value": acc, "unit": "fraction"}},
        "config": {"finetune": {"steps": steps}},
    }


#: At 200 steps a > b > c; at 800 the order is reversed; at 3200 it is back to a > b > c.
SCORES = {
    200: {"a": 0.80, "b": 0.70, "c": 0.60},
    800: {"a": 0.60, "b": 0.70, "c": 0.80},
    3200: {"a": 0.90, "b": 0.85, "c": 0.84},
}
RECORDS = [_rec(m, s, v) for s, row in SCORES.items() for m, v in row.items()] + [
    _rec("dense", s, 0.85 + s / 1e5) for s in SCORES
]


def test_rankings_and_kendall_tau_per_length():
    section = convergence_section(RECORDS, with_figures=False)
    assert section["steps"] == [200, 800, 3200]
    (group,) = section["groups"]
    assert group["budget"] == 0.1 and group["metric"] == "accuracy"
    assert [r["order"] for r in group["rankings"]] == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
    taus = {(t["a"], t["b"]): t["tau"] for t in group["taus"]}
    assert taus[(200, 800)] == pytest.approx(-1.0)  # reversed
    assert taus[(800, 3200)] == pytest.approx(-1.0)
    assert taus[(200, 3200)] == pytest.approx(1.0)  # first vs last: same order
    dense = next(r for r in group["table"] if r["method"] == "dense")
    assert dense["scores"] == pytest.approx([0.852, 0.858, 0.882])  # the reference, not ranked
    assert all("dense" not in r["order"] for r in group["rankings"])


def test_seeds_are_averaged_before_ranking():
    recs = [
        _rec("a", 200, 0.9, seed=0),
        _rec("a", 200, 0.5, seed=1),
        _rec("b", 200, 0.6),
        _rec("a", 400, 0.6),
        _rec("b", 400, 0.6),
    ]
    group = convergence_section(recs, with_figures=False)["groups"][0]
    assert group["rankings"][0]["order"] == ["a", "b"]  # mean 0.7 > 0.6
    assert group["taus"][0]["tau"] is None  # every method tied at 400 steps: tau undefined, not a number


def test_one_length_has_no_section_and_keeps_all_records():
    one = [r for r in RECORDS if steps_of(r) == 200]
    assert convergence_section(one) is None
    assert longest_steps_records(one) == one
    assert {steps_of(r) for r in longest_steps_records(RECORDS)} == {3200}
    assert step_counts(RECORDS) == [200, 800, 3200]


def test_kendall_needs_two_common_methods_and_ranking_breaks_ties_by_name():
    assert kendall({"a": 1.0}, {"a": 2.0, "b": 1.0})["tau"] is None
    assert ranking({"b": 0.5, "a": 0.5, "c": 0.9}) == ["c", "a", "b"]
    assert ranking({"b": 0.5, "a": 0.7}, higher_better=False) == ["b", "a"]


def test_bad_steps_in_a_record_is_a_clear_error():
    with pytest.raises(ValueError, match=r"config\.finetune\.steps.*\[3, 5\]"):
        steps_of(_rec("a", [3, 5], 0.5))


def test_section_draws_a_figure():
    section = convergence_section(RECORDS)
    assert section["groups"][0]["figure"]["svg"].lstrip().startswith("<svg")
    assert "Does the verdict depend on the fine-tuning budget?" == section["title"]


def _env():
    return snakemake_env(HF_HUB_OFFLINE="1")


def test_convergence_profile_dry_runs():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--dry-run",
            "--cores",
            "2",
            "--printshellcmds",
            "--config",
            "profile=convergence",
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    stats = text.split("Job stats")[-1]
    counts = {p[0]: int(p[1]) for p in (line.split() for line in stats.splitlines()) if len(p) == 2 and p[1].isdigit()}
    assert counts["finetune_dense"] == 3 and counts["prune"] == 5 * 3 and counts["measure"] == 6 * 3
    assert "head_ablation" not in counts
    for steps in (200, 800, 1600):
        assert f"seed0_steps{steps}.json" in text and f'"steps": {steps},' in text


@background_fixture
def steps_sweep_run(results: Path) -> Path:
    """A steps axis of two tiny lengths (3 and 5 steps), one method, run to its end into ``results``."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--resources",
        "timing=2000",  # two 1-thread measure jobs side by side: latency here means nothing
        "--config",
        "profile=smoke",
        f"results_dir={results}",
        "finetune={steps: [3, 5]}",
        "methods=[magnitude_global]",
        "budgets=[0.5]",
        "head_ablation_modes=[]",
        # the smallest inputs: a slice of the data, one thread per job, one timing pass without ONNX Runtime
        "data={train_limit: 128, eval_limit: 64}",
        "threads={train: 1, measure: 1}",
        "measure={repeats: 1, warmup: 0, min_time_s: 0, batch_sizes: [1], memory: false, onnx: false}",
    ]
    out = run_captured(cmd, env=_env(), timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return results


@pytest.mark.workflow
def test_tiny_steps_sweep_runs_end_to_end(steps_sweep_run):
    results = steps_sweep_run
    for steps in (3, 5):
        for rel in (
            f"records/sst2/dense/1/seed0_steps{steps}.json",
            f"records/sst2/magnitude_global/0.5/seed0_steps{steps}.json",
        ):
            rec = json.loads((results / rel).read_text())
            assert rec["config"]["finetune"]["steps"] == steps
            assert rec["details"]["training"]["steps"] == steps
            assert rec["details"]["training"]["examples_per_s"] > 0
            assert rec["details"]["training"]["precision"] in ("fp32", "bf16")
            assert rec["provenance"]["hardware"]["cpu_capability"]
    html = (results / "report.html").read_text()
    assert "Does the verdict depend on the fine-tuning budget?" in html
    board = (results / "leaderboard.md").read_text()
    assert board.split("## Which backend")[0].count("| sst2 |") == 2  # dense and the method, at the longest length only


def test_published_convergence_records_give_the_verdict_in_docs_results():
    """The committed convergence run (reports/convergence/records) has three lengths, every
    record has its predictions, and the section computed from it is the one docs/results.md states."""
    from prunebench.records.record import read_record

    folder = REPO / "reports" / "convergence" / "records"
    paths = sorted(p for p in folder.rglob("*.json") if not p.name.endswith(".predictions.json"))
    assert paths, "no published convergence records"
    for p in paths:
        assert p.with_name(p.name[: -len(".json")] + ".predictions.json").is_file(), p
    section = convergence_section([read_record(p) for p in paths], with_figures=False)
    assert section["steps"] == [200, 800, 1600]
    (group,) = section["groups"]
    orders = {r["steps"]: r["order"] for r in group["rankings"]}
    assert orders[1600][0] == "flop" and orders[1600][-1] == "movement_hard"
    taus = {(t["a"], t["b"]): round(t["tau"], 2) for t in group["taus"]}
    assert taus[(200, 1600)] == 0.4 and taus[(800, 1600)] == 1.0
