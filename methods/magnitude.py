"""Magnitude pruning and the random-pruning floor.

- Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune", Eq. 1): every
  ``update_every`` steps the smallest-|w| weights are masked so that the remaining
  fraction follows the cubic schedule (``prunebench.training.schedules.cubic_remaining``); masked
  weights stay zero for the rest of fine-tuning.
- Scope: ``global`` ranks all encoder weights together; ``local`` ranks within each matrix,
  the matrix-local magnitude pruning of Gordon et al. 2020 ("Compressing BERT", Sec. 3).
- One-shot (Han et al. 2015, "Learning both weights and connections", Sec. 3): prune to the
  target once, before fine-tuning, then retrain with the mask fixed.
- Random pruning (the floor, as in Gordon et al. 2020 Sec. 4): the same schedule with a
  fixed random score per weight, so masks are nested and each matrix loses the same share.

All start from the fine-tuned dense checkpoint and get the common fine-tuning budget.

Guard (``prunebench.method.base``): ``finalize`` enforces the budget with one more top-k of the scores
if the schedule has not reached it; ``remaining_before_finalize`` is the encoder remaining
fraction (``prunebench.structure.budget``) of the masked model when ``finalize`` starts. For one-shot
pruning the rule's mask *is* the final selection (set before training), so it equals the
budget. No constants here are calibrated on a profile (the schedule scales with the steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.structure.masks import apply_masks, topk_masks
from prunebench.training.schedules import cubic_remaining


@dataclass(frozen=True)
class GradualSettings:
    warmup_fraction: float = field(
        default=0.1, metadata={"help": "share of steps before pruning starts (Sanh et al.'s warm-up)"}
    )
    cooldown_fraction: float = field(
        default=0.3, metadata={"help": "share of steps fine-tuned at the final sparsity (cool-down)"}
    )
    update_every: int = field(default=10, metadata={"help": "steps between mask updates (Zhu & Gupta's delta t)"})


class ScorePruning(PruningMethod):
    """Element-wise pruning by a per-weight score with a top-k mask (shared machinery)."""

    scope: ClassVar[str] = "global"
    oneshot: ClassVar[bool] = False
    Settings = GradualSettings
    finalize_enforcement = "one more top-k of the scores if the schedule left the model above the budget"

    def score(self, name: str, module: nn.Linear) -> torch.Tensor:
        """Importance of each weight of ``module``: higher is kept."""
        return module.weight.detach().abs()

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        self.linears = prunable_linears(model)
        self.total_steps = plan.total_steps
        self.generator = torch.Generator().manual_seed(plan.seed)
        s = self.settings
        self.warmup = int(s.warmup_fraction * plan.total_steps)
        self.cooldown = int(s.cooldown_fraction * plan.total_steps)
        self.masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in self.linears.items()}
        if self.oneshot:
            self._update_masks(self.target_remaining)

    def remaining_at(self, step: int) -> float:
        """Scheduled remaining fraction at ``step``."""
        if self.oneshot:
            return self.target_remaining
        return cubic_remaining(step, self.total_steps, self.target_remaining, 1.0, self.warmup, self.cooldown)

    def _update_masks(self, remaining: float) -> None:
        scores = {n: self.score(n, m) for n, m in self.linears.items()}
        self.masks = topk_masks(scores, remaining, self.scope)
        apply_masks(self.linears, self.masks)

    def after_step(self, model: nn.Module, step: int) -> None:
        if not self.oneshot and (step % self.settings.update_every == 0 or step >= self.total_steps - self.cooldown):
            target = self.remaining_at(step)
            if target < self._current_remaining():
                self._update_masks(target)
        apply_masks(self.linears, self.masks)

    def _current_remaining(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks.values())
        return kept / sum(m.numel() for m in self.masks.values())

    def finalize(self, model: nn.Module) -> nn.Module:
        apply_masks(self.linears, self.masks)
        self.remaining_before_finalize = remaining_fraction(model)
        if self._current_remaining() > self.target_remaining:
            self._update_masks(self.target_remaining)
        apply_masks(self.linears, self.masks)
        return model


@register("magnitude_global")
class GlobalMagnitude(ScorePruning):
    """Gradual magnitude pruning, one global threshold (Zhu & Gupta 2017)."""

    paper = "Zhu & Gupta 2017 (arXiv 1710.01878); Gordon et al. 2020 (arXiv 2002.08307)"
    scope = "global"


@register("magnitude_local")
class LocalMagnitude(ScorePruning):
    """Gradual magnitude pruning, matrix-local thresholds (Gordon et al. 2020)."""

    paper = "Gordon et al. 2020 (arXiv 2002.08307); Zhu & Gupta 2017 (arXiv 1710.01878)"
    scope = "local"


@register("magnitude_oneshot")
class OneShotMagnitude(ScorePruning):
    """One-shot global magnitude pruning, then retraining with a fixed mask (Han et al. 2015)."""

    paper = "Han et al. 2015 (arXiv 1506.02626)"
    scope = "global"
    oneshot = True


@register("random")
class RandomPruning(ScorePruning):
    """Random pruning, the floor: fixed random scores, uniform per-matrix sparsity."""

    paper = "random baseline (Gordon et al. 2020, Sec. 4; Blalock et al. 2020)"
    scope = "local"

    def score(self, name: str, module: nn.Linear) -> torch.Tensor:
        if not hasattr(self, "_random_scores"):
            self._random_scores = {}
        if name not in self._random_scores:
            self._random_scores[name] = torch.rand(module.weight.shape, generator=self.generator)
        return self._random_scores[name]
