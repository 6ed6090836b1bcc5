"""SLURM support for the workflow: a status command that can answer.

``snakemake-executor-plugin-slurm`` asks ``sacct`` for the state of its jobs whenever the binary
exists. On a cluster without an accounting database (``AccountingStorageType=none``, common on
small lab clusters) ``sacct`` answers "Slurm accounting storage is disabled", and the plugin keeps
waiting on jobs that have long finished, silently. ``check_status_command`` (called by the
workflow's ``onstart``, before any job is submitted) asks ``sacct`` once: when it cannot answer, the
run switches the plugin to ``squeue`` if the cluster's ``MinJobAge`` keeps finished jobs visible
long enough, and otherwise stops at once with a message naming ``--slurm-status-command squeue``
and ``MinJobAge``.

Where a job ran (job id, node, whether it had the node to itself) is recorded by
``prunebench.records.provenance.slurm_job``.
"""

from __future__ import annotations

import logging
import re
import subprocess

log = logging.getLogger("prunebench.runner.slurm")

#: seconds a finished job must stay visible to ``squeue`` for status checks to see it finish
#: (the plugin's longest wait between two checks is 180 s; three of them)
MIN_JOB_AGE_FOR_SQUEUE = 540


class SlurmStatusError(RuntimeError):
    """The cluster cannot report job states the way the run would ask for them."""


def _run(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def sacct_problem() -> str | None:
    """Why ``sacct`` cannot report job states here (None when it answers)."""
    out = _run(["sacct", "--noheader", "--allocations", "--format=JobID", "--starttime=now-1minutes"])
    if out is None:
        return "sacct did not answer within 30 s"
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0 or "accounting storage is disabled" in text.lower():
        return f"sacct says: {text.splitlines()[0] if text else f'exit status {out.returncode}'}"
    return None


def min_job_age() -> int | None:
    """The cluster's ``MinJobAge`` in seconds (``scontrol show config``), None when unknown."""
    out = _run(["scontrol", "show", "config"])
    if out is None or out.returncode != 0:
        return None
    match = re.search(r"^MinJobAge\s*=\s*(\d+)", out.stdout, flags=re.M)
    return int(match[1]) if match else None


def check_status_command(workflow) -> str | None:
    """Make sure the SLURM executor's status command can answer before any job is submitted.

    Returns a message when it changed the command to ``squeue``; raises ``SlurmStatusError`` when
    neither command would see a finished job. Does nothing for another executor or ``squeue``."""
    plugin = getattr(workflow, "executor_plugin", None)
    settings = getattr(workflow, "executor_settings", None)
    if plugin is None or getattr(plugin, "name", None) != "slurm" or settings is None:
        return None
    if getattr(settings, "status_command", None) != "sacct":
        return None
    problem = sacct_problem()
    if problem is None:
        return None
    age = min_job_age()
    if age is not None and age >= MIN_JOB_AGE_FOR_SQUEUE:
        settings.status_command = "squeue"
        message = (
            f"SLURM: {problem}; job states are read with squeue instead (MinJobAge={age} s keeps finished jobs visible)"
        )
        log.warning(message)
        return message
    raise SlurmStatusError(
        f"SLURM: {problem}, so the run would wait on finished jobs forever. Ask for "
        f"--slurm-status-command squeue on a cluster whose MinJobAge (now {age if age is not None else 'unknown'} s) "
        f"is at least {MIN_JOB_AGE_FOR_SQUEUE} s (slurm.conf), or enable accounting (slurmdbd)."
    )
