"""The SLURM path without a cluster: the status-command guard, job provenance, the GPU profile's plan."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from prunebench.records import provenance
from prunebench.runner import slurm
from tests.conftest import REPO


def _completed(stdout="", stderr="", returncode=0):
    return subprocess.CompletedProcess(args=[], returncode=returncode, stdout=stdout, stderr=stderr)


def _workflow(status_command="sacct", executor="slurm"):
    return SimpleNamespace(
        executor_plugin=SimpleNamespace(name=executor),
        executor_settings=SimpleNamespace(status_command=status_command),
    )


@pytest.fixture
def cluster_answers(monkeypatch):
    """``sacct`` and ``scontrol show config`` as a cluster without accounting answers them."""
    answers = {"sacct": _completed(stderr="Slurm accounting storage is disabled\n", returncode=1)}

    def run(args, timeout=30):
        if args[0] == "sacct":
            return answers["sacct"]
        return _completed(stdout=f"Configuration data as of now\nMinJobAge               = {answers['age']} sec\n")

    monkeypatch.setattr(slurm, "_run", run)
    return answers


def test_accounting_off_switches_to_squeue_when_min_job_age_allows(cluster_answers):
    cluster_answers["age"] = 3600
    wf = _workflow()
    message = slurm.check_status_command(wf)
    assert wf.executor_settings.status_command == "squeue"
    assert "accounting storage is disabled" in message and "MinJobAge=3600" in message


def test_accounting_off_with_short_min_job_age_stops_at_once(cluster_answers):
    cluster_answers["age"] = 300
    wf = _workflow()
    with pytest.raises(slurm.SlurmStatusError, match=r"--slurm-status-command squeue.*MinJobAge \(now 300 s\)"):
        slurm.check_status_command(wf)
    assert wf.executor_settings.status_command == "sacct"


def test_working_sacct_other_executors_and_squeue_are_left_alone(cluster_answers):
    cluster_answers["age"] = 3600
    cluster_answers["sacct"] = _completed(stdout="12\n13\n")
    for wf in (_workflow(), _workflow(executor="local"), _workflow(status_command="squeue")):
        before = wf.executor_settings.status_command
        assert slurm.check_status_command(wf) is None
        assert wf.executor_settings.status_command == before


def test_records_name_the_slurm_job_and_whether_it_had_the_node(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert provenance.slurm_job() is None and "slurm" not in provenance.hardware()
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURMD_NODENAME", "node7")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "cpu")
    line = "JobId=42 JobName=x NumNodes=1 NumCPUs=16 NumTasks=1 OverSubscribe=NO Contiguous=0"
    monkeypatch.setattr(provenance.subprocess, "run", lambda *a, **k: _completed(stdout=line))
    job = provenance.hardware()["slurm"]
    assert job["job_id"] == "42" and job["node"] == "node7" and job["exclusive"] is True
    assert job["cpus_allocated"] == 16
    monkeypatch.setattr(provenance.subprocess, "run", lambda *a, **k: _completed(stdout=line.replace("NO", "OK")))
    assert provenance.slurm_job()["exclusive"] is False  # a measure job told to share its node says so


def test_gpu_profile_puts_a_gpu_on_training_jobs_and_not_on_measure(tmp_path):
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile", "none", "--profile",
         "workflow/profiles/slurm-gpu", "--config", "profile=smoke", "methods=[magnitude_global]",
         "budgets=[0.5]", f"results_dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    resources: dict[str, list[str]] = {}
    rule = None
    for line in out.stdout.splitlines():
        if line.startswith("rule "):
            rule = line[5:].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            resources.setdefault(rule, []).append(line.strip())
    assert {"finetune_dense", "prune", "measure"} <= set(resources)
    for name in ("finetune_dense", "prune"):
        assert all("gres=gpu:1" in r and "slurm_partition=gpu" in r for r in resources[name]), name
    assert all("gres=" not in r and "slurm_extra=--exclusive" in r for r in resources["measure"])
    # the plugin turns the rule's gres into the sbatch option
    values = {"gres": "gpu:1"}
    job = SimpleNamespace(resources=SimpleNamespace(get=lambda k, d=None: values.get(k, d), **values))
    assert "--gres=gpu:1" in set_gres_string(job)
