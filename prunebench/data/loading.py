"""Loading a task's train and evaluation splits through ``datasets``.

Two sources, one result (canonical columns: the task's text fields plus ``label``; label
indices in the hub's order for classification, float32 targets for regression; ``id``,
``question``, ``context``, ``answers`` for extractive QA):

- ``source: hub``   -- ``datasets.load_dataset(hub_path, hub_config)``, e.g. ``nyu-mll/glue``/``sst2``
  (``hub_path`` may be overridden, e.g. by a local mirror of the hub repository);
- ``source: local`` -- files named in the config (per task in ``workflow/config.yaml``'s
  ``task_data`` table, see ``task_data`` below): GLUE-style TSV (header row, no
  quoting; a task's local headers may differ from the hub's column names, e.g. MRPC's
  ``#1 String``/``Quality`` and STS-B's ``score``: ``TaskSpec.local_columns``) for GLUE, SQuAD
  v1.1 JSON for extractive QA.

Besides ``train`` and ``eval`` the result holds ``eval_<name>`` for every further evaluation set
(``extra_eval`` files, or the spec's ``extra_eval_splits`` on the hub: MNLI mismatched).

Stand-in splits (local files where the task has no usable dev split here; what each table entry
says travels with every record as ``config.data``, and ``load_task_data(..., report=d)`` fills
``d`` with the same facts and the counts, for a record's ``details.data``):

- ``article_split: {every: k, eval_index: i}`` (SQuAD): the articles of the file, numbered in
  file order from 0, go to evaluation when ``number % k == i`` and to training otherwise, so no
  article (and no paragraph) is in both;
- ``drop_train_overlap: true`` (QQP, whose evaluation set is a held-out train sample): training
  pairs whose texts (whitespace-normalised, either order) equal an evaluation pair are dropped;
- ``detokenize_eval: ptb`` (MNLI dev samples): PTB tokenization of evaluation texts is undone
  (``ptb_detokenize``) so they look like the untokenized training text.

A missing, empty or malformed file raises ``DataError`` naming the file and the problem.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from prunebench.data.tasks import TaskSpec

datasets.logging.set_verbosity_error()
datasets.disable_progress_bars()
log = logging.getLogger("prunebench.data.loading")

# Fixed seed for sub-sampling training data, independent of the run seed, so every method
# and seed sees the same examples.
DATA_SEED = 0

SPLIT_KINDS = ("official", "sample", "stand-in", "unspecified")


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
    #: further evaluation files, {name: path} (local); loaded as ``eval_<name>``
    extra_eval: dict[str, str] | None = None
    #: SQuAD stand-in split of one file by article: {"every": k, "eval_index": i}
    article_split: dict[str, int] | None = None
    #: drop training pairs that also occur in the evaluation file
    drop_train_overlap: bool = False
    #: "ptb": undo PTB tokenization of the evaluation texts
    detokenize_eval: str | None = None
    #: what the splits are (official / sample / stand-in / unspecified) and why: metadata only
    source_note: str | None = None
    train_split_kind: str | None = None
    eval_split_kind: str | None = None
    split_note: str | None = None
    text_note: str | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise DataError(f"unknown data setting(s) {unknown}; known settings are {known}")
        return cls(**values)


def load_task_data(
    spec: TaskSpec, cfg: DataConfig, eval_only: bool = False, report: dict[str, Any] | None = None
) -> datasets.DatasetDict:
    """Train and eval splits of ``spec`` with canonical columns, limited as configured, plus
    ``eval_<name>`` for each further evaluation set (``eval_only``: the eval split alone, e.g.
    for the latency batches). ``report``, when given, is filled with what was loaded (files,
    split kinds and notes, example counts, pairs dropped as overlap): a record's ``details.data``."""
    info: dict[str, Any] = {}
    if cfg.source == "hub":
        splits = _load_from_hub(spec, cfg, ("eval",) if eval_only else ("train", "eval", "extra"), info)
    elif cfg.source == "local":
        splits = _load_local_splits(spec, cfg, eval_only, info)
    else:
        raise DataError(f"data.source must be 'hub' or 'local' (auto resolves to one of them), got {cfg.source!r}")
    if cfg.drop_train_overlap and "train" in splits:
        splits["train"], info["train_overlap_dropped"] = _drop_overlap(spec, splits["train"], splits["eval"])
        if info["train_overlap_dropped"]:
            log.warning(
                "dropped %d training example(s) of task %s that also occur in the evaluation set",
                info["train_overlap_dropped"],
                spec.name,
            )
    if cfg.train_limit and "train" in splits:
        train = splits["train"].shuffle(seed=DATA_SEED)
        splits["train"] = train.select(range(min(cfg.train_limit, len(train))))
    if cfg.eval_limit:
        for key in [k for k in splits if k.startswith("eval")]:
            splits[key] = splits[key].select(range(min(cfg.eval_limit, len(splits[key]))))
    if report is not None:
        report.update(_describe(spec, cfg, splits, info))
    return datasets.DatasetDict(splits)


