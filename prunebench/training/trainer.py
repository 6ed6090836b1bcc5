"""The one fine-tuning loop, shared by the dense baseline and every pruning method.

The fine-tuning budget (``FinetuneBudget``) is the same for every run: steps, batch size,
AdamW learning rate with linear warm-up and decay, weight decay, gradient clipping. Methods
plug in through the hooks of ``prunebench.method.base.PruningMethod``. Speed: dynamic padding and
length-grouped batches (examples of similar length batched together, batch order shuffled),
a fixed thread count. Embeddings can be frozen, as Sanh et al. 2020 do; the budget says.

Mixed precision: ``precision: bf16`` runs forward and backward under ``torch.autocast`` with
bfloat16; weights and optimiser state stay fp32, and the model is returned in fp32 on the CPU
for evaluation and measurement. ``precision: auto`` (``resolve_precision``) picks bf16 only
where the device runs it natively -- a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX --
and fp32 elsewhere: on an AVX2-only CPU bf16 autocast is emulated and ~12x slower.
The precision actually used, the CPU capability and the throughput are in ``TrainResult``.

A loss that becomes NaN or infinite stops the run with ``TrainingDiverged``.

Every task kind trains through the same loop on the model's own loss: cross-entropy for
classification, mean squared error for regression (STS-B: float32 ``label`` column, a one-output
head with ``problem_type="regression"``, see ``prunebench.checkpoints.pretrained``), span start/end
cross-entropy for extractive QA.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.records.provenance import NATIVE_BF16_CPU, cpu_capability
from prunebench.training.calibration import CalibrationSource

log = logging.getLogger("prunebench.training.trainer")

#: devices whose AdamW has a fused kernel in torch 2.13 (elsewhere the per-tensor loop)
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


BATCHINGS = ("length_grouped", "random")


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
    precision: str = field(
        default="fp32", metadata={"help": "'auto' (bf16 where native, else fp32), 'fp32' or 'bf16' (autocast)"}
    )
    device: str = field(default="cpu", metadata={"help": "'cpu', 'cuda' or 'auto' (cuda when available)"})
    batching: str = field(
        default="length_grouped",
        metadata={
            "help": "'length_grouped' (each epoch: shuffled, sorted by length within groups of 50 batches, batch "
            "order shuffled: little padding) or 'random' (shuffled batches, padded to their longest example)"
        },
    )

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("finetune.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        return torch.device(self.device)

    def __post_init__(self) -> None:
        if self.batching not in BATCHINGS:
            raise ValueError(f"finetune.batching must be one of {', '.join(BATCHINGS)}, got {self.batching!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"finetune.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"finetune.steps of one training job must be a positive integer, got {self.steps!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneBudget:
        return cls(**values)


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device, capability: str | None = None) -> str:
    """The precision a job runs in: ``auto`` -> ``bf16`` where bf16 is native, else ``fp32``.

    Native bf16: a CUDA device that supports it, or a CPU whose capability (``cpu_capability()``)
    includes AVX512-BF16 or AMX. ``fp32`` and ``bf16`` are taken as given.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"finetune.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    capability = cpu_capability() if capability is None else capability
    return "bf16" if any(marker in capability.upper().split("+") for marker in NATIVE_BF16_CPU) else "fp32"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    steps: int
    wall_time_s: float
    final_loss: float
    loss_curve: list[float]
    precision: str = "fp32"  # the precision actually used (``auto`` resolved)
    cpu_capability: str = ""
    examples: int = 0  # training examples seen (sum of batch sizes)
    tokens: int = 0  # real (attention-mask) tokens seen
    positions: int = 0  # token positions computed: real tokens plus padding

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.wall_time_s if self.wall_time_s > 0 else float("nan")

    @property
    def tokens_per_s(self) -> float:
        """Real (not padding) tokens per second: the throughput that batching cannot inflate."""
        return self.tokens / self.wall_time_s if self.wall_time_s > 0 else float("nan")

    @property
    def padded_fraction(self) -> float:
        """The share of computed token positions that were padding."""
        return 1.0 - self.tokens / self.positions if self.positions else float("nan")

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_time_s if self.wall_time_s > 0 else float("nan")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def random_batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless stream of index batches: every example once per epoch, in a fresh random order each epoch."""
    rng = random.Random(seed)
    order = list(range(n))
    while True:
        rng.shuffle(order)
        yield from (order[i : i + batch_size] for i in range(0, n, batch_size))


def training_batches(lengths: list[int], batch_size: int, seed: int, batching: str) -> Iterator[list[int]]:
    """The index batches of ``FinetuneBudget.batching``: ``length_grouped_batches`` or ``random_batches``."""
    if batching == "random":
        return random_batches(len(lengths), batch_size, seed)
    return length_grouped_batches(lengths, batch_size, seed)


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless stream of index batches, every example once per epoch: each epoch the examples are shuffled, cut
    into groups of 50 batches, sorted by length within a group (so a batch holds examples of similar length and
    is padded little) and cut into batches, and the order of all the epoch's batches is shuffled."""
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


