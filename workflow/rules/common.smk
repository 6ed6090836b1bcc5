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
    """The experiment as one training job sees it (JSON): its task's overrides merged in, without
    the fan-out lists, other methods' settings, thread counts (given by Snakemake) and the
    measurement settings, so adding a method, budget or seed, or changing how latency is
    timed, does not re-train finished models."""
    exp = for_task(EXP, task)
    skip = ("methods", "budgets", "seeds", "tasks", "method_settings", "measure", "threads", "head_ablation_modes")
    job = {k: v for k, v in exp.items() if k not in skip}
    job["method_settings"] = {method: EXP.get("method_settings", {}).get(method, {})} if method != "dense" else {}
    return json.dumps(job, sort_keys=True)


def job_measurement(task):
    """The measurement settings of a task (JSON): a change re-runs measure jobs only."""
    return json.dumps(for_task(EXP, task)["measure"], sort_keys=True)



def _alternatives(values):
    return "|".join(re.escape(v) for v in values) or "(?!)"


wildcard_constraints:
    task=_alternatives(TASKS),
    method=_alternatives(METHODS + ["dense"]),
    budget=_alternatives(BUDGETS + ["1"]),
    seed=r"\d+",


# Latency is timed on a quiet machine: a measure job takes every unit of the `timing`
# resource and every other job one unit, so (with the limit set in profiles/default) no job
# runs beside a measure job. Under a cluster executor each job has its own node share and
# the resource is left unlimited.
TIMING_UNITS = 1000


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


def training_summary(task, method, budget, seed):
    """The training job's half of a record (metric, remaining weights, training details)."""
    return f"{RESULTS}/summaries/{task}/{method}/{budget}/seed{seed}.json"


def model_dir(task, method, budget, seed):
    if method == "dense":
        return f"{RESULTS}/models/{task}/dense/seed{seed}"
    return f"{RESULTS}/models/{task}/{method}/{budget}/seed{seed}"


def prune_inputs(w):
    """The dense checkpoint (for methods that start from it) and a reference method's summary."""
    inputs = {}
    if methods.get(w.method).starts_from == "dense":
        inputs["dense"] = model_dir(w.task, "dense", "1", w.seed)
    ref = reference_of(w.method)
    if ref is not None:
        inputs["reference"] = training_summary(w.task, ref, w.budget, w.seed)
    return inputs


def dense_arg(w, input):
    return f"--dense-dir {input.dense}" if "dense" in input.keys() else ""


def reference_arg(w, input):
    return f"--reference-summary {input.reference}" if "reference" in input.keys() else ""


def measure_inputs(w):
    return {"summary": training_summary(w.task, w.method, w.budget, w.seed),
            "model": model_dir(w.task, w.method, w.budget, w.seed),
            "dense": model_dir(w.task, "dense", "1", w.seed)}


def final_outputs():
    return ([f"{RESULTS}/report.html", f"{RESULTS}/leaderboard.md", f"{RESULTS}/leaderboard.csv"]
            + analysis_outputs() + published_leaderboard())
