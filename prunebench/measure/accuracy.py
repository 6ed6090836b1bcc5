"""Task metric of a model on the evaluation split, through ``prunebench.metrics`` (``evaluate``)."""

from __future__ import annotations

import torch

from prunebench.metrics import load_metric
from prunebench.tasks import TaskSpec


@torch.inference_mode()
def predict(model: torch.nn.Module, dataset, tokenizer, batch_size: int) -> list[int]:
    """Predicted class index of every example of the tokenized ``dataset``, in order."""
    model.eval()
    preds: list[int] = []
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in dataset.column_names]
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        batch = tokenizer.pad([{k: rows[k][j] for k in keys} for j in range(len(rows["input_ids"]))], return_tensors="pt")
        preds += model(**batch).logits.argmax(-1).tolist()
    return preds


def task_metrics(model, dataset, tokenizer, spec: TaskSpec, batch_size: int) -> dict[str, float]:
    """The task's metric values (fractions), e.g. ``{"accuracy": 0.91}``."""
    if spec.kind != "classification":
        raise NotImplementedError(f"evaluation of {spec.kind} tasks ({spec.name}) is not implemented yet")
    metric = load_metric(spec.metric)
    return metric.compute(predictions=predict(model, dataset, tokenizer, batch_size), references=list(dataset["label"]))
