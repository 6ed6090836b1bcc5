"""The one interface every pruning method implements.

A method is a small object driven by the shared trainer (``prunebench.training.trainer``). The
trainer owns the loop (data, optimiser, lr schedule, steps); a method only says what it
adds to it, through five hooks, all optional except ``finalize``:

``prepare(model, plan)``      before training: install masks, scores or gates.
``parameter_groups(model)``   extra optimiser parameter groups (e.g. movement scores).
``penalty(model, step)``      a term added to the task loss (e.g. an L0 or L1 regulariser).
``after_step(model, step)``   after each optimiser step (e.g. update a mask, proximal step).
                              Before calling it the trainer sets ``method.current_lr`` to the
                              learning rate of the step just taken (RPP scales its proximal step by it).
``finalize(model)``           make the pruning permanent and return a plain model whose
                              zeros (or smaller shapes) *are* the pruning; scores, gates
                              and masks are dropped.

Settings of a method are one frozen dataclass (``Settings``) with a help string per field;
values come from the ``method_settings`` block of the config. A method declares where it
starts: ``"dense"`` (the fine-tuned dense checkpoint), ``"pretrained"`` (when its paper
prunes during fine-tuning) or ``"pretrain"`` (the output of the pre-training stage of its
``stage_method``, ``prunebench.training.pretrain``: rows whose paper compresses during pre-training,
``methods/pretrain_stage.py``), and the workflow hands it the right weights.

Register a method with ``@register("name")`` (``prunebench.method.registry``); duplicate names are
refused.

How much of the pruning did the method's own rule do? (the finalize guard)
Many methods end with a ``finalize`` that enforces the budget exactly (a top-k by score, a
trim of gates, a fill-up). When the method's own mechanism stopped far from the budget,
that final enforcement -- a truncation with no training after it -- does most of the
pruning, and the row measures the truncation, not the paper's method. Convention: every
method whose ``finalize`` can prune sets ``self.remaining_before_finalize`` inside
``finalize``, *before* any final enforcement: the fraction of encoder weights its own rule
had reached, counted with ``prunebench.structure.budget``'s definition where possible (non-zero
encoder weights over the dense reference; a method whose model is not countable that way
at that moment -- gates, factors -- says in its docstring how it counts). Methods whose own
rule *is* the final selection (one-shot magnitude, head importance, LayerDrop) set it to
what the rule chose, so nothing is flagged. The class attribute ``finalize_enforcement``
says in a few words what ``finalize`` does. ``describe()`` emits both
(``remaining_before_finalize``, ``finalize_enforcement``); the report compares the first
with the record's ``encoder_remaining`` and flags a row where finalize removed more than a
quarter of what the method had kept.

Calibration. A method whose default constants were tuned on one profile declares it in
``calibrated_on`` (e.g. ``{"model": "embedded", "task": "sst2", "steps": 200,
"batch_size": 32}``). The training job calls ``note_run`` with the run's values;
``calibration_check`` compares them and ``describe()`` then carries the comparison as
``calibration`` (``matches`` false and ``differs`` listing the keys when the profile moved
away from the calibration).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from prunebench.structure.budget import check_budget


@dataclass(frozen=True)
class TrainingPlan:
    """What the trainer tells a method before training starts."""

    total_steps: int
    seed: int
    #: Calibration examples of the task's training split for one-shot / second-order methods:
    #: ``calibration(n, batch_size=16, draw=0)`` -> ``prunebench.training.calibration.CalibrationSet``
    #: (padded batches with labels, and the indices used). ``None`` outside the trainer.
    calibration: Callable[..., Any] | None = None


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
    #: pretrained weights (the paper prunes during fine-tuning); ``"pretrain"``: from the
    #: pre-training stage's pruned model (``prunebench.training.pretrain``; the job calls ``use_pretrain``);
    #: ``"pruned"``: from the checkpoint of the row named by ``base_method`` at the same task, budget and seed.
    starts_from: ClassVar[str] = "dense"
    #: With ``starts_from = "pruned"``: the registered row whose checkpoint this one starts from.
    base_method: ClassVar[str] = ""
    #: ``"element"`` (unstructured), ``"head"``, ``"layer"``, ``"matrix-rank"`` ... (report column).
    granularity: ClassVar[str] = "element"
    #: True for a method whose model stores its encoder weights as low-bit codes (int8/int4): a weight whose code
    #: rounds to zero is still stored and computed, not removed, so the record's ``encoder_remaining`` is the
    #: stored fraction and its theoretical speed-up the dense-kernel one (no sparse-FLOP speed-up).
    quantizes: ClassVar[bool] = False
    #: Settings dataclass of the method.
    Settings: ClassVar[type] = NoSettings
    #: True for comparison rows that have no sparsity budget (e.g. int8 quantization): the
    #: workflow runs them once per (task, seed) at budget 1.
    budget_free: ClassVar[bool] = False
    #: False for a post-training method (int8 dynamic quantization): the job applies ``prepare`` and
    #: ``finalize`` to its starting checkpoint with no training step; with ``starts_from = "dense"`` such a
    #: row reuses the dense fine-tuning of its (task, seed) instead of repeating it.
    trains: ClassVar[bool] = True
    #: True when the method needs another method's record at the same (task, budget, seed),
    #: named by its ``reference`` setting (e.g. random pruning with matched proportions);
    #: the workflow makes that record an input and the job calls ``use_reference``.
    needs_reference: ClassVar[bool] = False
    #: What ``finalize`` does to reach the budget, in a few words (reported with
    #: ``remaining_before_finalize``); empty for a method whose finalize prunes nothing.
    finalize_enforcement: ClassVar[str] = ""
    #: The profile the method's default constants were calibrated on (keys as in
    #: ``note_run``), or ``None`` for a method without calibrated constants.
    calibrated_on: ClassVar[dict[str, Any] | None] = None
    #: Encoder remaining fraction the method's own rule reached before ``finalize`` enforced
    #: the budget (set by ``finalize`` of every method whose finalize can prune).
    remaining_before_finalize: float | None = None

    def __init__(self, target_remaining: float, settings: dict[str, Any] | None = None):
        self.target_remaining = check_budget(target_remaining)
        self.settings = self.make_settings(settings or {})

    @classmethod
    def make_settings(cls, values: dict[str, Any]):
        """Build the frozen settings, refusing unknown keys with a clear message."""
        known = {f.name for f in dataclasses.fields(cls.Settings)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"method {cls.name!r}: unknown setting(s) {unknown}; known settings are {sorted(known)}")
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

    # ----- calibration -----------------------------------------------------------------
    def note_run(self, run: dict[str, Any]) -> None:
        """Record the profile of this run (model, task, steps, batch size) for ``calibration_check``."""
        if not isinstance(run, dict):
            raise TypeError(f"method {self.name!r}: note_run expects a dict of run settings, got {type(run).__name__}")
        self._run = dict(run)

    def calibration_check(self, run: dict[str, Any]) -> dict[str, Any] | None:
        """Compare ``run`` with ``calibrated_on``; ``None`` for a method without calibrated constants.

        ``differs`` lists the calibration keys whose value in ``run`` differs (a key missing
        from ``run`` counts as different).
        """
        if self.calibrated_on is None:
            return None
        differs = sorted(k for k, v in self.calibrated_on.items() if run.get(k, object()) != v)
        return {"calibrated_on": dict(self.calibrated_on), "run": dict(run), "matches": not differs, "differs": differs}

    # ----- reporting -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What the result record stores about the method (with the guard's fields, see the module docstring)."""
        out = {
            "name": self.name,
            "paper": self.paper,
            "starts_from": self.starts_from,
            "granularity": self.granularity,
            "quantizes": self.quantizes,
            "target_remaining": self.target_remaining,
            "settings": dataclasses.asdict(self.settings),
        }
        if self.finalize_enforcement:
            out["finalize_enforcement"] = self.finalize_enforcement
        if self.remaining_before_finalize is not None:
            out["remaining_before_finalize"] = float(self.remaining_before_finalize)
        if getattr(self, "_run", None) is not None:
            out["calibration"] = self.calibration_check(self._run)
        return out