def _describe(spec: TaskSpec, cfg: DataConfig, splits: dict, info: dict) -> dict[str, Any]:
    default_kind = "official" if cfg.source == "hub" else "unspecified"
    out = {
        "source": cfg.source,
        **({"source_note": cfg.source_note} if cfg.source_note else {}),
        **info,
        "train_split_kind": cfg.train_split_kind or default_kind,
        "eval_split_kind": cfg.eval_split_kind or default_kind,
        "split_note": cfg.split_note,
        "text_note": cfg.text_note or (spec.note or None),
        "examples": {k: len(v) for k, v in splits.items()},
    }
    if cfg.detokenize_eval:
        out["detokenize_eval"] = cfg.detokenize_eval
    return out


# ----- hub ----------------------------------------------------------------------------------------


def _load_from_hub(spec: TaskSpec, cfg: DataConfig, roles, info: dict) -> dict[str, datasets.Dataset]:
    path = cfg.hub_path or spec.hub_path
    try:
        raw = datasets.load_dataset(path, spec.hub_config)
    except Exception as exc:  # the hub (or a mirror) is unreachable or lacks the task
        raise DataError(
            f"could not load task {spec.name!r} from {path!r} (config {spec.hub_config!r}): {exc}. "
            "Without network access, set data.source: local and data.train / data.eval to local files."
        ) from exc
    wanted = [("train", spec.train_split)] if "train" in roles else []
    wanted.append(("eval", spec.eval_split))
    if "extra" in roles:
        wanted += [(f"eval_{name}", split) for name, split in spec.extra_eval_splits]
    out = {}
    for role, split in wanted:
        if split not in raw:
            raise DataError(f"{path!r} has no split {split!r} for task {spec.name!r}; it has {sorted(raw)}")
        out[role] = _canonical(spec, raw[split], f"{path} [{split}]")
        info.setdefault("files", {})[role] = f"{path} [{split}]"
    return out


# ----- local files --------------------------------------------------------------------------------


def _load_local_splits(spec: TaskSpec, cfg: DataConfig, eval_only: bool, info: dict) -> dict[str, datasets.Dataset]:
    files = {"eval": (cfg.eval, "data.eval")}
    if not eval_only:
        files["train"] = (cfg.train, "data.train")
        for name, path in (cfg.extra_eval or {}).items():
            files[f"eval_{name}"] = (path, f"data.extra_eval.{name}")
    if cfg.article_split and spec.kind != "extractive_qa":
        raise DataError(f"article_split splits SQuAD-style JSON by article; task {spec.name!r} is {spec.kind}")
    splits, articles = {}, {}
    for role, (path, key) in files.items():
        part = ("train" if role == "train" else "eval") if cfg.article_split else None
        ds = _load_local(spec, path, key, cfg.article_split if part else None, part, articles)
        if role.startswith("eval") and cfg.detokenize_eval:
            ds = _detokenize(spec, ds, cfg.detokenize_eval, path)
        splits[role] = ds
    info["files"] = {role: str(path) for role, (path, _) in files.items()}
    if articles:
        info["article_split"] = {**cfg.article_split, **articles}
    return splits


