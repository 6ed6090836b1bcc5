"""Experiment configuration: profiles, command-line overrides and validation.

``workflow/config.yaml`` holds named experiment *profiles* (``smoke``, ``default``, ``paper``)
and the ``task_data`` table: each task's own local files, and what its splits are (official
dev split or a stand-in) with a note. ``resolve`` takes Snakemake's ``config`` (the file plus
``--config`` overrides), picks the profile named by ``profile``, merges top-level overrides
(the ``task_data`` table among them) into it, validates the result against
``workflow/schemas/config.schema.yaml`` and checks what a schema cannot: that methods are
registered, that per-method budget lists (``method_budgets``) name methods that run and take a
budget, and that every task's local data files exist. Every error names the key and value.
``for_task`` gives the experiment one task's jobs see, with that task's ``data`` block
resolved (``task_data``): the files it reads and ``train_split_kind``/``eval_split_kind``/
``split_note``, which every training summary and record carry in ``config.data``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from prunebench.data.loading import task_data
from prunebench.data.tasks import get_task
from prunebench.method import registry
from prunebench.structure.budget import check_budget

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
CONFIG_PATH = REPO_ROOT / "workflow" / "config.yaml"
REQUIRED = ("results_dir", "task", "model", "data", "methods", "budgets", "seeds", "threads", "finetune", "measure")


class ConfigError(ValueError):
    """An invalid configuration; the message names the key and the value."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def load_config_file(path: str | Path = CONFIG_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def normalize_cli_values(raw: dict) -> dict:
    """Turn numbers that ``--config`` left as strings back into numbers, in place.

    Snakemake parses ``--config budgets=[0.5,0.3]`` into ``['0.5', '0.3']``; each string
    that YAML reads as a number, boolean or null is converted.
    """

    def fix(value):
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, str):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            return (
                parsed
                if isinstance(parsed, (int, float, bool)) or parsed is None and value.strip() in ("null", "~")
                else value
            )
        return value

    for key in list(raw):
        if key != "profiles":
            raw[key] = fix(raw[key])
    return raw


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (
            deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else copy.deepcopy(value)
        )
    return out


def _validate(instance: Any, schema: dict, root: dict, what: str) -> None:
    validator = jsonschema.Draft202012Validator({**schema, "$defs": root["$defs"]})
    err = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if err is not None:
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"invalid {what}: key {key!r}: {err.message}")


def resolve(raw: dict, check_files: bool = True) -> dict:
    """The experiment to run, validated: profile values merged with top-level overrides."""
    schema = load_schema()
    _validate(raw, schema, schema, "config")
    name = raw["profile"]
    profiles = raw["profiles"]
    if name not in profiles:
        raise ConfigError(f"invalid config: key 'profile': unknown profile {name!r}; profiles are {sorted(profiles)}")
    overrides = {k: v for k, v in raw.items() if k not in ("profile", "profiles")}
    experiment = deep_merge(profiles[name], overrides)
    _validate(experiment, schema["$defs"]["experiment"], schema, f"profile {name!r}")
    if experiment.get("methods") == "all":  # every registered method, so a new method needs no profile edit
        experiment["methods"] = registry.available()
    if "methods" in overrides and experiment.get("method_budgets"):
        # the command line chose the methods: the profile's budget lists of the methods it left out do not apply
        keep = set(experiment["methods"]) | set(overrides.get("method_budgets") or {})
        experiment["method_budgets"] = {m: b for m, b in experiment["method_budgets"].items() if m in keep}
    missing = [k for k in REQUIRED if k not in experiment]
    if missing:
        raise ConfigError(f"invalid profile {name!r}: missing key(s) {missing}")
    experiment["profile"] = name
    experiment.setdefault("head_ablation_modes", ["mask"])
    experiment["tasks"] = [experiment.pop("task")] if isinstance(experiment["task"], str) else experiment.pop("task")
    check_semantics(experiment, check_files=check_files)
    return experiment


def for_task(exp: dict, task: str) -> dict:
    """The experiment as seen by one task's jobs: ``task_overrides[task]`` merged in, its ``data``
    block resolved for this task (``task_data``) and the other tasks' table entries left out."""
    overrides = exp.get("task_overrides", {}).get(task, {})
    out = deep_merge({k: v for k, v in exp.items() if k not in ("task_overrides", "task_data")}, overrides)
    out["data"] = task_data(exp, task)
    return out


