"""Time the workflow end to end: wall time per rule and in total, for one or more profiles.

    python scripts/time_profiles.py smoke default        # each profile into a fresh results dir
    python scripts/time_profiles.py --summarize results   # per-rule job times of a finished run

Runs ``snakemake --cores N --config profile=P results_dir=DIR`` for each profile, then reads
the rules' ``benchmark:`` files (seconds per job) and prints, per rule, the number of jobs,
the summed and the mean job time, and the total wall time of the run.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from prunebench.report.collect import rule_of_benchmark  # noqa: E402  (the report's own rule-from-path mapping)


def time_profile(profile: str, cores: int, results: Path) -> None:
    if results.exists():
        shutil.rmtree(results)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            str(cores),
            "--config",
            f"profile={profile}",
            f"results_dir={results}",
        ],
        cwd=REPO,
        env=env,
        check=True,
    )
    total = time.perf_counter() - start
    print(f"\n== profile {profile}: {total:.1f} s wall ({total / 60:.1f} min) on {os.cpu_count()} logical cores ==")
    summarize(results)


def summarize(results: Path) -> None:
    """Per rule: jobs, summed, mean and longest job time (the rules' benchmark files)."""
    per_rule: dict[str, list[float]] = defaultdict(list)
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = rule_of_benchmark(tsv.relative_to(results / "benchmarks"))
        with tsv.open() as fh:
            per_rule[rule] += [float(row["s"]) for row in csv.DictReader(fh, delimiter="\t")]
    print("(job seconds overlap: training jobs run side by side, measure jobs alone)")
    print(f"{'rule':<18}{'jobs':>6}{'sum s':>10}{'mean s':>10}{'max s':>10}")
    for rule, secs in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        print(f"{rule:<18}{len(secs):>6}{sum(secs):>10.1f}{sum(secs) / len(secs):>10.1f}{max(secs):>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="*")
    parser.add_argument("--summarize", metavar="RESULTS_DIR", help="only print the per-rule table of a finished run")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--results-root", default="results/timing")
    args = parser.parse_args()
    if args.summarize:
        summarize(Path(args.summarize))
    for profile in args.profiles:
        time_profile(profile, args.cores, REPO / args.results_root / profile)


if __name__ == "__main__":
    main()
