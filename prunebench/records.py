"""The result record: one JSON per (task, method, budget, seed), one schema for all methods.

The schema is ``prunebench/schemas/result_record.v1.schema.json`` (versioned). Records are
validated before they are written and when they are read, and written atomically (temporary
file in the same folder, fsync, rename), so an interrupted job never leaves half a record.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("schemas") / f"result_record.v{SCHEMA_VERSION}.schema.json"


class RecordError(ValueError):
    """A record that is missing, unreadable or does not match the schema; names the file."""


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def metric(value: float | int | None, unit: str) -> dict[str, Any]:
    """A metric entry: its value with its unit."""
    return {"value": None if value is None else float(value), "unit": unit}


def validate(record: dict, origin: str = "record") -> dict:
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise RecordError(f"{origin} does not match result record schema v{SCHEMA_VERSION} at {where}: {err.message}")
    return record


def write_json_atomic(data: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_record(record: dict, path: str | Path) -> Path:
    """Validate ``record`` and write it atomically to ``path``."""
    return write_json_atomic(validate(record, str(path)), path)


def _read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; a missing or truncated file raises ``RecordError`` naming ``what`` and the path."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"{what} {path} is corrupt or truncated (not valid JSON: {exc})") from None


def read_record(path: str | Path) -> dict:
    """Read and validate one record; a truncated or invalid file raises ``RecordError``."""
    path = Path(path)
    return validate(_read_json(path, "result record"), str(path))


SUMMARY_KEYS = ("task", "method", "budget", "seed", "metrics", "details", "config", "wall_time_s")


def _check_summary(summary: Any, where: str) -> dict:
    missing = [k for k in SUMMARY_KEYS if k not in summary] if isinstance(summary, dict) else list(SUMMARY_KEYS)
    if missing:
        raise RecordError(f"training summary {where} lacks {missing}")
    return summary


def write_training_summary(summary: dict, path: str | Path) -> Path:
    """Write the training job's half of a record (see ``prunebench.experiment``) atomically."""
    return write_json_atomic(_check_summary(summary, f"for {path}"), path)


def read_training_summary(path: str | Path) -> dict:
    """Read a training summary; a missing, truncated or incomplete file raises ``RecordError``."""
    path = Path(path)
    return _check_summary(_read_json(path, "training summary"), str(path))