#: the split kinds a data block names (``official``: the complete official split, so a number on it
#: compares with published dev numbers; ``sample``: a sample of the official train split; ``stand-in``:
#: anything else, never to be compared with a published dev number unawares)
SPLIT_KINDS = ("official", "sample", "stand-in", "unspecified")


def _data_key(exp: dict, task: str, key: str) -> str:
    """Where a task's data setting comes from, for error messages: ``data.train`` or ``task_data.qqp.train``."""
    explicit = exp["data"].get("train") or exp["data"].get("eval")
    return f"data.{key}" if explicit or task not in (exp.get("task_data") or {}) else f"task_data.{task}.{key}"


def check_semantics(exp: dict, check_files: bool = True) -> None:

    for task in exp["tasks"]:
        try:
            get_task(task)
        except ValueError as exc:
            raise ConfigError(f"invalid config: key 'task': {exc}") from None
    for m in exp["methods"]:
        if m not in registry.available():
            raise ConfigError(
                f"invalid config: key 'methods': unknown method {m!r}; "
                f"registered methods are: {', '.join(registry.available())}"
            )
    for m in exp["methods"]:
        cls = registry.get(m)
        base = cls.base_method if cls.starts_from == "pruned" else None
        if base is not None and base not in exp["methods"]:
            raise ConfigError(
                f"invalid config: key 'methods': {m!r} starts from the checkpoint of {base!r}, which is not in the "
                f"methods list; add {base!r} to 'methods'"
            )
    for b in exp["budgets"]:
        try:
            check_budget(b)
        except ValueError as exc:
            raise ConfigError(f"invalid config: key 'budgets': {exc}") from None
    check_method_budgets(exp)
    finetune_steps(exp)
    check_method_settings(exp.get("method_settings", {}), "method_settings")
    check_pretrain(exp)
    for task in exp["tasks"]:
        data = task_data(exp, task)
        if not check_files or data.get("source", "local") != "local":
            continue
        if not data.get("train") and not data.get("eval"):
            raise ConfigError(
                f"invalid config: key 'task_data': no data files for task {task!r}: add a "
                f"'task_data.{task}' entry (train, eval) or set data.train / data.eval"
            )
        files = [(key, data.get(key)) for key in ("train", "eval")]
        files += [(f"extra_eval.{name}", path) for name, path in (data.get("extra_eval") or {}).items()]
        for key, path in files:
            where = _data_key(exp, task, key)
            if not path:
                raise ConfigError(f"invalid config: key {where!r}: required when data.source is 'local'")
            if not Path(path).is_file():
                raise ConfigError(
                    f"invalid config: key {where!r}: data file not found for task {task!r}: {path} "
                    f"(resolved: {Path(path).resolve()})"
                )
    check_model(exp["model"])


