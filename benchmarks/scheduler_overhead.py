"""How much CPU Snakemake's scheduler takes beside the jobs, per ``--max-jobs-per-timespan``.

Not a test: a benchmark script to run by hand. It writes a throw-away workflow of ``--jobs`` jobs
that each sleep ``--sleep`` seconds and hold the whole ``timing`` resource (as prunebench's measure
jobs do), so they run one at a time while the others wait ready, and runs it with each setting:

- ``100/1s``: Snakemake's default;
- ``1000/1m``: what ``profiles/default/config.yaml`` sets;
- ``1000/1m`` without the ``onsuccess`` handler that cancels the pending timers
  (``prunebench.runner.scheduler_timers``): the exit waits for the last timer.

For each it prints the wall time, the CPU seconds of Snakemake and its jobs (the jobs only sleep,
so this is the scheduler's), and that CPU as a share of one core over the run. The CPU class does not
matter much here, but it is printed with the load average, as for every timing of this project.

    python benchmarks/scheduler_overhead.py                 # 150 jobs of 0.3 s
    python benchmarks/scheduler_overhead.py --jobs 60 --sleep 0.2
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKFLOW = """\
rule all:
    input: expand("out/{{i}}.txt", i=range({jobs}))

rule one:
    output: "out/{{i}}.txt"
    resources: timing=1000
    shell: "sleep {sleep}; touch {{output}}"
"""

STOP_TIMERS = """
onsuccess:
    from prunebench.runner.scheduler_timers import stop_pending_timers

    stop_pending_timers()
"""


def run_once(folder: Path, timespan: str, stop_timers: bool, jobs: int, sleep: float) -> tuple[float, float]:
    """Wall seconds and CPU seconds (Snakemake and its jobs) of one run of the throw-away workflow."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "Snakefile").write_text(WORKFLOW.format(jobs=jobs, sleep=sleep) + (STOP_TIMERS if stop_timers else ""))
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "2",
            "--resources",
            "timing=1000",
            "--max-jobs-per-timespan",
            timespan,
            "--quiet",
        ],
        cwd=folder,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=150)
    parser.add_argument("--sleep", type=float, default=0.3, help="seconds each job sleeps")
    args = parser.parse_args(argv)

    import torch

    print(
        f"CPU class: {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} logical cores, "
        f"load average {os.getloadavg()[0]:.2f}; {args.jobs} jobs of {args.sleep} s, one at a time "
        f"(the jobs' own sleeping alone: {args.jobs * args.sleep:.0f} s)"
    )
    print(f"{'setting':<38}{'wall s':>8}{'CPU s':>8}{'CPU / wall':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, timespan, stop in [
            ("100/1s (Snakemake's default)", "100/1s", True),
            ("1000/1m (profiles/default)", "1000/1m", True),
            ("1000/1m, timers not cancelled", "1000/1m", False),
        ]:
            wall, cpu = run_once(Path(tmp) / "wf", timespan, stop, args.jobs, args.sleep)
            print(f"{label:<38}{wall:>8.1f}{cpu:>8.1f}{cpu / wall:>11.0%}")


if __name__ == "__main__":
    main()
