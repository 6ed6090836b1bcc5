"""The whole workflow through Snakemake on the smoke profile, plus a clear error for bad input.

The slow tests: the session's one smoke run (tests/conftest.py ``smoke_run``: `snakemake --cores 2
--config profile=smoke` plus the pre-training rows, into a temporary results folder) is checked record
by record, with the leaderboard and the report; the same command again has nothing to do; a run with
one job's outputs deleted redoes only that job. A second, tiny run (two methods, a few steps) is killed
part-way and resumed.
"""

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from prunebench.config import budget_label
from prunebench.records.record import predictions_path, read_predictions, read_record
from tests.background import background_fixture, run_captured, start_process
from tests.conftest import records_under, smoke_command, snakemake_env, snakemake_smoke

pytestmark = pytest.mark.workflow

# the names other test modules import
_records = records_under
_snakemake = snakemake_smoke


def _absolute_paths(value, where=""):
    """Every string in a JSON value that is an absolute filesystem path, with where it sits."""
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _absolute_paths(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in _absolute_paths(v, f"{where}[{i}]")]
    return [(where, value)] if isinstance(value, str) and value.startswith("/") else []


def test_smoke_records_name_no_machine_path(smoke_run):
    """Records name the model by package, files relative to the results folder or the checkout."""
    for path in _records(smoke_run.results / "records"):
        rec = read_record(path)
        assert _absolute_paths(rec) == [], path
        assert str(smoke_run.results) not in path.read_text(), path
        assert not rec["details"]["model_dir"].startswith("/")


def test_smoke_workflow_produces_records_report_and_leaderboard(smoke_run):
    results = smoke_run.results
    records = _records(results / "records")
    n_entries = len(smoke_run.expected)  # dense + methods x their budgets, 1 seed
    assert len(records) == n_entries
    made = {(r["method"], budget_label(r["budget"]), r["seed"]) for r in map(read_record, records)}
    assert made == smoke_run.expected
    methods = {read_record(p)["method"] for p in records}
    assert {"wanda", "wanda_oneshot", "sparsegpt", "obert", "magnitude_2to4", "torch_pruning"} <= methods
    for path in records:
        rec = read_record(path)
        # per-example predictions beside every record, matching it (n, references, metric value)
        assert read_predictions(predictions_path(path), rec).n == rec["details"]["training"]["eval_examples"]
        reachable = all(
            v.get("budget_reachable", True) for v in rec["details"]["method"].values() if isinstance(v, dict)
        )
        if rec["method"] != "dense" and reachable:
            # measured sparsity matches the budget within 0.5 points
            assert abs(rec["metrics"]["encoder_remaining"]["value"] - rec["budget"]) <= 0.005, rec["method"]
        for bs in rec["details"]["measurement"]["batch_sizes"]:  # the second backend: ONNX Runtime, every record
            assert rec["metrics"][f"ort_latency_b{bs}"]["value"] > 0, (rec["method"], rec["budget"])
            assert rec["metrics"][f"ort_speedup_b{bs}"]["value"] > 0
        assert 0.0 <= rec["metrics"]["accuracy"]["value"] <= 1.0
        assert rec["provenance"]["versions"]["torch"].startswith("2.13.0")
        for bs in rec["details"]["measurement"]["batch_sizes"]:
            assert rec["metrics"][f"latency_b{bs}"]["value"] > 0
            assert rec["metrics"][f"speedup_b{bs}"]["value"] > 0
            # the control: the dense model timed against itself in the same job, on both backends
            assert rec["metrics"][f"control_b{bs}"]["value"] > 0 and rec["metrics"][f"ort_control_b{bs}"]["value"] > 0
            timing = rec["details"]["measurement"]["latency"][f"b{bs}"]
            retries = 3 if bs == max(rec["details"]["measurement"]["batch_sizes"]) else 1
            assert 1 <= len(timing["control_attempts"]) <= retries and isinstance(timing["control_in_range"], bool)
    dense = read_record(results / "records/sst2/dense/1/seed0.json")
    assert dense["metrics"]["accuracy"]["value"] > 0.6, "the tiny model learns something in the smoke budget"
    html = (results / "report.html").read_text()
    assert "<svg" in html and "magnitude_global" in html
    board = (results / "leaderboard.md").read_text()
    assert board.split("## Which backend")[0].count("| sst2 |") == n_entries
    assert "## Which backend decides the speed-up" in board
    assert (results / "leaderboard.csv").read_text().startswith("task,budget,rank,method")
    # every saved model has a log and a benchmark file (the rule's log:/benchmark:)
    assert len(list((results / "logs").rglob("*.log"))) >= n_entries
    assert len(list((results / "benchmarks").rglob("*.tsv"))) >= n_entries


