"""Check every task's local data files before any job of a run starts.

A training job loads its task's files and stops on a malformed one (``prunebench.data.loading`` raises
``DataError`` naming the file and the problem: missing, empty, wrong columns, an unknown label
string, a non-numeric score, SQuAD JSON without articles). In a multi-task run that would come
too late: other tasks' jobs would already be training. The workflow's ``onstart`` handler calls
``check_experiment_data`` first, which loads every local task of the experiment exactly as a
training job does (same ``task_data`` resolution, same loader) and raises one ``DataError``
listing every bad file, so nothing is trained on a run whose data are broken.

Loading all files takes seconds (SST-2's 67k training sentences are checked row by row), so the
result is cached per task in ``<results_dir>/.data_checked.json``, keyed by the task's resolved
data block and each file's size and modification time: a later run re-checks only changed files.
``data.source: hub`` tasks are not checked here (the hub is read by the jobs themselves).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prunebench.data.loading import DataConfig, DataError, load_task_data, task_data
from prunebench.data.tasks import get_task

CACHE_NAME = ".data_checked.json"


def _files(data: dict[str, Any]) -> list[str]:
    paths = [data.get("train"), data.get("eval"), *(data.get("extra_eval") or {}).values()]
    return sorted({p for p in paths if p})


def fingerprint(data: dict[str, Any]) -> dict[str, Any]:
    """What a check depends on: the resolved data block and each file's size and mtime (ns)."""
    stats = {}
    for path in _files(data):
        try:
            st = Path(path).stat()
            stats[path] = [st.st_size, st.st_mtime_ns]
        except OSError:
            stats[path] = None
    return {"data": data, "files": stats}


def check_task(task: str, data: dict[str, Any]) -> dict[str, int]:
    """Load one task's local splits as a training job would; the example count per split.
    Raises ``DataError`` naming the file and the problem."""
    splits = load_task_data(get_task(task), DataConfig.from_dict(data))
    return {name: len(ds) for name, ds in splits.items()}


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        cache = json.loads(path.read_text())
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def check_experiment_data(exp: dict[str, Any], cache_dir: str | Path | None = None) -> dict[str, dict[str, int]]:
    """Check every local task of a resolved experiment (``prunebench.config.resolve``); the example
    counts per task and split of the tasks checked now (cached ones are skipped). Raises one
    ``DataError`` that lists every task whose files do not load, naming file and problem."""
    cache_path = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
    cache = _read_cache(cache_path) if cache_path else {}
    checked, problems = {}, []
    for task in exp["tasks"]:
        data = task_data(exp, task)
        if data.get("source", "local") != "local":
            continue
        key = fingerprint(data)
        if cache.get(task, {}).get("key") == key:
            continue
        try:
            counts = check_task(task, data)
        except DataError as exc:
            problems.append(f"task {task!r}: {exc}")
            cache.pop(task, None)
            continue
        checked[task] = counts
        cache[task] = {"key": key, "examples": counts}
    if cache_path is not None and checked:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))
    if problems:
        raise DataError("the data of this run do not load; nothing was trained:\n  " + "\n  ".join(problems))
    return checked
