"""The one fine-tuning loop, shared by the dense baseline and every pruning method.

The fine-tuning budget (``FinetuneBudget``) is the same for every run: steps, batch size,
AdamW learning rate with linear warm-up and decay, weight decay, gradient clipping. Methods
plug in through the hooks of ``methods.base.PruningMethod``. Speed: dynamic padding and
length-grouped batches (examples of similar length batched together, batch order shuffled),
a fixed thread count. Embeddings can be frozen, as Sanh et al. 2020 do; the budget says.

Mixed precision: ``precision: bf16`` runs forward and backward under ``torch.autocast`` with
bfloat16 (CPUs with AVX512-BF16/AMX and GPUs); weights and optimiser state stay fp32, and
the model is returned in fp32 on the CPU for evaluation and measurement.

A loss that becomes NaN or infinite stops the run with ``TrainingDiverged``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from methods.base import PruningMethod, TrainingPlan

log = logging.getLogger("prunebench.trainer")


@dataclass(frozen=True)
class FinetuneBudget:
    steps: int = field(metadata={"help": "optimiser steps"})
    batch_size: int = field(default=32, metadata={"help": "training examples per step"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak AdamW learning rate"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps with linear lr warm-up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases/LayerNorm)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    max_seq_len: int = field(default=128, metadata={"help": "truncation length in tokens"})
    doc_stride: int = field(default=128, metadata={"help": "overlap of context windows (extractive QA)"})
    freeze_embeddings: bool = field(default=True, metadata={"help": "keep embeddings fixed (Sanh et al. 2020)"})
    eval_batch_size: int = field(default=64, metadata={"help": "examples per evaluation batch"})
    precision: str = field(default="fp32", metadata={"help": "'fp32' or 'bf16' (autocast mixed precision)"})
    device: str = field(default="cpu", metadata={"help": "'cpu', 'cuda' or 'auto' (cuda when available)"})

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("finetune.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        return torch.device(self.device)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FinetuneBudget":
        return cls(**values)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    steps: int
    wall_time_s: float
    final_loss: float
    loss_curve: list[float]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless stream of index batches: shuffled, grouped by length in mega-batches of 50."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    mega = 50 * batch_size
    while True:
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: lengths[i])
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        yield from batches


#: Dataset column -> model argument, for the labels of each task kind.
LABEL_COLUMNS = {"label": "labels", "start_positions": "start_positions", "end_positions": "end_positions"}
INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def _collate(dataset, indices, tokenizer) -> dict[str, torch.Tensor]:
    rows = dataset[indices]
    features = [{k: rows[k][j] for k in INPUT_COLUMNS if k in rows} for j in range(len(indices))]
    batch = tokenizer.pad(features, return_tensors="pt")
    for column, argument in LABEL_COLUMNS.items():
        if column in rows:
            batch[argument] = torch.tensor(rows[column])
    return batch


def train(model: nn.Module, dataset, tokenizer, budget: FinetuneBudget, method: PruningMethod | None,
          seed: int, log_every: int = 50) -> TrainResult:
    """Fine-tune ``model`` on the tokenized ``dataset`` for ``budget.steps`` steps."""
    seed_everything(seed)
    device = budget.torch_device()
    model.to(device)
    if budget.freeze_embeddings:
        for p in model.base_model.embeddings.parameters():
            p.requires_grad_(False)
    if method is not None:
        method.prepare(model, TrainingPlan(total_steps=budget.steps, seed=seed))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": budget.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if method is not None:
        groups += method.parameter_groups(model)
    optimizer = torch.optim.AdamW(groups, lr=budget.learning_rate)
    warmup = int(budget.warmup_ratio * budget.steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (budget.steps - s) / max(1, budget.steps - warmup)))
    # Each group keeps its own peak lr (e.g. movement scores); LambdaLR scales them all alike.
    batches = length_grouped_batches(dataset["length"], budget.batch_size, seed)
    trainable = [p for g in groups for p in g["params"]]
    model.train()
    curve, running, start = [], 0.0, time.perf_counter()
    for step in range(1, budget.steps + 1):
        batch = {k: v.to(device) for k, v in _collate(dataset, next(batches), tokenizer).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=budget.precision == "bf16"):
            loss = model(**batch).loss
        extra = method.penalty(model, step) if method is not None else None
        total = loss + extra if extra is not None else loss
        if not math.isfinite(float(total.detach())):
            raise TrainingDiverged(f"training loss became {float(total.detach())} at step {step} (task loss {float(loss.detach())}); "
                                   "lower the learning rate or check the data")
        total.backward()
        torch.nn.utils.clip_grad_norm_(trainable, budget.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if method is not None:
            method.after_step(model, step)
        running += float(loss.detach())
        if step % log_every == 0 or step == budget.steps:
            n = step % log_every or log_every
            curve.append(running / n)
            log.info("step %d/%d loss %.4f", step, budget.steps, running / n)
            running = 0.0
    model.eval()
    model.to("cpu")
    return TrainResult(budget.steps, time.perf_counter() - start, curve[-1] if curve else float("nan"), curve)


def tokenize(dataset, tokenizer, text_fields: tuple[str, ...], max_seq_len: int):
    """Tokenize a classification split (no padding: batches are padded dynamically)."""
    def encode(rows):
        enc = tokenizer(*(rows[f] for f in text_fields), truncation=True, max_length=max_seq_len)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    return dataset.map(encode, batched=True, desc=None)


def budget_fields() -> dict[str, str]:
    """Help string of each budget field (for the docs and the config schema)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(FinetuneBudget)}
