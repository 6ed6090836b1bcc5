import json
import re
import sys

from prunebench.config import ConfigError, budget_label, resolve

try:
    EXP = resolve(config)
except ConfigError as exc:
    sys.exit(f"prunebench: {exc}")

RESULTS = EXP["results_dir"]
TASK = EXP["task"]
METHODS = EXP["methods"]
BUDGETS = [budget_label(b) for b in EXP["budgets"]]
SEEDS = [str(s) for s in EXP["seeds"]]
# The resolved experiment, handed to every job (a change re-runs the affected jobs).
EXP_JSON = json.dumps(EXP, sort_keys=True)


def _alternatives(values):
    return "|".join(re.escape(v) for v in values) or "(?!)"


wildcard_constraints:
    task=_alternatives([TASK]),
    method=_alternatives(METHODS),
    budget=_alternatives(BUDGETS),
    seed=r"\d+",


def dense_record(seed):
    return f"{RESULTS}/records/{TASK}/dense/1/seed{seed}.json"


def method_record(method, budget, seed):
    return f"{RESULTS}/records/{TASK}/{method}/{budget}/seed{seed}.json"


def all_records():
    """Every record the configured experiment produces: dense per seed, methods per budget and seed."""
    paths = [dense_record(s) for s in SEEDS]
    paths += [method_record(m, b, s) for m in METHODS for b in BUDGETS for s in SEEDS]
    return paths


def final_outputs():
    return [f"{RESULTS}/report.html", f"{RESULTS}/leaderboard.md", f"{RESULTS}/leaderboard.csv"]
