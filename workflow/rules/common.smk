import json
import re
import sys

import methods
from prunebench.config import ConfigError, budget_label, for_task, resolve

try:
    EXP = resolve(config)
except ConfigError as exc:
    sys.exit(f"prunebench: {exc}")

RESULTS = EXP["results_dir"]
TASKS = EXP["tasks"]
METHODS = EXP["methods"]
BUDGETS = [budget_label(b) for b in EXP["budgets"]]
SEEDS = [str(s) for s in EXP["seeds"]]


def job_experiment(task, method="dense"):
    """The experiment as one job sees it (JSON): its task's overrides merged in, without the
    fan-out lists and other methods' settings, so adding a method, budget or seed does not
    re-run finished jobs."""
    exp = for_task(EXP, task)
    job = {k: v for k, v in exp.items() if k not in ("methods", "budgets", "seeds", "tasks", "method_settings")}
    job["method_settings"] = {method: EXP.get("method_settings", {}).get(method, {})} if method != "dense" else {}
    return json.dumps(job, sort_keys=True)



def _alternatives(values):
    return "|".join(re.escape(v) for v in values) or "(?!)"


wildcard_constraints:
    task=_alternatives(TASKS),
    method=_alternatives(METHODS),
    budget=_alternatives(BUDGETS + ["1"]),
    seed=r"\d+",


def dense_record(task, seed):
    return f"{RESULTS}/records/{task}/dense/1/seed{seed}.json"


def method_record(task, method, budget, seed):
    return f"{RESULTS}/records/{task}/{method}/{budget}/seed{seed}.json"


def method_budgets(method):
    """Budgets a method runs at: the configured ones, or only '1' for budget-free rows (int8)."""
    return ["1"] if methods.get(method).budget_free else BUDGETS


def all_records():
    """Every record the experiment produces: dense per (task, seed), methods per (task, budget, seed)."""
    paths = [dense_record(t, s) for t in TASKS for s in SEEDS]
    paths += [method_record(t, m, b, s) for t in TASKS for m in METHODS for b in method_budgets(m) for s in SEEDS]
    return paths


def reference_of(method):
    """The reference method named in a method's settings (methods with needs_reference)."""
    cls = methods.get(method)
    if not cls.needs_reference:
        return None
    return cls.make_settings(EXP.get("method_settings", {}).get(method, {})).reference


def prune_inputs(w):
    inputs = {"dense": f"{RESULTS}/models/{w.task}/dense/seed{w.seed}"}
    ref = reference_of(w.method)
    if ref is not None:
        inputs["reference"] = method_record(w.task, ref, w.budget, w.seed)
    return inputs


def reference_arg(w, input):
    return f"--reference-record {input.reference}" if "reference" in input.keys() else ""


def final_outputs():
    return ([f"{RESULTS}/report.html", f"{RESULTS}/leaderboard.md", f"{RESULTS}/leaderboard.csv"]
            + analysis_outputs() + published_leaderboard())
