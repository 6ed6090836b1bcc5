"""The workaround for Snakemake's busy scheduler (prunebench/runner/scheduler_timers.py)."""

from __future__ import annotations

import threading
import time

import yaml
from snakemake.settings.types import MaxJobsPerTimespan

from prunebench.runner.scheduler_timers import stop_pending_timers
from tests.conftest import REPO


def test_stop_pending_timers_cancels_waiting_timers_before_they_fire():
    fired = []
    timers = [threading.Timer(30, fired.append, args=(i,)) for i in range(3)]
    for timer in timers:
        timer.start()
    assert stop_pending_timers() >= 3
    for timer in timers:
        timer.join(timeout=5)
        assert not timer.is_alive()
    time.sleep(0.05)
    assert fired == []


def test_default_profile_slows_the_rate_limiter_without_limiting_local_runs():
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    limit = MaxJobsPerTimespan.parse_choice(profile["max-jobs-per-timespan"])
    assert limit.timespan >= 60, "a short timespan lets the scheduler busy-loop beside measure jobs"
    # jobs per second the limit allows: far above what a local run starts
    assert limit.max_jobs / limit.timespan >= 10


def test_workflow_cancels_the_timers_when_the_run_ends():
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    for handler in ("onsuccess:", "onerror:"):
        block = common.split(handler, 1)[1].split("\n\n\n", 1)[0]
        assert "stop_pending_timers()" in block, handler
