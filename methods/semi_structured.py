"""Semi-structured N:M sparsity (2:4) and the one-shot, fixed-mask scaffold of the newer methods.

N:M pattern (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks", NVIDIA 2:4; the
N:M variants of Wanda, Sun et al. 2023, Sec. 3, and SparseGPT, Frantar & Alistarh 2023,
Sec. 3.4): in every group of M consecutive *input* weights of an output row, only N are kept.
``magnitude_2to4`` keeps the 2 largest |w| of every 4, once, before fine-tuning, and then
fine-tunes with the mask fixed.

Budget. The remaining fraction is counted by ``prunebench.structure.budget`` (non-zero encoder
weights over the dense count): a 2:4 pattern on every encoder matrix leaves exactly 0.5.
A budget below 0.5 is out of the pattern's reach: the run prunes to 0.5, and ``describe()``
reports it as the head-pruning methods do (``pattern.reached`` = 0.5,
``pattern.budget_reachable`` = false); the leaderboard then lists the row unranked, since
its ``encoder_remaining`` is measured from the weights. A budget above 0.5 is met (fewer
weights remain than allowed).

``OneShotPruning`` is the scaffold shared by ``magnitude_2to4``, ``wanda`` and
``sparsegpt``: prune once in ``prepare`` (the subclass's rule), re-apply the mask after
every optimiser step of the common fine-tuning budget, and, with ``finetune: false``, restore
in ``finalize`` the weights saved right after pruning, so the record is the one-shot model
without fine-tuning (the trainer still runs the budget's steps; they are discarded).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.structure.masks import apply_masks
from prunebench.training.calibration import require_calibration

PATTERNS = ("unstructured", "2:4")


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)`` (keep N of every M); ``"unstructured"`` -> ``None``."""
    if pattern == "unstructured":
        return None
    try:
        n, m = (int(part) for part in pattern.split(":"))
    except ValueError:
        raise ValueError(f"unknown sparsity pattern {pattern!r}; expected one of {PATTERNS}") from None
    if not 0 < n < m:
        raise ValueError(f"pattern {pattern!r}: need 0 < N < M in 'N:M'")
    return n, m


def nm_mask(scores: torch.Tensor, n_keep: int, m: int) -> torch.Tensor:
    """Boolean mask keeping the ``n_keep`` highest scores in every group of ``m`` consecutive inputs of a row."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"an N:M pattern needs the input size ({cols}) to be a multiple of M={m}")
    groups = scores.detach().float().reshape(rows, cols // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, torch.topk(groups, n_keep, dim=2).indices, True)
    return keep.reshape(rows, cols)


@dataclass(frozen=True)
class OneShotSettings:
    finetune: bool = field(
        default=True,
        metadata={
            "help": "fine-tune with the mask fixed for the common budget; "
            "false: keep the one-shot weights (zero-step row)"
        },
    )


class OneShotPruning(PruningMethod):
    """Prune once in ``prepare``; keep the mask fixed while fine-tuning (or discard the fine-tuning)."""

    Settings = OneShotSettings
    finalize_enforcement = "none: finalize re-applies the one-shot mask; no weight is added to it"

    @abstractmethod
    def prune_oneshot(self, model: nn.Module, plan: TrainingPlan) -> dict[str, torch.Tensor]:
        """Prune ``self.linears`` in place and return the boolean keep-mask of each (by name)."""

    def draw_calibration(self, plan: TrainingPlan):
        """The calibration batches of the training split that the settings' ``calibration_examples`` and
        ``calibration_batch_size`` ask for (Wanda, SparseGPT); which examples were used goes into the
        record (``calibration_data``)."""
        s = self.settings
        calibration = require_calibration(plan, self.name)(s.calibration_examples, s.calibration_batch_size)
        self.calibration_used = calibration.describe()
        return calibration

    def pattern(self) -> tuple[int, int] | None:
        """The N:M pattern the method imposes, or ``None`` (unstructured)."""
        return parse_pattern(getattr(self.settings, "pattern", "unstructured"))

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        self.linears = prunable_linears(model)
        self.masks = self.prune_oneshot(model, plan)
        apply_masks(self.linears, self.masks)
        self.oneshot_remaining = remaining_fraction(model)
        self._oneshot_state = None
        if not self.settings.finetune:
            self._oneshot_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def after_step(self, model: nn.Module, step: int) -> None:
        apply_masks(self.linears, self.masks)

    def finalize(self, model: nn.Module) -> nn.Module:
        if self._oneshot_state is not None:
            model.load_state_dict(self._oneshot_state)
        self.remaining_before_finalize = remaining_fraction(model)
        apply_masks(self.linears, self.masks)
        return model

    def describe(self) -> dict:
        out = super().describe()
        out["oneshot_remaining"] = getattr(self, "oneshot_remaining", None)
        if hasattr(self, "calibration_used"):
            out["calibration_data"] = self.calibration_used
        out["finetuned"] = bool(self.settings.finetune)
        nm = self.pattern()
        if nm is not None:
            n, m = nm
            out["pattern"] = {
                "n": n,
                "m": m,
                "reached": n / m,
                "budget_reachable": self.target_remaining >= n / m - 1e-9,
            }
        return out


@dataclass(frozen=True)
class MagnitudeNMSettings(OneShotSettings):
    pattern: str = field(
        default="2:4", metadata={"help": "'N:M': keep N of every M consecutive input weights of a row"}
    )


@register("magnitude_2to4")
class MagnitudeTwoFour(OneShotPruning):
    """2:4 semi-structured magnitude pruning, one-shot, then fine-tuning with the mask fixed.

    In every group of 4 consecutive input weights of each output row the 2 largest |w| are
    kept (Mishra et al. 2021); the remaining fraction is 0.5 whatever the budget (see the
    module docstring for budgets below 0.5).
    """

    paper = "Mishra et al. 2021 (arXiv 2104.08378), 2:4 semi-structured sparsity"
    Settings = MagnitudeNMSettings

    def prune_oneshot(self, model: nn.Module, plan: TrainingPlan) -> dict[str, torch.Tensor]:
        nm = self.pattern()
        if nm is None:
            raise ValueError(f"method {self.name!r} needs an 'N:M' pattern setting, got 'unstructured'")
        n, m = nm
        return {name: nm_mask(module.weight.abs(), n, m) for name, module in self.linears.items()}
