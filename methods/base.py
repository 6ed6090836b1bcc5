"""The one interface every pruning method implements.

A method is a small object driven by the shared trainer (``prunebench.trainer``). The
trainer owns the loop (data, optimiser, lr schedule, steps); a method only says what it
adds to it, through five hooks, all optional except ``finalize``:

``prepare(model, plan)``      before training: install masks, scores or gates.
``parameter_groups(model)``   extra optimiser parameter groups (e.g. movement scores).
``penalty(model, step)``      a term added to the task loss (e.g. an L0 or L1 regulariser).
``after_step(model, step)``   after each optimiser step (e.g. update a mask, proximal step).
``finalize(model)``           make the pruning permanent and return a plain model whose
                              zeros (or smaller shapes) *are* the pruning; scores, gates
                              and masks are dropped.

Settings of a method are one frozen dataclass (``Settings``) with a help string per field;
values come from the ``method_settings`` block of the config. A method declares where it
starts: ``"dense"`` (the fine-tuned dense checkpoint) or ``"pretrained"`` (when its paper
prunes during fine-tuning), and the workflow hands it the right weights.

Register a method with ``@register("name")`` (``methods.registry``); duplicate names are
refused.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from prunebench.budget import check_budget


@dataclass(frozen=True)
class TrainingPlan:
    """What the trainer tells a method before training starts."""

    total_steps: int
    seed: int


@dataclass(frozen=True)
class NoSettings:
    """A method without settings."""


class PruningMethod(ABC):
    """Base class of every method. Subclasses set the class attributes and hooks."""

    #: Registry name, set by ``@register``.
    name: ClassVar[str] = ""
    #: Citation of the paper the method implements (shown in the report).
    paper: ClassVar[str] = ""
    #: ``"dense"``: start from the fine-tuned dense checkpoint; ``"pretrained"``: from the
    #: pretrained weights (the paper prunes during fine-tuning).
    starts_from: ClassVar[str] = "dense"
    #: ``"element"`` (unstructured), ``"head"``, ``"layer"``, ``"matrix-rank"`` ... (report column).
    granularity: ClassVar[str] = "element"
    #: Settings dataclass of the method.
    Settings: ClassVar[type] = NoSettings
    #: True for comparison rows that have no sparsity budget (e.g. int8 quantization): the
    #: workflow runs them once per (task, seed) at budget 1.
    budget_free: ClassVar[bool] = False
    #: True when the method needs another method's record at the same (task, budget, seed),
    #: named by its ``reference`` setting (e.g. random pruning with matched proportions);
    #: the workflow makes that record an input and the job calls ``use_reference``.
    needs_reference: ClassVar[bool] = False

    def __init__(self, target_remaining: float, settings: dict[str, Any] | None = None):
        self.target_remaining = check_budget(target_remaining)
        self.settings = self.make_settings(settings or {})

    @classmethod
    def make_settings(cls, values: dict[str, Any]):
        """Build the frozen settings, refusing unknown keys with a clear message."""
        known = {f.name for f in dataclasses.fields(cls.Settings)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"method {cls.name!r}: unknown setting(s) {unknown}; known settings are {sorted(known)}"
            )
        return cls.Settings(**values)

    def use_reference(self, record: dict[str, Any]) -> None:
        """Receive the reference method's result record (only if ``needs_reference``)."""
        raise NotImplementedError(f"method {self.name!r} takes no reference record")

    # ----- hooks called by the trainer -------------------------------------------------
    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        """Install whatever the method needs on ``model`` before training."""

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Extra optimiser parameter groups (each a dict as ``torch.optim`` takes)."""
        return []

    def penalty(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """A term added to the task loss at ``step``, or ``None``."""
        return None

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after every optimiser step (``step`` counts from 1)."""

    @abstractmethod
    def finalize(self, model: nn.Module) -> nn.Module:
        """Make the pruning permanent and return the plain pruned model."""

    # ----- reporting -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What the result record stores about the method."""
        return {
            "name": self.name,
            "paper": self.paper,
            "starts_from": self.starts_from,
            "granularity": self.granularity,
            "target_remaining": self.target_remaining,
            "settings": dataclasses.asdict(self.settings),
        }
