"""Loading a task's train and evaluation splits through ``datasets``.

Two sources, one result (canonical columns: the task's text fields plus ``label``, label
indices in the hub's order):

- ``source: hub``   -- ``datasets.load_dataset(hub_path, hub_config)``, e.g. ``nyu-mll/glue``/``sst2``
  (``hub_path`` may be overridden, e.g. by a local mirror of the hub repository);
- ``source: local`` -- files named in the config: GLUE-style TSV (header row, no quoting) for
  classification, SQuAD v1.1 JSON for extractive QA.

A missing, empty or malformed file raises ``DataError`` naming the file and the problem.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from prunebench.tasks import TaskSpec

datasets.logging.set_verbosity_error()
datasets.disable_progress_bars()

# Fixed seed for sub-sampling training data, independent of the run seed, so every method
# and seed sees the same examples.
DATA_SEED = 0


class DataError(ValueError):
    """A data file or source that cannot be used; the message names it."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "local"
    train: str | None = None
    eval: str | None = None
    hub_path: str | None = None
    train_limit: int | None = None
    eval_limit: int | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DataConfig":
        return cls(**values)


def load_task_data(spec: TaskSpec, cfg: DataConfig, eval_only: bool = False) -> datasets.DatasetDict:
    """Train and eval splits of ``spec`` with canonical columns, limited as configured
    (``eval_only``: the eval split alone, e.g. for the latency batches)."""
    if cfg.source == "hub":
        splits = _load_from_hub(spec, cfg, ("eval",) if eval_only else ("train", "eval"))
    elif cfg.source == "local":
        splits = {"eval": _load_local(spec, cfg.eval, "data.eval")}
        if not eval_only:
            splits["train"] = _load_local(spec, cfg.train, "data.train")
    else:
        raise DataError(f"data.source must be 'hub' or 'local', got {cfg.source!r}")
    if cfg.train_limit and "train" in splits:
        train = splits["train"].shuffle(seed=DATA_SEED)
        splits["train"] = train.select(range(min(cfg.train_limit, len(train))))
    if cfg.eval_limit:
        splits["eval"] = splits["eval"].select(range(min(cfg.eval_limit, len(splits["eval"]))))
    return datasets.DatasetDict(splits)


def _load_from_hub(spec: TaskSpec, cfg: DataConfig, roles=("train", "eval")) -> dict[str, datasets.Dataset]:
    path = cfg.hub_path or spec.hub_path
    try:
        raw = datasets.load_dataset(path, spec.hub_config)
    except Exception as exc:  # the hub (or a mirror) is unreachable or lacks the task
        raise DataError(
            f"could not load task {spec.name!r} from {path!r} (config {spec.hub_config!r}): {exc}. "
            "Without network access, set data.source: local and data.train / data.eval to local files."
        ) from exc
    out = {}
    for role, split in (("train", spec.train_split), ("eval", spec.eval_split)):
        if role not in roles:
            continue
        if split not in raw:
            raise DataError(f"{path!r} has no split {split!r} for task {spec.name!r}; it has {sorted(raw)}")
        out[role] = _canonical(spec, raw[split], f"{path} [{split}]")
    return out


def _load_local(spec: TaskSpec, path: str | None, key: str) -> datasets.Dataset:
    if not path:
        raise DataError(f"{key} is not set: with data.source: local, give the path of the {key.split('.')[1]} file")
    file = Path(path)
    if not file.is_file():
        raise DataError(f"data file not found: {file} ({key} in the config; absolute path {file.resolve()})")
    if file.stat().st_size == 0:
        raise DataError(f"data file is empty: {file} ({key})")
    if spec.kind == "extractive_qa":
        return _canonical(spec, datasets.Dataset.from_list(_flatten_squad(file)), str(file))
    with file.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), [])
    needed = [*spec.text_fields, "label"]
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(f"data file {file} lacks column(s) {missing}; its header is {header}, task {spec.name!r} needs {needed}")
    try:
        # every column as text: labels are parsed and checked row by row in _canonical
        features = datasets.Features({c: datasets.Value("string") for c in header})
        ds = datasets.load_dataset("csv", data_files={"split": str(file)}, delimiter="\t", quoting=csv.QUOTE_NONE,
                                   keep_default_na=False, features=features, on_bad_lines="error")["split"]
    except Exception as exc:
        raise DataError(f"data file {file} is not a readable tab-separated file: {exc}") from exc
    return _canonical(spec, ds, str(file))


def _canonical(spec: TaskSpec, ds: datasets.Dataset, origin: str) -> datasets.Dataset:
    """Keep the task's columns and turn labels into indices, checking every row."""
    if spec.kind == "extractive_qa":
        needed = ["id", "question", "context", "answers"]
        missing = [c for c in needed if c not in ds.column_names]
        if missing:
            raise DataError(f"{origin} lacks field(s) {missing} for task {spec.name!r}")
        return ds.select_columns(needed)
    ds = ds.select_columns([*spec.text_fields, "label"])
    if len(ds) == 0:
        raise DataError(f"{origin} has no examples")
    names = {name: i for i, name in enumerate(spec.label_names)}
    labels = []
    for row, (value, *texts) in enumerate(zip(ds["label"], *(ds[f] for f in spec.text_fields)), start=1):
        if any(t is None or t == "" for t in texts):
            raise DataError(f"{origin}, example {row}: empty text field")
        labels.append(_label_index(value, names, f"{origin}, example {row}"))
    ds = ds.remove_columns("label").add_column("label", labels)
    return ds.cast_column("label", datasets.ClassLabel(names=list(spec.label_names)))


def _label_index(value: Any, names: dict[str, int], where: str) -> int:
    if isinstance(value, str):
        if value in names:
            return names[value]
        try:
            value = int(value.strip())
        except ValueError:
            raise DataError(f"{where}: label {value!r} is neither an index nor one of {list(names)}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
        raise DataError(f"{where}: label {value!r} is not a valid class index (0..{len(names) - 1})")
    return value


def _flatten_squad(file: Path) -> list[dict[str, Any]]:
    """SQuAD v1.1 JSON ({"data": [{"title", "paragraphs": [...]}]}) as hub-style rows."""
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
        rows = []
        for article in doc["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    rows.append({
                        "id": qa["id"], "title": article.get("title", ""), "context": paragraph["context"],
                        "question": qa["question"],
                        "answers": {"text": [a["text"] for a in qa["answers"]],
                                    "answer_start": [a["answer_start"] for a in qa["answers"]]},
                    })
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"data file {file} is not SQuAD v1.1 JSON: {exc!r}") from exc
    if not rows:
        raise DataError(f"data file {file} has no questions")
    return rows
