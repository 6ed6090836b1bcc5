"""The whole workflow through Snakemake on the smoke profile, plus a clear error for bad input.

This is the slow test (about two minutes on two cores): it runs `snakemake --cores 2
--config profile=smoke` into a temporary results folder and checks every record, the
leaderboard and the report; then runs the same command again to show nothing is redone.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prunebench.records.record import predictions_path, read_predictions, read_record
from tests.conftest import REPO

pytestmark = pytest.mark.workflow


def _records(folder: Path) -> list[Path]:
    """The result records under ``folder`` (not their ``*.predictions.json`` companions)."""
    return sorted(p for p in folder.rglob("*.json") if not p.name.endswith(".predictions.json"))


def _snakemake(*args, results: Path, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--config",
        "profile=smoke",
        f"results_dir={results}",
        *args,
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("smoke")
    out = _snakemake(results=results)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return results


def _absolute_paths(value, where=""):
    """Every string in a JSON value that is an absolute filesystem path, with where it sits."""
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _absolute_paths(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in _absolute_paths(v, f"{where}[{i}]")]
    return [(where, value)] if isinstance(value, str) and value.startswith("/") else []


def test_smoke_records_name_no_machine_path(smoke_run):
    """Records name the model by package, files relative to the results folder or the checkout."""
    for path in _records(smoke_run / "records"):
        rec = read_record(path)
        assert _absolute_paths(rec) == [], path
        assert str(smoke_run) not in path.read_text(), path
        assert not rec["details"]["model_dir"].startswith("/")


def test_smoke_workflow_produces_records_report_and_leaderboard(smoke_run):
    records = _records(smoke_run / "records")
    smoke = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())["profiles"]["smoke"]
    n_entries = 1 + len(smoke["methods"]) * len(smoke["budgets"])  # dense + methods x budgets, 1 seed
    assert len(records) == n_entries
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
    dense = read_record(smoke_run / "records/sst2/dense/1/seed0.json")
    assert dense["metrics"]["accuracy"]["value"] > 0.6, "the tiny model learns something in the smoke budget"
    html = (smoke_run / "report.html").read_text()
    assert "<svg" in html and "magnitude_global" in html
    board = (smoke_run / "leaderboard.md").read_text()
    assert board.split("## Which backend")[0].count("| sst2 |") == n_entries
    assert "## Which backend decides the speed-up" in board
    assert (smoke_run / "leaderboard.csv").read_text().startswith("task,budget,rank,method")
    # every saved model has a log and a benchmark file (the rule's log:/benchmark:)
    assert len(list((smoke_run / "logs").rglob("*.log"))) >= n_entries
    assert len(list((smoke_run / "benchmarks").rglob("*.tsv"))) >= n_entries


def test_second_run_has_nothing_to_do(smoke_run):
    out = _snakemake("--dry-run", results=smoke_run)
    assert out.returncode == 0
    assert "Nothing to be done" in out.stdout + out.stderr


def test_interrupted_run_redoes_only_missing_jobs(smoke_run):
    # as after a crash during one pruning job: its outputs and the summaries are missing
    import shutil

    shutil.rmtree(smoke_run / "models/sst2/random/0.1")
    (smoke_run / "summaries/sst2/random/0.1/seed0.json").unlink()
    (smoke_run / "records/sst2/random/0.1/seed0.json").unlink()
    for name in ("report.html", "leaderboard.md", "leaderboard.csv"):
        (smoke_run / name).unlink()
    out = _snakemake("--dry-run", results=smoke_run)
    stats = (out.stdout + out.stderr).split("Job stats")[-1]
    assert "finetune_dense" not in stats
    assert any(line.split()[:2] == ["prune", "1"] for line in stats.splitlines()), stats
    assert any(line.split()[:2] == ["measure", "1"] for line in stats.splitlines()), stats
    out = _snakemake(results=smoke_run)
    assert out.returncode == 0 and (smoke_run / "report.html").exists()


def test_bad_config_stops_before_any_work(tmp_path):
    out = _snakemake("budgets=[0.5,1.5]", results=tmp_path)
    assert out.returncode != 0
    assert "budgets" in out.stderr + out.stdout and "1.5" in out.stderr + out.stdout
    assert not (tmp_path / "records").exists()


def test_unknown_method_stops_before_any_work(tmp_path):
    out = _snakemake("methods=[magnitude_global,nonsense]", results=tmp_path)
    assert out.returncode != 0
    assert "unknown method 'nonsense'" in out.stderr + out.stdout


def test_killed_run_resumes_and_keeps_finished_results(tmp_path):
    """The workflow killed mid-run (SIGKILL to its process group, as a crash), then `snakemake --unlock`
    and the same command: finished records are kept, only the rest runs."""
    import signal
    import time

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # four methods (9 records) keep this second workflow run short; the smoke test above runs them all
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--config",
        "profile=smoke",
        f"results_dir={tmp_path}",
        "methods=[magnitude_global,magnitude_local,magnitude_oneshot,random]",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 900
    while time.time() < deadline and len(_records(tmp_path / "records")) < 3:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    finished = {p: p.stat().st_mtime_ns for p in _records(tmp_path / "records")}
    assert 3 <= len(finished) < 9, "the run was interrupted part-way"
    subprocess.run([*cmd, "--unlock"], cwd=REPO, env=env, capture_output=True, timeout=300, check=True)
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(_records(tmp_path / "records")) == 9
    # the newest record may belong to the job that was still finishing when killed: Snakemake reruns that job
    newest = max(finished, key=finished.get)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items() if p != newest), (
        "finished records were not redone"
    )
    assert (tmp_path / "report.html").exists()
