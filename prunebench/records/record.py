"""The result record: one JSON per (task, method, budget, seed), one schema for all methods.

The schema is ``prunebench/records/schemas/result_record.v1.schema.json`` (versioned). Records are
validated before they are written and when they are read, and written atomically (temporary
file in the same folder, fsync, rename), so an interrupted job never leaves half a record.

Beside each training summary and each record lies its *predictions file*
(``seed0.json`` -> ``seed0.predictions.json``, compact JSON, format ``prunebench-predictions/1``):
the model's per-example predictions on the evaluation set, in dataset order, from which
``prunebench.report.stats`` computes intervals and paired tests. Three kinds:

- ``labels`` (classification): predicted and gold label indices; metric ``accuracy``, ``f1``
  (binary, of label 1) or ``mcc`` (binary Matthews correlation);
- ``values`` (regression, STS-B): predicted and gold floats; metric ``pearson`` or ``spearman``;
- ``scores`` (extractive QA): each question's exact match and F1 (references null), so the
  metric is the mean of the per-question scores.

A metric is a function of the per-example *components* (``Predictions.components``): for accuracy
and QA the mean of one per-example number, but for F1, Matthews and the correlations a function of
all (prediction, reference) pairs at once, which is what a bootstrap must recompute on every
resample (``aggregate_metric``; Matthews, Pearson and Spearman are 0 where undefined: a constant
prediction or reference set). A predictions file must match its record (task, method, budget,
seed, number of examples, the SHA-256 of the references, the metric value), else
``PredictionsError`` names the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from prunebench.data.metric_kernels import matthews, pearson, spearman

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


def write_json_atomic(data: Any, path: str | Path, compact: bool = False) -> Path:
    """Write ``data`` as JSON atomically; ``compact`` drops indentation and spaces (large lists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            if compact:
                json.dump(data, fh, separators=(",", ":"))
            else:
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
    """Write the training job's half of a record (see ``prunebench.runner.jobs``) atomically."""
    return write_json_atomic(_check_summary(summary, f"for {path}"), path)


def read_training_summary(path: str | Path) -> dict:
    """Read a training summary; a missing, truncated or incomplete file raises ``RecordError``."""
    path = Path(path)
    return _check_summary(_read_json(path, "training summary"), str(path))


# ---------------------------------------------------------------------------------------------
# Predictions files
# ---------------------------------------------------------------------------------------------

PREDICTIONS_FORMAT = "prunebench-predictions/1"
PREDICTIONS_KEYS = (
    "format",
    "task",
    "method",
    "budget",
    "seed",
    "metric",
    "n",
    "references_sha256",
    "kind",
    "predictions",
    "references",
)
#: metrics a predictions file can recompute, per kind
PREDICTION_METRICS = {
    "labels": ("accuracy", "f1", "mcc"),
    "scores": ("exact_match", "f1"),
    "values": ("pearson", "spearman"),
}
#: kinds whose files store the references (``scores`` store only each question's scores)
KINDS_WITH_REFERENCES = ("labels", "values")
#: a recomputed metric equals the recorded one up to float summation order
METRIC_TOLERANCE = 1e-9


class PredictionsError(RecordError):
    """A predictions file that is missing, malformed, or does not match its record; names the file."""


def predictions_path(path: str | Path) -> Path:
    """The predictions file beside a record or training summary: ``seed0.json`` -> ``seed0.predictions.json``."""
    path = Path(path)
    if path.suffix != ".json" or path.name.endswith(".predictions.json"):
        raise ValueError(f"{path} is not a record or training summary path (expected e.g. seed0.json)")
    return path.with_name(f"{path.stem}.predictions.json")


def references_sha256(references: list) -> str:
    """SHA-256 of the references list as compact JSON: identifies the evaluation examples and their order."""
    return hashlib.sha256(json.dumps(references, separators=(",", ":")).encode()).hexdigest()


def predictions_payload(
    summary: dict, metric_name: str, kind: str, predictions: list | dict[str, list], references: list
) -> dict:
    """The predictions file's content for the run named by ``summary`` (task, method, budget, seed).

    ``references`` are the gold labels (``labels``), gold values (``values``) or each question's
    gold answers (``scores``); labels and values are stored, answers only hashed, so a file can be
    matched with its examples either way.
    """
    if kind not in PREDICTION_METRICS:
        raise ValueError(f"unknown predictions kind {kind!r}; known: {', '.join(PREDICTION_METRICS)}")
    return {
        "format": PREDICTIONS_FORMAT,
        "task": summary["task"],
        "method": summary["method"],
        "budget": float(summary["budget"]),
        "seed": int(summary["seed"]),
        "metric": metric_name,
        "n": len(references),
        "references_sha256": references_sha256(references),
        "kind": kind,
        "predictions": predictions,
        "references": references if kind in KINDS_WITH_REFERENCES else None,
    }


def predictions_summary(payload: dict, path: str | Path) -> dict:
    """What a record says about its predictions file (``details.predictions``): checked on reading."""
    return {
        "file": Path(path).name,
        "n": payload["n"],
        "metric": payload["metric"],
        "references_sha256": payload["references_sha256"],
    }


@dataclass
class Predictions:
    """One model's per-example predictions on the evaluation set (numpy arrays, dataset order).

    ``predictions`` is an int array of labels (``kind == "labels"``), a float array of values
    (``kind == "values"``) or a dict of per-example score arrays (``kind == "scores"``);
    ``references`` the gold labels or values, or None.
    """

    task: str
    method: str
    budget: float
    seed: int
    metric: str
    n: int
    kind: str
    predictions: Any
    references: np.ndarray | None
    references_sha256: str = ""
    path: Path | None = field(default=None, compare=False)

    def components(self) -> np.ndarray:
        """Per-example quantities, shape (k, n), from which ``aggregate`` computes the metric.

        accuracy: [correct]; binary F1 of label 1: [true positive, false positive, false negative];
        binary Matthews: [tp, fp, fn, true negative]; Pearson/Spearman: [prediction, reference];
        QA scores: [score of the primary metric].
        """
        if self.kind == "scores":
            return np.asarray(self.predictions[self.metric], dtype=float)[None, :]
        pred, ref = self.predictions, self.references
        if self.kind == "values":
            return np.stack([np.asarray(pred, dtype=float), np.asarray(ref, dtype=float)])
        if self.metric == "accuracy":
            return (pred == ref).astype(float)[None, :]
        counts = [(pred == 1) & (ref == 1), (pred == 1) & (ref != 1), (pred != 1) & (ref == 1)]
        if self.metric == "mcc":
            counts.append((pred != 1) & (ref != 1))
        return np.stack(counts).astype(float)

    def aggregate(self, components: np.ndarray, axis: int = -1) -> np.ndarray:
        """The metric of ``components`` (first axis: the k quantities) along ``axis`` of each."""
        return aggregate_metric(self.kind, self.metric, components, axis)

    def value(self) -> float:
        """The primary metric (equals the record's, up to float summation order)."""
        return float(self.aggregate(self.components()))


def aggregate_metric(kind: str, metric_name: str, components: np.ndarray, axis: int = -1) -> np.ndarray:
    """Metric from per-example components (see ``Predictions.components``); vectorised over other axes.

    Accuracy and QA scores are means; F1 and Matthews are functions of the summed confusion counts,
    Pearson and Spearman of all (prediction, reference) pairs: a bootstrap resample recomputes the
    metric from its own pairs, not a mean of per-example correctness.
    """
    if kind == "labels" and metric_name == "f1":
        tp, fp, fn = (c.sum(axis=axis) for c in components)
        denom = 2 * tp + fp + fn
        return np.where(tp > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    if kind == "labels" and metric_name == "mcc":
        return matthews(*(c.sum(axis=axis) for c in components))
    if kind == "values" and metric_name == "pearson":
        return pearson(components[0], components[1], axis=axis)
    if kind == "values" and metric_name == "spearman":
        return spearman(components[0], components[1], axis=axis)
    return components[0].mean(axis=axis)


def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise PredictionsError(f"predictions file {path}: {message}")


def _check_payload(data: Any, path: Path) -> None:
    """The file's own consistency: format, keys, kind, metric, lengths, references hash."""
    _require(isinstance(data, dict), path, "not a JSON object")
    missing = [k for k in PREDICTIONS_KEYS if k not in data]
    _require(not missing, path, f"lacks {missing}")
    _require(data["format"] == PREDICTIONS_FORMAT, path, f"format {data['format']!r} is not {PREDICTIONS_FORMAT!r}")
    kind, name, n = data["kind"], data["metric"], data["n"]
    _require(kind in PREDICTION_METRICS, path, f"unknown kind {kind!r}")
    _require(name in PREDICTION_METRICS[kind], path, f"metric {name!r} cannot be computed from {kind!r}")
    _require(isinstance(n, int) and n > 0, path, f"n must be a positive integer, not {n!r}")
    if kind in KINDS_WITH_REFERENCES:
        for key in ("predictions", "references"):
            _require(
                isinstance(data[key], list) and len(data[key]) == n,
                path,
                f"{key} has {len(data[key]) if isinstance(data[key], list) else 'no'} entries, n is {n}",
            )
        if kind == "values":
            for key in ("predictions", "references"):
                bad = next(
                    (
                        v
                        for v in data[key]
                        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    ),
                    None,
                )
                _require(bad is None, path, f"{key} must be finite numbers (regression), found {bad!r}")
        _require(
            references_sha256(data["references"]) == data["references_sha256"],
            path,
            "references do not match references_sha256",
        )
    else:
        preds = data["predictions"]
        _require(isinstance(preds, dict) and name in preds, path, f"scores lack the metric {name!r}")
        bad = {k: len(v) for k, v in preds.items() if len(v) != n}
        _require(not bad, path, f"score lists {bad} do not have n = {n} entries")


def _check_against_record(p: Predictions, record: dict, path: Path) -> None:
    """A predictions file belongs to its record: same run, same examples, same metric value."""
    for key in ("task", "method", "seed"):
        _require(
            record[key] == getattr(p, key),
            path,
            f"{key} {getattr(p, key)!r} does not match the record's {record[key]!r}",
        )
    _require(
        float(record["budget"]) == p.budget, path, f"budget {p.budget} does not match the record's {record['budget']}"
    )
    details = record.get("details", {})
    expected = details.get("predictions") or {}
    n_record = expected.get("n", details.get("training", {}).get("eval_examples"))
    _require(n_record is None or n_record == p.n, path, f"n = {p.n} examples, the record has {n_record}")
    sha = expected.get("references_sha256")
    _require(
        sha is None or sha == p.references_sha256,
        path,
        "references do not match the record's (references_sha256 differs): other evaluation examples",
    )
    recorded = record["metrics"].get(p.metric, {}).get("value")
    _require(recorded is not None, path, f"the record has no metric {p.metric!r}")
    value = p.value()
    _require(
        math.isclose(value, recorded, rel_tol=0, abs_tol=METRIC_TOLERANCE),
        path,
        f"{p.metric} recomputed from the predictions is {value!r}, the record says {recorded!r}",
    )


def read_predictions(path: str | Path, record: dict | None = None) -> Predictions:
    """Read a predictions file (and check it against its ``record`` or training summary, when given)."""
    path = Path(path)
    try:
        data = _read_json(path, "predictions file")
    except PredictionsError:
        raise
    except RecordError as exc:
        raise PredictionsError(str(exc)) from None
    _check_payload(data, path)
    if data["kind"] == "labels":
        preds, refs = np.asarray(data["predictions"], dtype=np.int64), np.asarray(data["references"], dtype=np.int64)
    elif data["kind"] == "values":
        preds, refs = np.asarray(data["predictions"], dtype=float), np.asarray(data["references"], dtype=float)
    else:
        preds, refs = {k: np.asarray(v, dtype=float) for k, v in data["predictions"].items()}, None
    p = Predictions(
        task=data["task"],
        method=data["method"],
        budget=float(data["budget"]),
        seed=int(data["seed"]),
        metric=data["metric"],
        n=data["n"],
        kind=data["kind"],
        predictions=preds,
        references=refs,
        references_sha256=data["references_sha256"],
        path=path,
    )
    if record is not None:
        _check_against_record(p, record, path)
    return p


def write_predictions(payload: dict, path: str | Path) -> Path:
    """Write a predictions file (compact JSON) atomically, after checking its own consistency."""
    path = Path(path)
    _check_payload(payload, path)
    return write_json_atomic(payload, path, compact=True)


def copy_predictions(source: str | Path, record: dict, dest: str | Path) -> Predictions:
    """Check the predictions file ``source`` against ``record`` (or its training summary) and copy it to ``dest``."""
    source = Path(source)
    predictions = read_predictions(source, record)
    write_json_atomic(_read_json(source, "predictions file"), dest, compact=True)
    return predictions
