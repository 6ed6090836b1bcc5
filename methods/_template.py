"""TEMPLATE: a complete, small pruning method to copy when you add one (docs/adding-a-method.md).

This module is deliberately *not* imported by ``methods/__init__.py`` (the leading underscore
says so), so ``template_example`` is not part of the benchmark. It is a working method all the
same, with its own test (``tests/test_method_template.py``).

What this example implements
----------------------------
Gradual magnitude pruning, Zhu & Gupta 2017, "To prune, or not to prune: exploring the
efficacy of pruning for model compression" (arXiv 1710.01878), Eq. 1: every ``update_every``
steps the encoder weights with the smallest |w| are masked so that the remaining fraction
follows the cubic schedule

    r_t = r_f + (1 - r_f) * (1 - (t - t_0) / (n * dt))^3

(``prunebench.training.schedules.cubic_remaining``, written for the fraction *remaining*), with
Sanh et al. 2020's warm-up and cool-down phases. Masked weights stay zero until the end.
The benchmark's own rows of this method are ``magnitude_global`` / ``magnitude_local``
(``methods/magnitude.py``); this copy spells every hook out so that you can see them all.

What your method module's docstring must say (replace this one)
----------------------------------------------------------------
1. The paper: authors, year, title and arXiv id (or venue), the same text as the class's
   ``paper`` attribute, which the report shows.
2. The equation (or algorithm / section) of the paper the code implements, by its number in
   the paper, and the mapping from the paper's symbols to the settings (``Settings`` fields).
   Where the code departs from the paper, say where and why.
3. Where the method starts (``starts_from``) and why (e.g. the paper prunes during fine-tuning).
4. The finalize guard (``prunebench.method.base``): what ``finalize`` enforces
   (``finalize_enforcement``) and how ``remaining_before_finalize`` is counted.
5. Whether any constant is calibrated on a profile (``calibrated_on``).

How to copy it
--------------
1. ``cp methods/_template.py methods/<name>.py``; rename the class, the ``Settings`` class and
   the registry name in ``@register("template_example")`` to ``<name>``; replace this
   docstring (points 1-5 above) and ``paper``; replace the scoring / schedule with your
   paper's rule.
2. Add one line to the ``from methods import (...)`` block of ``methods/__init__.py``, in
   alphabetical order: ``<name>,  # noqa: F401  (registers <name>)``.
3. Copy ``tests/test_method_template.py`` to ``tests/test_<name>.py`` and point it at your method.
4. Add one row to ``docs/methods.md``; list the method in the ``paper`` profile of
   ``workflow/config.yaml`` and update the run count in its comment (every registered method
   must be there; the tests check it).

Guard (``prunebench.method.base``): ``finalize`` applies one more top-k of |w| if the schedule has
not reached the budget (it has, when training ran to the end: the schedule holds the target for
the whole cool-down). ``remaining_before_finalize`` is the encoder remaining fraction
(``prunebench.structure.budget.remaining_fraction``) of the masked model when ``finalize`` starts,
before that top-k. No constants here are calibrated on a profile (the schedule scales with the
number of steps), so ``calibrated_on`` stays ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.structure.masks import SCOPES, apply_masks, topk_masks
from prunebench.training.schedules import cubic_remaining


@dataclass(frozen=True)
class TemplateSettings:
    """Every setting is a field with a default and a ``help`` string (the config's
    ``method_settings: {<name>: {...}}`` block overrides the defaults; unknown keys are refused
    by ``PruningMethod.make_settings`` when the config is validated)."""

    warmup_fraction: float = field(
        default=0.1,
        metadata={
            "help": "share of the steps before pruning starts (t_0 of Zhu & Gupta's Eq. 1; Sanh et al.'s warm-up)"
        },
    )
    cooldown_fraction: float = field(
        default=0.3, metadata={"help": "share of the steps fine-tuned at the final sparsity (Sanh et al.'s cool-down)"}
    )
    update_every: int = field(
        default=10, metadata={"help": "steps between mask updates (delta t of Zhu & Gupta's Eq. 1)"}
    )
    scope: str = field(
        default="global",
        metadata={"help": "'global': one threshold over all encoder matrices; 'local': one per matrix"},
    )

    def __post_init__(self) -> None:
        # Refuse bad values here: the config is validated by building the settings, so a
        # mistake stops the workflow before any job runs.
        if not (
            0.0 <= self.warmup_fraction
            and 0.0 <= self.cooldown_fraction
            and self.warmup_fraction + self.cooldown_fraction < 1.0
        ):
            raise ValueError(
                f"warmup_fraction ({self.warmup_fraction}) and cooldown_fraction "
                f"({self.cooldown_fraction}) must be >= 0 and sum to less than 1"
            )
        if isinstance(self.update_every, bool) or not isinstance(self.update_every, int) or self.update_every < 1:
            raise ValueError(f"update_every must be a positive integer, got {self.update_every!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")


@register("template_example")
class TemplateMagnitude(PruningMethod):
    """Gradual magnitude pruning with the cubic schedule (Zhu & Gupta 2017, Eq. 1): the worked example."""

    # ----- class attributes: what the workflow and the report need to know -------------------
    paper = "Zhu & Gupta 2017, To prune, or not to prune (arXiv 1710.01878), Eq. 1"
    #: "dense": the job hands the fine-tuned dense checkpoint; "pretrained": the pretrained weights
    #: (the paper prunes during fine-tuning); "pretrain": the pre-training stage's output.
    starts_from = "dense"
    granularity = "element"
    Settings = TemplateSettings
    #: What finalize does to reach the budget when the method's own rule has not (the guard).
    finalize_enforcement = "one more top-k of |w| if the cubic schedule left the model above the budget"
    #: No constant of this method is tuned on a profile; a method whose constants are says e.g.
    #: {"model": "embedded", "task": "sst2", "steps": 200, "batch_size": 32}.
    calibrated_on: ClassVar[dict[str, Any] | None] = None

    # ----- hooks, in the order they are called -----------------------------------------------
    # The job (prunebench.runner.jobs.run_method) builds the method, calls note_run, then
    # prunebench.training.trainer.train, which calls prepare and parameter_groups once, then per step
    # penalty (before backward) and after_step (after the optimiser step); after training the job
    # calls finalize, saves the model and stores describe() in the record.

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        """Once, before the optimiser is built (the model is already on the training device,
        embeddings frozen if the budget says so). Install masks, scores or gates here."""
        self.linears = prunable_linears(model)  # the encoder matrices the budget counts
        self.total_steps = plan.total_steps
        s = self.settings
        self.warmup = int(s.warmup_fraction * plan.total_steps)
        self.cooldown = int(s.cooldown_fraction * plan.total_steps)
        if self.warmup + self.cooldown >= plan.total_steps:  # too few steps for a ramp: prune at once
            self.warmup, self.cooldown = 0, 0
        self.masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in self.linears.items()}
        self.mask_updates = 0
        self.reached_at_step: int | None = None

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Once, right after prepare: extra optimiser groups (e.g. movement scores, L0 gates kept
        *off* the model so the trainer does not see them twice). Magnitude pruning has none."""
        return []

    def penalty(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """Every step (from 1), after the forward pass and before backward: a term added to the
        task loss (an L0 or L1 regulariser). Magnitude pruning adds nothing."""
        return None

    def after_step(self, model: nn.Module, step: int) -> None:
        """Every step (from 1), after the optimiser step, the lr-schedule step and zero_grad
        (``self.current_lr`` is the lr of the step just taken). Update and re-apply the mask:
        AdamW's momentum and weight decay would otherwise revive pruned weights."""
        in_cooldown = step >= self.total_steps - self.cooldown
        if step % self.settings.update_every == 0 or in_cooldown:
            target = self.remaining_at(step)
            if target < self._mask_remaining():
                self._update_masks(target)
                if target <= self.target_remaining and self.reached_at_step is None:
                    self.reached_at_step = step
        apply_masks(self.linears, self.masks)

    def finalize(self, model: nn.Module) -> nn.Module:
        """Once, after training (the model is back on the CPU, in eval mode). Make the pruning
        permanent and return a plain model whose zeros are the pruning (no masks, hooks or gates)."""
        apply_masks(self.linears, self.masks)
        # The guard: what the method's own rule reached, measured with the budget's ruler,
        # *before* any final enforcement.
        self.remaining_before_finalize = remaining_fraction(model)
        if self._mask_remaining() > self.target_remaining:  # the enforcement finalize_enforcement names
            self._update_masks(self.target_remaining)
        apply_masks(self.linears, self.masks)
        return model

    # ----- reporting --------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The base fields (name, paper, settings, the guard's remaining_before_finalize and
        finalize_enforcement, calibration) plus what this method adds to ``details.method`` of
        the record. Values must be JSON-serialisable."""
        info = super().describe()
        info["schedule"] = "cubic (Zhu & Gupta 2017, Eq. 1)"
        info["mask_updates"] = getattr(self, "mask_updates", 0)
        info["reached_at_step"] = getattr(self, "reached_at_step", None)
        return info

    # ----- the method's own rule --------------------------------------------------------------
    def remaining_at(self, step: int) -> float:
        """Scheduled remaining fraction at ``step`` (Eq. 1)."""
        return cubic_remaining(step, self.total_steps, self.target_remaining, 1.0, self.warmup, self.cooldown)

    def score(self, name: str, module: nn.Linear) -> torch.Tensor:
        """Importance of each weight: higher is kept. Replace with your paper's criterion."""
        return module.weight.detach().abs()

    def _update_masks(self, remaining: float) -> None:
        scores = {n: self.score(n, m) for n, m in self.linears.items()}
        # top-k over the current weights: pruned weights are zero, so masks only shrink
        self.masks = topk_masks(scores, remaining, self.settings.scope)
        self.mask_updates += 1
        apply_masks(self.linears, self.masks)

    def _mask_remaining(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks.values())
        return kept / sum(m.numel() for m in self.masks.values())