def _load_local(
    spec: TaskSpec,
    path: str | None,
    key: str,
    article_split: dict | None = None,
    part: str | None = None,
    articles: dict | None = None,
) -> datasets.Dataset:
    if not path:
        raise DataError(f"{key} is not set: with data.source: local, give the path of the {key.split('.')[1]} file")
    file = Path(path)
    if not file.is_file():
        raise DataError(f"data file not found: {file} ({key} in the config; absolute path {file.resolve()})")
    if file.stat().st_size == 0:
        raise DataError(f"data file is empty: {file} ({key})")
    if spec.kind == "extractive_qa":
        rows = _flatten_squad(file)
        if article_split:
            rows = _article_part(rows, article_split, part, file, articles)
        return _canonical(spec, datasets.Dataset.from_list(rows), str(file))
    with file.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), [])
    needed = [*spec.text_fields, "label"]
    columns = {c: c if c in header else spec.local_column(c) for c in needed}
    missing = [c for c in needed if columns[c] not in header]
    if missing:
        aliases = {c: columns[c] for c in missing if columns[c] != c}
        also = f" (or the GLUE file's header for them: {aliases})" if aliases else ""
        raise DataError(
            f"data file {file} lacks column(s) {missing}{also}; its header is {header}, task "
            f"{spec.name!r} needs {needed}"
        )
    try:
        # every column as text: labels are parsed and checked row by row in _canonical
        features = datasets.Features({c: datasets.Value("string") for c in header})
        ds = datasets.load_dataset(
            "csv",
            data_files={"split": str(file)},
            delimiter="\t",
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            features=features,
            on_bad_lines="error",
        )["split"]
    except Exception as exc:
        raise DataError(f"data file {file} is not a readable tab-separated file: {exc}") from exc
    renames = {header_name: c for c, header_name in columns.items() if header_name != c}
    if renames:
        ds = ds.select_columns(list(columns.values())).rename_columns(renames)
    return _canonical(spec, ds, str(file))


def _canonical(spec: TaskSpec, ds: datasets.Dataset, origin: str) -> datasets.Dataset:
    """Keep the task's columns and turn labels into indices (or float targets), checking every row."""
    if spec.kind == "extractive_qa":
        needed = ["id", "question", "context", "answers"]
        missing = [c for c in needed if c not in ds.column_names]
        if missing:
            raise DataError(f"{origin} lacks field(s) {missing} for task {spec.name!r}")
        return ds.select_columns(needed)
    missing = [c for c in (*spec.text_fields, "label") if c not in ds.column_names]
    if missing:
        raise DataError(f"{origin} lacks column(s) {missing} for task {spec.name!r}; it has {ds.column_names}")
    ds = ds.select_columns([*spec.text_fields, "label"])
    if len(ds) == 0:
        raise DataError(f"{origin} has no examples")
    names = {name: i for i, name in enumerate(spec.label_names)}
    labels = []
    columns = ds.to_dict()  # plain lists: a Dataset column iterates row by row through Arrow (seconds for SST-2)
    for row, (value, *texts) in enumerate(zip(columns["label"], *(columns[f] for f in spec.text_fields)), start=1):
        if any(t is None or t == "" for t in texts):
            raise DataError(f"{origin}, example {row}: empty text field")
        where = f"{origin}, example {row}"
        labels.append(_target(value, spec, where) if spec.kind == "regression" else _label_index(value, names, where))
    ds = ds.remove_columns("label")
    if spec.kind == "regression":
        return ds.add_column("label", labels, feature=datasets.Value("float32"))
    ds = ds.add_column("label", labels)
    return ds.cast_column("label", datasets.ClassLabel(names=list(spec.label_names)))