def check_method_settings(mapping: dict, key: str) -> None:
    """Every entry of a ``{method: settings}`` block (``key`` names it in errors) names a registered
    method and builds its settings dataclass; otherwise a ``ConfigError`` naming the key."""

    for m, values in mapping.items():
        if m not in registry.available():
            raise ConfigError(f"invalid config: key '{key}.{m}': no method named {m!r}")
        try:
            registry.get(m).make_settings(values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid config: key '{key}.{m}': {exc}") from None


def check_pretrain(exp: dict) -> None:
    """The ``pretrain`` block (``prunebench.training.pretrain.PretrainSettings``): required when a row that compresses
    during pre-training runs (``starts_from = "pretrain"``); its stage methods' settings must build."""

    rows = [m for m in exp["methods"] if registry.get(m).starts_from == "pretrain"]
    if rows and not exp.get("pretrain"):
        raise ConfigError(
            f"invalid config: key 'pretrain': methods {rows} compress during pre-training and need a "
            "'pretrain' block (steps, batch_size, ...; see workflow/config.yaml)"
        )
    if not exp.get("pretrain"):
        return
    from prunebench.training.pretrain_settings import PretrainSettings

    try:
        settings = PretrainSettings.from_dict(exp["pretrain"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config: key 'pretrain': {exc}") from None
    check_method_settings(settings.method_settings or {}, "pretrain.method_settings")


def check_method_budgets(exp: dict) -> None:
    """``method_budgets: {method: [budgets]}``: a method's own budget list, used instead of ``budgets``.

    Structured methods cannot reach every budget (removing every head of BERT leaves 2/3 of the
    encoder; layers come in steps of 1/12), so a profile gives them budgets their structure can
    reach. Every entry must name a registered method of ``methods`` that takes a budget, with valid
    budgets (``resolve`` drops the profile's entries for methods a command-line ``methods`` left out).
    """

    for m, budgets in (exp.get("method_budgets") or {}).items():
        key = f"method_budgets.{m}"
        if m not in registry.available():
            raise ConfigError(
                f"invalid config: key {key!r}: unknown method {m!r}; registered methods are: "
                f"{', '.join(registry.available())}"
            )
        if m not in exp["methods"]:
            raise ConfigError(
                f"invalid config: key {key!r}: method {m!r} is not in 'methods' {exp['methods']!r}; "
                "add it there or remove its budgets"
            )
        if registry.get(m).budget_free:
            raise ConfigError(
                f"invalid config: key {key!r}: method {m!r} is budget-free (it runs once per task and "
                f"seed at budget 1); remove its budgets {budgets!r}"
            )
        if not isinstance(budgets, list) or not budgets:
            raise ConfigError(f"invalid config: key {key!r}: a non-empty list of budgets is required, got {budgets!r}")
        for b in budgets:
            try:
                check_budget(b)
            except ValueError as exc:
                raise ConfigError(f"invalid config: key {key!r}: {exc}") from None
        labels = [budget_label(b) for b in budgets]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"invalid config: key {key!r}: repeated budget in {budgets!r}")


def budgets_of(exp: dict, method: str) -> list[float]:
    """The budgets a method runs at: ``[1.0]`` for a budget-free method, its ``method_budgets`` entry
    when it has one, else ``budgets``."""

    cls = registry.get(method)
    if cls.budget_free:
        return [1.0]
    own = (exp.get("method_budgets") or {}).get(method)
    if not own and cls.starts_from == "pruned":  # a row that starts from another row's checkpoint: its budgets
        return budgets_of(exp, cls.base_method)
    return list(own or exp["budgets"])


def check_model(model: str) -> None:
    """A model is the embedded one, the tiny one, an existing local folder or a hub id.

    A hub id is checked on the hub when it can be reached: an id the hub does not know stops
    the run; when the hub is unreachable (offline machines) the id is accepted as written.
    """
    import os

    from prunebench.checkpoints.pretrained import EMBEDDED, TINY_RANDOM

    if model in (EMBEDDED, TINY_RANDOM) or Path(model).expanduser().is_dir():
        return
    if model.startswith((".", "/", "~")):
        raise ConfigError(f"invalid config: key 'model': local model folder not found: {model}")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError as exc:
        raise ConfigError(
            f"invalid config: key 'model': {model!r} is neither a local folder nor a valid hub id ({exc})"
        ) from None
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    try:
        HfApi().model_info(model, timeout=10)
    except RepositoryNotFoundError:
        raise ConfigError(
            f"invalid config: key 'model': unknown model id {model!r} (not found on the hub, not a local folder)"
        ) from None
    except Exception:  # hub unreachable: cannot verify here
        return


def finetune_steps(exp: dict) -> list[int]:
    """The fine-tuning lengths an experiment sweeps: ``finetune.steps`` as a list of positive ints.

    ``finetune.steps`` is one int (every profile but ``convergence``) or a list swept like the
    budgets, each length its own dense model and method runs (the fine-tuning-length axis).
    """
    steps = exp["finetune"]["steps"]
    values = steps if isinstance(steps, list) else [steps]
    for s in values:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ConfigError(
                f"invalid config: key 'finetune.steps': every entry must be a positive integer, got {s!r} in {steps!r}"
            )
    return values


def steps_suffix(steps: int, swept: bool) -> str:
    """The part of a file name that names a fine-tuning length: '' unless lengths are swept, then '_steps800'."""
    return f"_steps{int(steps)}" if swept else ""


def budget_label(budget: float) -> str:
    """The canonical string of a budget in paths and wildcards (0.5 -> '0.5')."""
    return f"{float(budget):g}"
