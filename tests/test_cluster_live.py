"""The workflow on a live one-node SLURM cluster (``scripts/slurm_local.sh``), against a local run.

``make test-cluster`` runs this module (marker ``cluster``; ``make test`` leaves it out). It starts a
one-node cluster without accounting, runs a small smoke workflow through ``workflow/profiles/slurm``
(no ``--slurm-status-command``: the workflow must notice that ``sacct`` cannot answer and use
``squeue``), runs the same workflow locally, compares the records, and stops the daemons it started.
It skips only where SLURM cannot be installed or started (not root, no apt); under CI it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.cluster

SMALL = ["profile=smoke", "methods=[magnitude_global]", "budgets=[0.5]"]
#: the two records of that configuration: 4 jobs (dense, prune, two measure jobs), no report
TARGETS = ["records/sst2/dense/1/seed0.json", "records/sst2/magnitude_global/0.5/seed0.json"]
SCRIPT = REPO / "scripts" / "slurm_local.sh"


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _snakemake(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    out = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=600)
    if out.returncode == 3:
        reason = f"cannot start a SLURM cluster here: {(out.stderr or out.stdout).strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert out.returncode == 0, out.stdout + out.stderr
    pids = {name: int((folder / f"{name}.pid").read_text()) for name in ("munged", "slurmctld", "slurmd")}
    yield folder
    subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, text=True, timeout=120)
    for name, pid in pids.items():  # every daemon it started is gone
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), name


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    on_slurm = tmp_path_factory.mktemp("on_slurm")
    local = tmp_path_factory.mktemp("local")
    slurm = _snakemake(
        "--workflow-profile", "none", "--profile", "workflow/profiles/slurm",
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-logdir", str(on_slurm / "slurm_logs"), "--slurm-keep-successful-logs",
        "--config", *SMALL, f"results_dir={on_slurm}", "--", *[str(on_slurm / t) for t in TARGETS],
    )  # fmt: skip
    here = _snakemake(
        "--cores", "2", "--config", *SMALL, f"results_dir={local}", "--", *[str(local / t) for t in TARGETS]
    )
    return slurm, on_slurm, here, local


def _records(folder: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(folder)): json.loads(p.read_text())
        for p in sorted((folder / "records").rglob("seed*.json"))
        if not p.name.endswith(".predictions.json")
    }


def test_every_job_ran_on_slurm_and_the_status_trap_was_avoided(runs):
    slurm, _, _, _ = runs
    text = slurm.stdout + slurm.stderr
    assert slurm.returncode == 0, text[-4000:]
    assert "sacct says: Slurm accounting storage is disabled" in text and "read with squeue instead" in text
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", text)
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", text)
    assert done and len(submitted) == int(done[-1][1]) == 4  # every job of the run went through sbatch
    assert len(set(submitted)) == len(submitted)


def test_cluster_records_equal_the_local_run_and_name_their_job(runs):
    slurm, on_slurm, here, local = runs
    assert slurm.returncode == 0 and here.returncode == 0, here.stderr[-3000:]
    a, b = _records(on_slurm), _records(local)
    assert a.keys() == b.keys() and len(a) == 2  # dense and magnitude_global at 0.5
    node = socket.gethostname().split(".")[0]
    for name, rec in a.items():
        for metric in ("accuracy", "encoder_remaining"):
            assert rec["metrics"][metric]["value"] == b[name]["metrics"][metric]["value"], (name, metric)
        job = rec["provenance"]["hardware"]["slurm"]
        assert job["job_id"].isdigit() and job["node"] == node
        assert job["exclusive"] is True  # the measure job had the node to itself
        assert "slurm" not in b[name]["provenance"]["hardware"]