def _label_index(value: Any, names: dict[str, int], where: str) -> int:
    if isinstance(value, str):
        if value in names:
            return names[value]
        try:
            value = int(value.strip())
        except ValueError:
            raise DataError(f"{where}: label {value!r} is neither an index nor one of {list(names)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < len(names):
        raise DataError(f"{where}: label {value!r} is not a valid class index (0..{len(names) - 1})")
    return int(value)


def _target(value: Any, spec: TaskSpec, where: str) -> float:
    """A regression target as the hub stores it (float32), checked to be a number in the task's range.

    Rounding to float32 makes the local GLUE file's decimal scores (``3.800``) equal the hub's
    float32 values exactly, so both sources give identical references.
    """
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: score {value!r} is not a number") from None
    low, high = spec.label_range or (-np.inf, np.inf)
    if not np.isfinite(number) or not low <= number <= high:
        raise DataError(f"{where}: score {value!r} is outside the task's range [{low:g}, {high:g}]")
    return float(np.float32(number))


# ----- SQuAD --------------------------------------------------------------------------------------


def _flatten_squad(file: Path) -> list[dict[str, Any]]:
    """SQuAD v1.1 JSON ({"data": [{"title", "paragraphs": [...]}]}) as hub-style rows."""
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"data file {file} is not SQuAD v1.1 JSON (not valid JSON: {exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"data file {file} is not SQuAD v1.1 JSON: it lacks the top-level 'data' list of articles")
    rows = []
    try:
        for number, article in enumerate(doc["data"]):
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    rows.append(
                        {
                            "id": qa["id"],
                            "title": article.get("title", ""),
                            "article": number,
                            "context": paragraph["context"],
                            "question": qa["question"],
                            "answers": {
                                "text": [a["text"] for a in qa["answers"]],
                                "answer_start": [a["answer_start"] for a in qa["answers"]],
                            },
                        }
                    )
    except (KeyError, TypeError) as exc:
        raise DataError(f"data file {file} is not SQuAD v1.1 JSON: {exc!r}") from exc
    if not rows:
        raise DataError(f"data file {file} has no questions")
    return rows


def _article_part(rows: list[dict], rule: dict, part: str, file: Path, articles: dict | None) -> list[dict]:
    """The training or evaluation part of an article split (see the module docstring)."""
    every, index = int(rule["every"]), int(rule["eval_index"])
    if not 0 <= index < every:
        raise DataError(f"article_split of {file}: eval_index {index} must lie in 0..{every - 1}")
    kept = [r for r in rows if (r["article"] % every == index) == (part == "eval")]
    if not kept:
        raise DataError(f"article_split {rule} leaves no {part} question in {file}")
    if articles is not None:
        articles[f"{part}_articles"] = len({r["article"] for r in kept})
        articles[f"{part}_questions"] = len(kept)
    return kept


# ----- overlap and text ---------------------------------------------------------------------------


def _pair_key(texts) -> tuple[str, ...]:
    return tuple(" ".join(str(t).split()) for t in texts)


def _drop_overlap(spec: TaskSpec, train: datasets.Dataset, eval_: datasets.Dataset) -> tuple[datasets.Dataset, int]:
    """``train`` without the examples whose texts (whitespace-normalised; pairs in either order) occur
    in ``eval_``, and how many were dropped."""
    fields = spec.text_fields
    seen = set()
    for texts in zip(*(eval_[f] for f in fields)):
        key = _pair_key(texts)
        seen.update({key, key[::-1]})
    keep = [i for i, texts in enumerate(zip(*(train[f] for f in fields))) if _pair_key(texts) not in seen]
    dropped = len(train) - len(keep)
    return (train.select(keep) if dropped else train), dropped


_PTB_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
_PTB_RULES = [
    (re.compile(r"-[LR][RSC]B-"), lambda m: _PTB_BRACKETS[m.group(0)]),
    (re.compile(r"``\s*"), '"'),  # opening double quote
    (re.compile(r"\s*''"), '"'),  # closing double quote
    (re.compile(r" (n't|N'T)\b"), r"\1"),  # do n't -> don't, ca n't -> can't
    (re.compile(r" ('(?:s|re|ve|ll|d|m|S|RE|VE|LL|D|M))\b"), r"\1"),  # I 'll -> I'll, King 's -> King's
    (re.compile(r"`\s*"), "'"),  # opening single quote: ` word -> 'word
    (re.compile(r" ([.,;:!?%)\]}]|\.\.\.)"), r"\1"),  # no space before closing punctuation
    (re.compile(r"([(\[{$#]) "), r"\1"),  # no space after opening brackets, $ and #
    (re.compile(r"(?<=\S) '(?=\s|$|[.,;:!?)])"), "'"),  # closing single quote / the '90s ' -> the '90s'
    (re.compile(r"^' "), "'"),  # a sentence opening with a single quote
]


def ptb_detokenize(text: str) -> str:
    """Undo Penn Treebank tokenization (``-LRB-``, ```` `` ''``, `` ` '``, `` n't``, `` 's``, spaces
    before punctuation): ``"You ca n't -LRB- really -RRB- ."`` -> ``"You can't (really)."``.
    Approximate (a rule-based inverse: PTB tokenization loses which spaces were there); the BERT
    tokenizer then sees nearly the tokens of the original text."""
    for pattern, repl in _PTB_RULES:
        text = pattern.sub(repl, text)
    return text


def _detokenize(spec: TaskSpec, ds: datasets.Dataset, how: str, path) -> datasets.Dataset:
    if how != "ptb":
        raise DataError(f"detokenize_eval {how!r} for {path} is not known (known: 'ptb')")
    if spec.kind == "extractive_qa":
        raise DataError(f"detokenize_eval applies to GLUE text fields, not to SQuAD ({path})")
    return ds.map(lambda rows: {f: [ptb_detokenize(t) for t in rows[f]] for f in spec.text_fields}, batched=True)


def task_data(exp: dict, task: str) -> dict:
    """The ``data`` block one task's jobs load (``prunebench.data.loading.DataConfig``).

    - ``data.source: local`` and no ``data.train``/``data.eval`` in the experiment: the task's entry
      of the ``task_data`` table supplies the files, the loading rules and the split description;
      the experiment's ``data`` keys (source, limits) are laid over it;
    - ``data.train``/``data.eval`` set (``{task}`` is replaced by the task name): those files, for
      every task, and the split kinds ``unspecified`` unless ``data`` names them;
    - ``data.source: hub``: the hub's official splits (kinds ``official``);
    - ``data.source: auto``: the task's ``task_data`` files when every one of them is present, else
      ``hub`` (with a warning naming the missing file, and ``source_note`` saying so in every record);
      files named in ``data.train``/``data.eval`` are read as with ``local`` (a missing one is an
      error). The block returned names the source actually used, so a record never says ``auto``.

    An ``eval_limit`` turns an ``official`` evaluation split into a ``stand-in``, a ``train_limit`` an
    ``official`` training split into a ``sample`` (the note says so).
    Applying it to its own result changes nothing, so a job's resolved block resolves to itself.
    """
    data = {k: v for k, v in exp["data"].items() if v is not None}
    if data.get("source") == "auto" and (data.get("train") or data.get("eval")):
        data["source"] = "local"  # files named in the config are read: a missing one is an error, not a fallback
    if data.get("source") == "auto":
        local = task_data({**exp, "data": {**data, "source": "local"}}, task)
        missing = _missing_files(local)
        if not missing:
            return local
        data = {k: v for k, v in data.items() if k not in LOCAL_ONLY_KEYS}
        data["source"] = "hub"
        data["source_note"] = f"data.source auto: {missing[0]} not found, so the hub's official splits are read"
        _warn_hub_fallback(task, missing[0])
    source = data.get("source", "local")
    if source == "local" and not data.get("train") and not data.get("eval"):
        entry = (exp.get("task_data") or {}).get(task)
        if entry:
            data = {**copy.deepcopy(entry), **data}
    data = {
        k: v.replace("{task}", task) if isinstance(v, str) and k in ("train", "eval") else v for k, v in data.items()
    }
    if isinstance(data.get("extra_eval"), dict):
        data["extra_eval"] = {name: path.replace("{task}", task) for name, path in data["extra_eval"].items()}
    default = "official" if source == "hub" else "unspecified"
    data.setdefault("train_split_kind", default)
    data.setdefault("eval_split_kind", default)
    limits = (
        (
            "train_limit",
            "train_split_kind",
            "sample",
            "training on a fixed random sample of {} examples of that training file (train_limit)",
        ),
        (
            "eval_limit",
            "eval_split_kind",
            "stand-in",
            "evaluation on the first {} examples of that evaluation file only (eval_limit)",
        ),
    )
    for limit, kind, limited_kind, text in limits:
        if data.get(limit) and f"({limit})" not in (data.get("split_note") or ""):
            if data[kind] == "official":
                data[kind] = limited_kind
            note = text.format(data[limit])
            data["split_note"] = f"{data['split_note']}; {note}" if data.get("split_note") else note
    return data


#: data settings that only apply to local files (dropped when ``auto`` falls back to the hub)
LOCAL_ONLY_KEYS = ("train", "eval", "extra_eval")
_warned: set[tuple[str, str]] = set()


def _missing_files(data: dict) -> list[str]:
    """The files a local ``data`` block names that do not exist (all of them when it names none)."""
    files = [data.get("train"), data.get("eval"), *(data.get("extra_eval") or {}).values()]
    if not any(files):
        return ["(no local files configured)"]
    return [str(f) for f in files if not f or not Path(f).is_file()]


def _warn_hub_fallback(task: str, missing: str) -> None:
    if (task, missing) not in _warned:  # once per task and process: task_data is resolved often
        _warned.add((task, missing))
        log.warning("task %s: %s not found; data.source auto reads the task from the hub", task, missing)
