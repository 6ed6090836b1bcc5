"""Experiment configuration: profiles, command-line overrides and validation.

``workflow/config.yaml`` holds named experiment *profiles* (``smoke``, ``default``, ``paper``).
``resolve`` takes Snakemake's ``config`` (the file plus ``--config`` overrides), picks the
profile named by ``profile``, merges top-level overrides into it, validates the result
against ``workflow/schemas/config.schema.yaml`` and checks what a schema cannot: that
methods are registered and local data files exist. Every error names the key and value.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from prunebench.budget import check_budget
from prunebench.tasks import get_task

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
            return parsed if isinstance(parsed, (int, float, bool)) or parsed is None and value.strip() in ("null", "~") else value
        return value

    for key in list(raw):
        if key != "profiles":
            raw[key] = fix(raw[key])
    return raw


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
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
    missing = [k for k in REQUIRED if k not in experiment]
    if missing:
        raise ConfigError(f"invalid profile {name!r}: missing key(s) {missing}")
    experiment["profile"] = name
    experiment.setdefault("head_ablation_modes", ["mask"])
    experiment["tasks"] = [experiment.pop("task")] if isinstance(experiment["task"], str) else experiment.pop("task")
    check_semantics(experiment, check_files=check_files)
    return experiment


def for_task(exp: dict, task: str) -> dict:
    """The experiment as seen by one task's jobs: ``task_overrides[task]`` merged in."""
    overrides = exp.get("task_overrides", {}).get(task, {})
    return deep_merge({k: v for k, v in exp.items() if k != "task_overrides"}, overrides)


def task_data(exp: dict, task: str) -> dict:
    """The ``data`` block for one task: ``{task}`` in file paths replaced by its name."""
    return {k: v.replace("{task}", task) if isinstance(v, str) and k in ("train", "eval") else v
            for k, v in exp["data"].items()}


def check_semantics(exp: dict, check_files: bool = True) -> None:
    import methods

    for task in exp["tasks"]:
        try:
            get_task(task)
        except ValueError as exc:
            raise ConfigError(f"invalid config: key 'task': {exc}") from None
    for m in exp["methods"]:
        if m not in methods.available():
            raise ConfigError(f"invalid config: key 'methods': unknown method {m!r}; registered methods are: {', '.join(methods.available())}")
    for b in exp["budgets"]:
        try:
            check_budget(b)
        except ValueError as exc:
            raise ConfigError(f"invalid config: key 'budgets': {exc}") from None
    finetune_steps(exp)
    for m, settings in exp.get("method_settings", {}).items():
        if m not in methods.available():
            raise ConfigError(f"invalid config: key 'method_settings.{m}': no method named {m!r}")
        try:
            methods.get(m).make_settings(settings)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid config: key 'method_settings.{m}': {exc}") from None
    for task in exp["tasks"]:
        data = task_data(exp, task)
        if not check_files or data.get("source", "local") != "local":
            continue
        for key in ("train", "eval"):
            path = data.get(key)
            if not path:
                raise ConfigError(f"invalid config: key 'data.{key}': required when data.source is 'local'")
            if not Path(path).is_file():
                raise ConfigError(f"invalid config: key 'data.{key}': data file not found for task {task!r}: {path} "
                                  f"(resolved: {Path(path).resolve()})")
    check_model(exp["model"])


def check_model(model: str) -> None:
    """A model is the embedded one, the tiny one, an existing local folder or a hub id.

    A hub id is checked on the hub when it can be reached: an id the hub does not know stops
    the run; when the hub is unreachable (offline machines) the id is accepted as written.
    """
    import os

    from prunebench.modeling import EMBEDDED, TINY_RANDOM

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
        raise ConfigError(f"invalid config: key 'model': {model!r} is neither a local folder nor a valid hub id ({exc})") from None
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    try:
        HfApi().model_info(model, timeout=10)
    except RepositoryNotFoundError:
        raise ConfigError(f"invalid config: key 'model': unknown model id {model!r} (not found on the hub, not a local folder)") from None
    except Exception:  # hub unreachable: cannot verify here
        return


def finetune_steps(exp: dict) -> list[int]:
    """The fine-tuning lengths an experiment sweeps: ``finetune.steps`` as a list of positive ints.

    ``finetune.steps`` is one int (every profile but ``convergence``) or a list swept like the
    budgets, each length its own dense model and method runs (issue 11, the fine-tuning-length axis).
    """
    steps = exp["finetune"]["steps"]
    values = steps if isinstance(steps, list) else [steps]
    for s in values:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ConfigError(f"invalid config: key 'finetune.steps': every entry must be a positive integer, got {s!r} in {steps!r}")
    return values


def steps_suffix(steps: int, swept: bool) -> str:
    """The part of a file name that names a fine-tuning length: '' unless lengths are swept, then '_steps800'."""
    return f"_steps{int(steps)}" if swept else ""


def budget_label(budget: float) -> str:
    """The canonical string of a budget in paths and wildcards (0.5 -> '0.5')."""
    return f"{float(budget):g}"