def test_flop_whose_gates_stop_short_is_flagged_as_filled_up(smoke_run):
    """FILL_UP_ROW (tests/conftest.py): FLOP's gates keep far less than the budget, finalize fills up to it; the
    record says both fractions and the leaderboard marks the row † "enforced by fill-up"."""
    import csv

    from tests.conftest import FILL_UP_ROW

    method, budget, _ = FILL_UP_ROW
    rec = read_record(smoke_run.results / f"records/sst2/{method}/{budget_label(budget)}/seed0.json")
    before = rec["details"]["method"]["remaining_before_finalize"]
    after = rec["metrics"]["encoder_remaining"]["value"]
    assert before < 0.75 * after and after == pytest.approx(budget, abs=0.02)
    with open(smoke_run.results / "leaderboard.csv") as fh:
        (row,) = [r for r in csv.DictReader(fh) if r["method"] == method and float(r["budget"]) == budget]
    assert row["enforced_by_fill_up"] == "True" and row["enforced_by_truncation"] == "False"
    board = (smoke_run.results / "leaderboard.md").read_text()
    assert f"| {method} †" in board and "budget enforced by fill-up" in board


def test_second_run_has_nothing_to_do(smoke_run):
    out = _snakemake(*smoke_run.args, "--dry-run", results=smoke_run.results)
    assert out.returncode == 0
    assert "Nothing to be done" in out.stdout + out.stderr


def test_interrupted_run_redoes_only_missing_jobs(smoke_run):
    # as after a crash during one pruning job: its outputs and the summaries are missing
    # (the shared run is complete again at the end: the test makes them again)
    import shutil

    results = smoke_run.results
    shutil.rmtree(results / "models/sst2/random/0.1")
    (results / "summaries/sst2/random/0.1/seed0.json").unlink()
    (results / "records/sst2/random/0.1/seed0.json").unlink()
    for name in ("report.html", "leaderboard.md", "leaderboard.csv"):
        (results / name).unlink()
    out = _snakemake(*smoke_run.args, "--dry-run", results=results)
    stats = (out.stdout + out.stderr).split("Job stats")[-1]
    assert "finetune_dense" not in stats
    assert any(line.split()[:2] == ["prune", "1"] for line in stats.splitlines()), stats
    assert any(line.split()[:2] == ["measure", "1"] for line in stats.splitlines()), stats
    out = _snakemake(*smoke_run.args, results=results)
    assert out.returncode == 0 and (results / "report.html").exists()


def test_bad_config_stops_before_any_work(tmp_path):
    out = _snakemake("budgets=[0.5,1.5]", results=tmp_path)
    assert out.returncode != 0
    assert "budgets" in out.stderr + out.stdout and "1.5" in out.stderr + out.stdout
    assert not (tmp_path / "records").exists()


def test_unknown_method_stops_before_any_work(tmp_path):
    out = _snakemake("methods=[magnitude_global,nonsense]", results=tmp_path)
    assert out.returncode != 0
    assert "unknown method 'nonsense'" in out.stderr + out.stdout


#: the smallest run that still shows a kill part-way and the resume: two methods at the two smoke budgets
#: (5 records), a few fine-tuning steps, one timing pass at batch 1 without ONNX Runtime or memory (the smoke
#: run checks those), no head ablation
RESUME_RUN = [
    "methods=[magnitude_oneshot,random]",
    "finetune={steps: 4}",
    "threads={train: 1, measure: 1}",
    "measure={batch_sizes: [1], warmup: 0, repeats: 1, min_time_s: 0, memory: false, onnx: false}",
    "head_ablation_modes=[]",
]
RESUME_RECORDS = 1 + 2 * 2  # dense + 2 methods x 2 budgets, 1 seed


@dataclass(frozen=True)
class ResumedRun:
    """A run killed part-way and resumed: its folder, the records finished before the kill (path -> mtime in
    ns), and the resuming command's result."""

    results: Path
    finished: dict[Path, int]
    resumed: subprocess.CompletedProcess


@background_fixture
def killed_and_resumed_run(results: Path) -> ResumedRun:
    """``RESUME_RUN`` killed (SIGKILL to its process group, as a crash) once 3 records are written, then
    `snakemake --unlock` and the same command again."""
    env = snakemake_env()
    cmd = smoke_command(*RESUME_RUN, results=results)
    proc = start_process(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while time.time() < deadline and len(_records(results / "records")) < 3 and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    finished = {p: p.stat().st_mtime_ns for p in _records(results / "records")}
    run_captured([*cmd, "--unlock"], env=env, timeout=300).check_returncode()
    return ResumedRun(results, finished, run_captured(cmd, env=env, timeout=1800))


def test_killed_run_resumes_and_keeps_finished_results(killed_and_resumed_run):
    """The workflow killed mid-run, then unlocked and run again: finished records are kept, only the rest runs."""
    run = killed_and_resumed_run
    assert 3 <= len(run.finished) < RESUME_RECORDS, "the run was interrupted part-way"
    assert run.resumed.returncode == 0, run.resumed.stderr[-3000:]
    assert len(_records(run.results / "records")) == RESUME_RECORDS
    # the newest record may belong to the job that was still finishing when killed: Snakemake reruns that job
    newest = max(run.finished, key=run.finished.get)
    assert all(p.stat().st_mtime_ns == t for p, t in run.finished.items() if p != newest), (
        "finished records were not redone"
    )
    assert (run.results / "report.html").exists()
