"""Task metric of a model on the evaluation split, through ``prunebench.data.metrics`` (``evaluate``).

Classification: accuracy (and F1 where the task reports it) of the arg-max class.
Extractive QA (SQuAD): exact match and F1 of the best span per example (``prunebench.data.squad``).

``evaluate_task`` also returns the per-example predictions in dataset order (evaluation runs
in length-sorted batches; the order is restored): predicted and gold labels, or each
question's exact match and F1. They are saved beside the record (``prunebench.records.record``) for
the intervals and paired tests of ``prunebench.report.stats``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import torch

from prunebench.data.squad import best_answers, question_scores
from prunebench.data.tasks import TaskSpec
from prunebench.training.trainer import INPUT_COLUMNS


def _column(dataset, name: str, lengths: bool = False) -> list:
    """A column as a plain list (or the length of each row's list), read from Arrow at once: iterating a
    ``datasets`` column goes through Arrow row by row, seconds for a few thousand examples."""
    column = dataset.with_format("arrow")[name]
    return (pc.list_value_length(column) if lengths else column).to_pylist()


def _length_order(dataset) -> list[int]:
    """Example indices sorted by length (longest first): batches then need little padding."""
    lengths = _column(dataset, "input_ids", lengths=True)
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def _batches(
    dataset, tokenizer, batch_size: int, order: list[int]
) -> Iterator[tuple[dict[str, torch.Tensor], list[int]]]:
    keys = [k for k in INPUT_COLUMNS if k in dataset.column_names]
    for start in range(0, len(order), batch_size):
        rows = dataset[order[start : start + batch_size]]
        n = len(rows["input_ids"])
        yield (
            tokenizer.pad([{k: rows[k][j] for k in keys} for j in range(n)], return_tensors="pt"),
            [len(ids) for ids in rows["input_ids"]],
        )


def _restore_order(values: list, order: list[int]) -> list:
    out = [None] * len(order)
    for value, i in zip(values, order):
        out[i] = value
    return out


@torch.inference_mode()
def predict(model: torch.nn.Module, dataset, tokenizer, batch_size: int) -> list[int]:
    """Predicted class index of every example of the tokenized ``dataset``, in dataset order
    (computed in length-sorted batches, so padding costs little; results do not depend on it)."""
    model.eval()
    order = _length_order(dataset)
    preds = [
        p
        for batch, _ in _batches(dataset, tokenizer, batch_size, order)
        for p in model(**batch).logits.argmax(-1).tolist()
    ]
    return _restore_order(preds, order)


@torch.inference_mode()
def predict_values(model: torch.nn.Module, dataset, tokenizer, batch_size: int) -> list[float]:
    """The regression output (one logit) of every example of the tokenized ``dataset``, in dataset order."""
    model.eval()
    order = _length_order(dataset)
    values = [
        v
        for batch, _ in _batches(dataset, tokenizer, batch_size, order)
        for v in model(**batch).logits[:, 0].float().tolist()
    ]
    return _restore_order(values, order)


@torch.inference_mode()
def span_logits(
    model: torch.nn.Module, features, tokenizer, batch_size: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every QA feature (window), unpadded, in feature order."""
    model.eval()
    order = _length_order(features)
    starts, ends = [], []
    for batch, lengths in _batches(features, tokenizer, batch_size, order):
        out = model(**batch)
        for j, n in enumerate(lengths):
            starts.append(out.start_logits[j, :n].float().numpy())
            ends.append(out.end_logits[j, :n].float().numpy())
    return _restore_order(starts, order), _restore_order(ends, order)


@dataclass
class Evaluation:
    """A model's task metrics and its per-example predictions (dataset order).

    ``kind`` "labels": ``predictions`` are predicted label indices, ``references`` gold ones;
    ``kind`` "scores": ``predictions`` maps each metric to per-question scores, ``references``
    are each question's gold answers.
    """

    metrics: dict[str, float]
    kind: str
    predictions: list | dict[str, list[float]]
    references: list


def evaluate_task(model, dataset, tokenizer, spec: TaskSpec, batch_size: int, examples=None) -> Evaluation:
    """The task's metric values (fractions) and the per-example predictions behind them.

    For extractive QA ``dataset`` holds the evaluation windows and ``examples`` the raw
    examples (question, context, gold answers).
    """
    from prunebench.data.metrics import load_metric  # imports `evaluate` (~2 s): only jobs that evaluate pay it

    metric = load_metric(spec.metric)
    if spec.kind == "classification":
        preds, refs = predict(model, dataset, tokenizer, batch_size), [int(r) for r in _column(dataset, "label")]
        return Evaluation(metric.compute(predictions=preds, references=refs), "labels", preds, refs)
    if spec.kind == "regression":
        preds = predict_values(model, dataset, tokenizer, batch_size)
        refs = [float(r) for r in _column(dataset, "label")]
        return Evaluation(metric.compute(predictions=preds, references=refs), "values", preds, refs)
    if examples is None:
        raise ValueError("extractive QA evaluation needs the raw examples")
    starts, ends = span_logits(model, dataset, tokenizer, batch_size)
    answers = best_answers(examples, dataset, starts, ends)
    texts = [answers[e["id"]] for e in examples]
    golds = [list(e["answers"]["text"]) for e in examples]
    return Evaluation(
        metric.compute(predictions=texts, references=golds), "scores", question_scores(texts, golds), golds
    )


def task_metrics(model, dataset, tokenizer, spec: TaskSpec, batch_size: int, examples=None) -> dict[str, float]:
    """The task's metric values (fractions), e.g. ``{"accuracy": 0.91}`` (see ``evaluate_task``)."""
    return evaluate_task(model, dataset, tokenizer, spec, batch_size, examples).metrics