class PrePadded:
    """Batches sliced from the training split's Arrow buffers: a batch is a few numpy index
    operations instead of ``dataset[indices]`` and ``tokenizer.pad`` on Python lists.

    Set-up is zero-copy (the flat token buffer and row offsets of each column); each batch
    gathers its rows into a right-padded array. Gives exactly the tensors ``_collate`` gives
    (pad id in ``input_ids``, zeros in ``attention_mask``/``token_type_ids``), so the same seed
    trains on the same batches.
    """

    def __init__(self, dataset, tokenizer):
        if tokenizer.padding_side != "right":
            raise ValueError(f"PrePadded pads on the right; the tokenizer pads on the {tokenizer.padding_side!r}")
        table = dataset.with_format("arrow")
        self.inputs = {}
        for c in (c for c in INPUT_COLUMNS if c in dataset.column_names):
            col = table[c]
            col = col.combine_chunks() if hasattr(col, "combine_chunks") else col
            offsets = col.offsets.to_numpy().astype(np.int64)
            self.inputs[c] = (col.values.to_numpy().astype(np.int64), offsets)
        _, offsets = self.inputs["input_ids"]
        self.lengths = np.diff(offsets)
        self.pad = {"input_ids": tokenizer.pad_token_id or 0}
        self.labels = {
            arg: np.asarray(table[col].to_numpy()) for col, arg in LABEL_COLUMNS.items() if col in dataset.column_names
        }

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices)
        lengths = self.lengths[idx]
        positions = np.arange(int(lengths.max()))
        inside = positions[None, :] < lengths[:, None]
        out = {}
        for c, (values, offsets) in self.inputs.items():
            gather = np.where(inside, offsets[idx][:, None] + positions[None, :], 0)
            out[c] = torch.from_numpy(np.where(inside, values[gather], self.pad.get(c, 0)))
        out.update({arg: torch.from_numpy(a[idx]) for arg, a in self.labels.items()})
        return out


