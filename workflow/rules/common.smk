import json
import re
import sys

import methods
from prunebench.config import ConfigError, budget_label, budgets_of, finetune_steps, for_task, resolve, steps_suffix
from prunebench.runner.scheduler_timers import stop_pending_timers

try:
    EXP = resolve(config)
except ConfigError as exc:
    sys.exit(f"prunebench: {exc}")

RESULTS = EXP["results_dir"]


onstart:
    # every task's local data files load (columns, labels, non-empty) before any job starts
    # (prunebench/data/check.py); a bad file stops the run here, naming the file and the problem
    from prunebench.data.loading import DataError
    from prunebench.data.check import check_experiment_data

    try:
        check_experiment_data(EXP, RESULTS)
    except DataError as exc:
        sys.exit(f"prunebench: {exc}")
    # on SLURM: a status command that can see finished jobs (prunebench/runner/slurm.py), before any submission
    from prunebench.runner.slurm import SlurmStatusError, check_status_command

    try:
        check_status_command(workflow)
    except SlurmStatusError as exc:
        sys.exit(f"prunebench: {exc}")


# The scheduler's rate-limit timers (profiles/default: one-minute timespan) are cancelled when the
# run ends, so the process exits at once (prunebench/runner/scheduler_timers.py explains why).
onsuccess:
    stop_pending_timers()


onerror:
    stop_pending_timers()


TASKS = EXP["tasks"]
METHODS = EXP["methods"]
BUDGETS = [budget_label(b) for b in EXP["budgets"]]
SEEDS = [str(s) for s in EXP["seeds"]]
# Fine-tuning lengths: one (every path as before) or a list swept like budgets, each length its
# own dense model and method runs, named by the `steps` wildcard ('_steps800' after the seed).
STEPS = finetune_steps(EXP)
SWEPT = len(STEPS) > 1
STEP_SUFFIXES = [steps_suffix(s, SWEPT) for s in STEPS]
LONGEST = steps_suffix(max(STEPS), SWEPT)  # the length the leaderboard and head ablation use


def steps_of(suffix):
    """The fine-tuning steps a `steps` wildcard names ('' = the one configured length)."""
    return int(suffix[len("_steps"):]) if suffix else STEPS[0]


def job_experiment(task, method="dense", steps=""):
    """The experiment as one training job sees it (JSON): its task's overrides merged in, without
    the fan-out lists, other methods' settings, thread counts (given by Snakemake) and the
    measurement settings, so adding a method, budget or seed, or changing how latency is
    timed, does not re-train finished models. `finetune.steps` is this job's one length (an int)."""
    exp = for_task(EXP, task)
    skip = ("methods", "budgets", "method_budgets", "seeds", "tasks", "method_settings", "measure", "threads",
            "head_ablation_modes", "pretrain")  # the pre-training stage's settings reach only its own jobs (job_pretrain)
    job = {k: v for k, v in exp.items() if k not in skip}
    job["method_settings"] = {method: EXP.get("method_settings", {}).get(method, {})} if method != "dense" else {}
    job["finetune"] = {**job["finetune"], "steps": steps_of(steps)}
    return json.dumps(job, sort_keys=True)


def job_measurement(task):
    """The measurement settings of a task (JSON): a change re-runs measure jobs only."""
    return json.dumps(for_task(EXP, task)["measure"], sort_keys=True)



def _alternatives(values):
    return "|".join(re.escape(v) for v in values) or "(?!)"


wildcard_constraints:
    task=_alternatives(TASKS),
    method=_alternatives(METHODS + ["dense"]),
    budget=_alternatives(sorted(set(BUDGETS + ["1"]) | {budget_label(b) for m in METHODS for b in budgets_of(EXP, m)})),
    seed=r"\d+",
    steps="(?:" + "|".join(re.escape(s) for s in STEP_SUFFIXES) + ")",


# Latency is timed on a quiet machine: a measure job takes every unit of the `timing`
# resource and every other job one unit, so (with the limit set in profiles/default) no job
# runs beside a measure job. Under a cluster executor each job has its own node share and
# the resource is left unlimited.
TIMING_UNITS = 1000


def dense_record(task, seed, steps=""):
    return f"{RESULTS}/records/{task}/dense/1/seed{seed}{steps}.json"


def method_record(task, method, budget, seed, steps=""):
    return f"{RESULTS}/records/{task}/{method}/{budget}/seed{seed}{steps}.json"


def method_budgets(method):
    """Budgets a method runs at (labels): only '1' for budget-free rows (int8, fixed attention), its
    `method_budgets` entry where it has one (structured methods), else the configured `budgets`."""
    return [budget_label(b) for b in budgets_of(EXP, method)]


