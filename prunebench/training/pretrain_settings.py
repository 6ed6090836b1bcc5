"""The ``pretrain:`` block of a profile, validated (``PretrainSettings``).

Its own module, light to import: the configuration check (``prunebench.config``, run by every Snakemake
start) validates the block without importing the pre-training job (``prunebench.training.pretrain``) and the
model code it needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prunebench.data.tasks import get_task

if TYPE_CHECKING:
    from prunebench.training.trainer import FinetuneBudget


@dataclass(frozen=True)
class PretrainSettings:
    """The ``pretrain:`` block of a profile (the schema has the same keys)."""

    steps: int = field(default=300, metadata={"help": "optimiser steps of the MLM stage"})
    batch_size: int = field(default=32, metadata={"help": "sequences per step"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak AdamW learning rate"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps with linear lr warm-up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases/LayerNorm)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    max_seq_len: int = field(default=128, metadata={"help": "truncation length in tokens"})
    mask_prob: float = field(default=0.15, metadata={"help": "share of each sequence's tokens predicted (BERT: 0.15)"})
    freeze_embeddings: bool = field(
        default=False,
        metadata={"help": "keep the embeddings (and so the tied decoder) fixed; the pre-training papers train them"},
    )
    corpus_tasks: list[str] | None = field(
        default=None, metadata={"help": "tasks whose training files form the corpus; null = the experiment's tasks"}
    )
    heldout_sentences: int = field(default=256, metadata={"help": "corpus texts held out for the MLM loss"})
    max_sentences: int | None = field(default=None, metadata={"help": "cap on training texts (null = all)"})
    eval_points: int = field(default=4, metadata={"help": "held-out evaluations during training (plus start and end)"})
    eval_batch_size: int = field(default=64, metadata={"help": "sequences per held-out batch"})
    precision: str = field(default="auto", metadata={"help": "'auto', 'fp32' or 'bf16' (as finetune.precision)"})
    device: str = field(default="cpu", metadata={"help": "'cpu', 'cuda' or 'auto'"})
    method_settings: dict[str, dict] | None = field(
        default=None,
        metadata={"help": "settings of the stage methods in pre-training, {method: {...}} (as method_settings)"},
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"pretrain.mask_prob must be in (0, 1), got {self.mask_prob}")
        for name in ("steps", "batch_size", "heldout_sentences", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"pretrain.{name} must be a positive integer, got {value!r}")
        if self.eval_points < 0:
            raise ValueError(f"pretrain.eval_points must be >= 0, got {self.eval_points}")
        for task in self.corpus_tasks or []:
            get_task(task)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown pretrain setting(s) {unknown}; known settings are {sorted(known)}")
        return cls(**values)

    def trainer_budget(self) -> FinetuneBudget:
        """The shared trainer's budget for this stage (embeddings trained unless ``freeze_embeddings``)."""
        from prunebench.training.trainer import FinetuneBudget

        return FinetuneBudget(
            steps=self.steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            warmup_ratio=self.warmup_ratio,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            max_seq_len=self.max_seq_len,
            freeze_embeddings=self.freeze_embeddings,
            eval_batch_size=self.eval_batch_size,
            precision=self.precision,
            device=self.device,
        )

    def eval_steps(self) -> list[int]:
        """Steps after which the held-out loss is evaluated (evenly spaced, the last step included)."""
        n = min(self.eval_points, self.steps)
        return sorted({round(self.steps * (i + 1) / n) for i in range(n)}) if n else []