def train(
    model: nn.Module,
    dataset,
    tokenizer,
    budget: FinetuneBudget,
    method: PruningMethod | None,
    seed: int,
    log_every: int = 50,
    on_step: Callable[[nn.Module, int], None] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on the tokenized ``dataset`` for ``budget.steps`` steps.

    ``on_step(model, step)``, when given, is called after the method's ``after_step`` of every step
    (the pre-training stage evaluates its held-out loss there; ``prunebench.training.pretrain``). It may switch
    the model to eval mode; the loop puts it back in training mode.
    """
    seed_everything(seed)
    device = budget.torch_device()
    capability = cpu_capability()
    precision = resolve_precision(budget.precision, device, capability)
    log.info(
        "precision %s (configured %s, device %s, CPU capability %s)", precision, budget.precision, device, capability
    )
    model.to(device)
    if budget.freeze_embeddings:
        for p in model.base_model.embeddings.parameters():
            p.requires_grad_(False)
    collate = _collator(dataset, tokenizer)  # one batch builder for training and calibration
    if method is not None:
        calibration = CalibrationSource(len(dataset), collate, seed, device)
        method.prepare(model, TrainingPlan(total_steps=budget.steps, seed=seed, calibration=calibration))
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": budget.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if method is not None:
        groups += method.parameter_groups(model)
    # the fused kernel: one pass over all tensors instead of a Python loop of small ops per tensor (on a 1-thread
    # CPU job, MiniLM's AdamW step 88 ms -> 14 ms; the same update up to float rounding)
    optimizer = torch.optim.AdamW(groups, lr=budget.learning_rate, fused=device.type in FUSED_ADAMW_DEVICES)
    warmup = int(budget.warmup_ratio * budget.steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / max(1, warmup) if s < warmup else max(0.0, (budget.steps - s) / max(1, budget.steps - warmup))
        ),
    )
    # Each group keeps its own peak lr (e.g. movement scores); LambdaLR scales them all alike.
    # the lengths as one list: indexing a Dataset column reads Arrow once per look-up
    batches = training_batches(
        dataset.with_format("arrow")["length"].to_pylist(), budget.batch_size, seed, budget.batching
    )
    trainable = [p for g in groups for p in g["params"]]
    model.train()
    curve, running, examples, tokens, positions, start = [], 0.0, 0, 0, 0, time.perf_counter()
    for step in range(1, budget.steps + 1):
        batch = {k: v.to(device) for k, v in collate(next(batches)).items()}
        examples += int(batch["input_ids"].shape[0])
        positions += int(batch["input_ids"].numel())
        tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel())
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        extra = method.penalty(model, step) if method is not None else None
        total = loss + extra if extra is not None else loss
        if not math.isfinite(float(total.detach())):
            raise TrainingDiverged(
                f"training loss became {float(total.detach())} at step {step} (task loss {float(loss.detach())}); "
                "lower the learning rate or check the data"
            )
        total.backward()
        torch.nn.utils.clip_grad_norm_(trainable, budget.max_grad_norm)
        optimizer.step()
        if method is not None:  # the lr of the step just taken, for after_step (e.g. RPP's proximal step)
            method.current_lr = optimizer.param_groups[0]["lr"]
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if method is not None:
            method.after_step(model, step)
        if on_step is not None:
            on_step(model, step)
            model.train()
        running += float(loss.detach())
        if step % log_every == 0 or step == budget.steps:
            n = step % log_every or log_every
            curve.append(running / n)
            log.info("step %d/%d loss %.4f", step, budget.steps, running / n)
            running = 0.0
    model.eval()
    model.to("cpu")
    return TrainResult(
        budget.steps,
        time.perf_counter() - start,
        curve[-1] if curve else float("nan"),
        curve,
        precision,
        capability,
        examples,
        tokens,
        positions,
    )


def _collator(dataset, tokenizer):
    """Batches by ``PrePadded`` (fast) where the tokenizer pads on the right, else by ``_collate``."""
    if getattr(tokenizer, "padding_side", "right") == "right" and "input_ids" in dataset.column_names:
        padded = PrePadded(dataset, tokenizer)
        return padded.batch
    return lambda indices: _collate(dataset, indices, tokenizer)


def tokenize(dataset, tokenizer, text_fields: tuple[str, ...], max_seq_len: int):
    """Tokenize a classification or regression split (no padding: batches are padded dynamically)."""

    def encode(rows):
        enc = tokenizer(*(rows[f] for f in text_fields), truncation=True, max_length=max_seq_len)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    return dataset.map(encode, batched=True, desc=None)


def budget_fields() -> dict[str, str]:
    """Help string of each budget field (for the docs and the config schema)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(FinetuneBudget)}