def all_records(step_suffixes=None):
    """Every record the experiment produces: dense per (task, seed, steps), methods per (task, budget,
    seed, steps); only the lengths in `step_suffixes` when given."""
    lengths = STEP_SUFFIXES if step_suffixes is None else step_suffixes
    paths = [dense_record(t, s, n) for t in TASKS for s in SEEDS for n in lengths]
    paths += [method_record(t, m, b, s, n) for t in TASKS for m in METHODS for b in method_budgets(m) for s in SEEDS
              for n in lengths]
    return paths


def reference_of(method):
    """The reference method named in a method's settings (methods with needs_reference)."""
    cls = methods.get(method)
    if not cls.needs_reference:
        return None
    return cls.make_settings(EXP.get("method_settings", {}).get(method, {})).reference


def training_summary(task, method, budget, seed, steps=""):
    """The training job's half of a record (metric, remaining weights, training details)."""
    return f"{RESULTS}/summaries/{task}/{method}/{budget}/seed{seed}{steps}.json"


def model_dir(task, method, budget, seed, steps=""):
    if method == "dense":
        return f"{RESULTS}/models/{task}/dense/seed{seed}{steps}"
    return f"{RESULTS}/models/{task}/{method}/{budget}/seed{seed}{steps}"


#: rows that compress during pre-training (methods/pretrain_stage.py): each (row, budget, seed) has one
#: pre-training stage job (rule pretrain), shared by every task and fine-tuning length
PRETRAIN_METHODS = [m for m in METHODS if methods.get(m).starts_from == "pretrain"]


def pretrain_dir(method, budget, seed):
    """The pre-training stage's output: pruned encoder, MLM head, pretrain.json (task-independent)."""
    return f"{RESULTS}/pretrained/{method}/{budget}/seed{seed}"


def job_pretrain(method):
    """The experiment as one pre-training job sees it (JSON): the model, the data rules of the corpus tasks
    and of every task whose evaluation texts are excluded, the experiment's tasks, and the `pretrain` block
    with only this row's stage-method settings -- not `finetune`, `measure` or the fan-out lists, so
    changing those does not re-run pre-training."""
    pre = dict(EXP["pretrain"])
    stage = methods.get(method).stage_method
    pre["method_settings"] = {stage: (pre.get("method_settings") or {}).get(stage, {})}
    needed = list(dict.fromkeys(list(pre.get("corpus_tasks") or TASKS) + TASKS))
    job = {"profile": EXP["profile"], "model": EXP["model"], "data": EXP["data"], "tasks": TASKS, "pretrain": pre,
           "task_data": {t: v for t, v in (EXP.get("task_data") or {}).items() if t in needed}}
    return json.dumps(job, sort_keys=True)


def prune_inputs(w):
    """The dense checkpoint (for methods that start from it), the pre-training stage's output (for rows
    that compress during pre-training), the base row's checkpoint (for rows that start from a pruned one)
    and a reference method's summary."""
    inputs = {}
    starts = methods.get(w.method).starts_from
    if starts == "dense":
        inputs["dense"] = model_dir(w.task, "dense", "1", w.seed, w.steps)
    elif starts == "pretrain":
        inputs["pretrained"] = pretrain_dir(w.method, w.budget, w.seed)
    elif starts == "pruned":
        inputs["start"] = model_dir(w.task, methods.get(w.method).base_method, w.budget, w.seed, w.steps)
    ref = reference_of(w.method)
    if ref is not None:
        inputs["reference"] = training_summary(w.task, ref, w.budget, w.seed, w.steps)
    return inputs


def dense_arg(w, input):
    return f"--dense-dir {input.dense}" if "dense" in input.keys() else ""


def pretrained_arg(w, input):
    return f"--pretrained-dir {input.pretrained}" if "pretrained" in input.keys() else ""


def start_arg(w, input):
    return f"--start-dir {input.start}" if "start" in input.keys() else ""


def reference_arg(w, input):
    return f"--reference-summary {input.reference}" if "reference" in input.keys() else ""


def measure_inputs(w):
    return {"summary": training_summary(w.task, w.method, w.budget, w.seed, w.steps),
            "predictions": training_summary(w.task, w.method, w.budget, w.seed, w.steps)[:-len(".json")]
            + ".predictions.json",
            "model": model_dir(w.task, w.method, w.budget, w.seed, w.steps),
            "dense": model_dir(w.task, "dense", "1", w.seed, w.steps)}


def final_outputs():
    return ([f"{RESULTS}/report.html", f"{RESULTS}/leaderboard.md", f"{RESULTS}/leaderboard.csv"]
            + analysis_outputs() + published_leaderboard())
