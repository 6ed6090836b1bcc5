"""Movement pruning, hard and soft (Sanh, Wolf & Rush 2020, arXiv 2005.07683).

Every encoder weight matrix W (each ``nn.Linear`` of ``prunebench.structure.budget.prunable_linears``)
gets a learned score matrix S of its shape, initialised to 0 (the authors' ``mask_init
constant, mask_scale 0``). The layer computes with the masked weight

    a = (W ⊙ M) x,                       M = binarize(S)

and S is trained by the straight-through estimator: the binarization is treated as the
identity in the backward pass, so

    ∂L/∂S_ij = ∂L/∂W'_ij · W_ij = (∂L/∂a_i) W_ij x_j          (W' = W ⊙ M)

— a score grows when its weight moves away from zero and shrinks when it moves towards it
("movement"). The paper's two variants:

- ``movement_hard`` — M = Top_v(S): the v% highest scores are kept, v following the cubic
  schedule (``prunebench.training.schedules.cubic_remaining``) with the warm-up and cool-down of the
  paper (pruning starts after ``initial_warmup`` = 1 and ends ``final_warmup`` = 2 lr-warm-up
  lengths before the end; with our 10% lr warm-up: 0.1 and 0.2 of the steps). Top-v is taken
  per matrix, as in the authors' code (``TopKBinarizer`` per ``MaskedLinear``), so the exact
  budget is met by construction.
- ``movement_soft`` — M = 1[σ(S) > τ] with the objective L + λ · mean_m mean(σ(S_m)) (an L1
  penalty on the sigmoid of the scores, averaged per matrix as in the authors' code). τ goes
  from 0 to ``final_threshold`` on the same cubic schedule and λ is scaled with it,
  λ_t = final_lambda · τ_t / final_threshold (the authors' ``schedule_threshold``).
  Soft movement pruning controls sparsity only indirectly (through λ and τ), so the fraction
  it reaches is not the budget. **At ``finalize`` the exact budget is enforced by keeping the
  global top-k scores** (a single threshold on S over all matrices, i.e. the τ that meets the
  budget). ``describe()`` records the fraction the soft threshold had reached before this
  correction, so a large correction is visible in the record.

Scores are an extra optimiser parameter group (``parameter_groups``; lr ``score_learning_rate``,
no weight decay, the trainer's lr schedule). They live outside the model's parameters: each
Linear's weight is parametrised (``torch.nn.utils.parametrize``) as W ⊙ M(S); the mask M is
recomputed after every ``update_every`` optimiser steps (every step by default, which is
what computing it in each forward pass amounts to). ``finalize`` removes the
parametrizations keeping W ⊙ M, so the saved model is a plain sparse BERT with no score
tensors in its state dict.

Settings that differ from the paper, all because our fine-tuning budget is a few hundred
steps instead of 10 epochs (checked on the default profile: MiniLM, SST-2, 200 steps):
- soft: ``score_learning_rate`` 0.1 instead of 1e-2. Adam moves a score by at most about its
  lr per step, so with 1e-2 and ~300 steps no score can fall below σ⁻¹(0.1) = -2.2: the soft
  threshold pruned nothing (remaining 1.0 before finalize, accuracy 0.49 after it).
- soft: ``final_lambda`` null = chosen per budget. The paper tunes λ per target sparsity
  (400 in the example command); soft movement's training does not see the budget, so with one
  λ for all budgets the soft threshold reached 32% remaining (300 steps) whatever the budget and
  ``finalize`` did the rest. The default interpolates λ (log-linearly) between measured
  points (``LAMBDA_CALIBRATION``, measured with 200 steps: λ 100 / 400 / 2000 left 0.782 /
  0.470 / 0.054 above the soft threshold; accuracy after finalize at budget 0.5: 0.589 / 0.834
  / 0.780, i.e. a finalize that prunes 36% of what the threshold kept costs 25 points). The
  interpolated λ is 350 / 772 / 1674 for budgets 0.5 / 0.3 / 0.1. The points depend on the run
  length: points measured with 300 steps leave 0.148 before finalize in a 200-step run at budget
  0.1, and finalize then prunes a third of the remaining weights at once. ``calibrated_on`` names
  the profile; on another model, task or length the reached fraction will differ, the record
  shows it (``remaining_before_finalize``, and ``calibration`` when the profile moved away) and
  finalize still meets the budget.
- hard keeps the paper's 1e-2: a top-k mask depends only on the ranking of the scores, which
  Adam's scale-free update makes insensitive to the lr when scores start at 0.

Known limitation (measured; the paper's procedure, not an implementation bug): in the default
profile hard movement pruning collapses to the majority class (0.509 at budgets 0.5 and 0.1,
also with 800 steps), while random pruning keeps 0.76-0.83. Evidence in
``docs/movement_pruning.md`` (``scripts/diagnose_movement.py``): the loss reaches ln 2 within
10 steps of the first pruning step (10.9% pruned at step 30); the pruned weights are
magnitude-random and not concentrated in any input or output dimension; applied to the dense
weights without training, the step-25 mask (6.2% per matrix) gives 0.492 where a random mask
of the same fractions gives 0.827, and pruning the 6.2% *highest* scores is as destructive
(0.509). AdamW normalises each score's update, so after tens of steps a score ranks how
consistently dL/dW'·W kept its sign: both ends of the ranking are the weights most
coherently aligned with the mean loss gradient, and removing them at full size (|w| ~ 0.035;
Adam moves a weight by at most ~its lr per step, so by step 20 of the linear lr warm-up to 1e-4 a
weight has moved at most sum(lr_t) ~ 20 x 1e-4 / 2 = 0.001) is a large coherent step, not the small one the
first-order "movement" argument assumes. In the paper pruning starts after a whole lr warm-up
(thousands of steps, enough for a weight to travel several times its size towards zero) and
the ramp prunes ~0.01% of the weights per step against ~0.7% here. Letting the scores
accumulate for 100 steps before pruning (``warmup_fraction`` 0.5) does not help: 2.5% pruned
at step 100 already drops the accuracy to 0.58, and the run ends at 0.509 (loss 1.31 in the
10 steps after pruning starts). The authors' reference
code (HF ``research_projects/movement-pruning``) does what this module does: scores clipped
jointly with the weights, their own AdamW group at lr 1e-2, constant-0 init, per-matrix
TopKBinarizer, the same cubic schedule; no deviation explains the collapse. "The budget is
too short for weights to reach zero" is only half of the explanation: 4x the steps does not
help because the warm-up and ramp scale with the run.

Starting point. ``movement_hard`` and ``movement_soft`` apply movement scores to the fine-tuned dense
checkpoint (``starts_from = "dense"``), as every element-wise row here does, so the comparison with
magnitude pruning is about the pruning criterion; fine-tuning continues under the mask. That is *not*
the paper's setting: Sanh et al. fine-prune from the pretrained model (their Table 1: 10 epochs of
MNLI/QQP, 2 of SQuAD). ``movement_hard_pretrained`` and ``movement_soft_pretrained`` are the paper's
setting: the same scores, masks and cubic schedule (warm-up and cool-down as shares of the run, the
paper's 1 and 2 lr-warm-up lengths scaled to the run's length), starting from the pretrained weights
with a fresh task head, so one run both learns the task and prunes. Soft movement's lambda calibration
was measured from the dense checkpoint; its pretrained row says so (``calibrated_on.starts_from``, ‡).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import prunable_linears
from prunebench.structure.masks import SCOPES
from prunebench.training.schedules import cubic_remaining

PAPER = "Sanh, Wolf & Rush 2020, Movement Pruning (arXiv 2005.07683)"


# ----- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _ScheduleSettings:
    warmup_fraction: float = field(
        default=0.1,
        metadata={
            "help": "share of steps before pruning starts (paper: initial_warmup = 1 lr-warm-up length; ours is 10%)"
        },
    )
    cooldown_fraction: float = field(
        default=0.2,
        metadata={
            "help": "share of final steps at the final mask schedule (paper: final_warmup = 2 lr-warm-up lengths)"
        },
    )
    update_every: int = field(
        default=1, metadata={"help": "optimiser steps between mask recomputations (paper: every forward pass, i.e. 1)"}
    )

    def __post_init__(self) -> None:
        if not (
            0.0 <= self.warmup_fraction
            and 0.0 <= self.cooldown_fraction
            and self.warmup_fraction + self.cooldown_fraction < 1.0
        ):
            raise ValueError(
                f"warmup_fraction ({self.warmup_fraction}) and cooldown_fraction "
                f"({self.cooldown_fraction}) must be >= 0 and sum to less than 1"
            )
        if self.update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {self.update_every}")


@dataclass(frozen=True)
class HardSettings(_ScheduleSettings):
    score_learning_rate: float = field(
        default=1e-2, metadata={"help": "peak AdamW lr of the scores (paper: mask_scores_learning_rate 1e-2)"}
    )
    scope: str = field(
        default="local",
        metadata={"help": "top-k per matrix ('local', the authors' code) or over all encoder matrices ('global')"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.score_learning_rate <= 0:
            raise ValueError(f"score_learning_rate must be positive, got {self.score_learning_rate}")


@dataclass(frozen=True)
class SoftSettings(_ScheduleSettings):
    score_learning_rate: float = field(
        default=0.1,
        metadata={
            "help": "peak AdamW lr of the scores (paper: 1e-2 over 10 epochs; 0.1 so that scores can cross "
            "the threshold within our few hundred steps, see the module docstring)"
        },
    )
    initial_threshold: float = field(
        default=0.0, metadata={"help": "threshold tau on sigmoid(S) before pruning starts (paper: 0)"}
    )
    final_threshold: float = field(
        default=0.1, metadata={"help": "threshold tau on sigmoid(S) at the end of the schedule (paper: 0.1)"}
    )
    final_lambda: float | None = field(
        default=None,
        metadata={
            "help": "L1 penalty weight on mean sigmoid(S) at the final threshold, scaled by tau_t / final_threshold "
            "during the schedule (paper: 400, tuned per target sparsity); null = budget-dependent value "
            "interpolated from LAMBDA_CALIBRATION (see the module docstring)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.initial_threshold < 1.0 or not 0.0 < self.final_threshold < 1.0:
            raise ValueError(
                f"thresholds must lie in [0, 1) (final > 0), got initial {self.initial_threshold} "
                f"and final {self.final_threshold}"
            )
        if (self.final_lambda is not None and self.final_lambda < 0) or self.score_learning_rate <= 0:
            raise ValueError(
                f"final_lambda must be >= 0 and score_learning_rate > 0, got {self.final_lambda} "
                f"and {self.score_learning_rate}"
            )


#: Soft movement: (final_lambda, remaining fraction the soft threshold reached) measured on the
#: default profile (MiniLM, SST-2, 200 steps, batch 32, bf16, from the dense checkpoint, score
#: lr 0.1, seed 0; ``SoftMovement.calibrated_on``). Soft movement's training does not depend on
#: the budget, only this lambda does. The points depend on the run length: those measured with 300
#: steps, ((100, 0.698), (400, 0.322), (2000, 0.018)), leave 0.148 instead of 0.1 at 200 steps.
LAMBDA_CALIBRATION = ((100.0, 0.782), (400.0, 0.470), (2000.0, 0.054))


def calibrated_lambda(remaining: float, points=LAMBDA_CALIBRATION) -> float:
    """final_lambda expected to leave ``remaining`` of the weights above the soft threshold:
    log-linear interpolation (extrapolation at the ends) between measured points."""
    pts = sorted(points, key=lambda p: -p[1])  # remaining decreasing, lambda increasing
    i = next((j for j in range(1, len(pts) - 1) if remaining > pts[j][1]), len(pts) - 1)
    (l0, r0), (l1, r1) = pts[i - 1], pts[i]
    t = (r0 - remaining) / (r0 - r1)
    return float(math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0))))


# ----- the masked weight -------------------------------------------------------------------


class _StraightThrough(torch.autograd.Function):
    """Forward: the (precomputed) binary mask; backward: the gradient passed to the scores unchanged."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class MaskedWeight(nn.Module):
    """Parametrization ``W -> W * M``, M the current binary mask, with the straight-through
    gradient ``dL/dS = dL/dW' * W`` to the scores S.

    Scores and mask are plain tensor attributes, not parameters or buffers: they stay out of
    ``model.parameters()`` (the method gives the scores to the optimiser itself) and out of
    the state dict.
    """

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = scores
        self.mask = torch.ones_like(scores, dtype=torch.bool)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * _StraightThrough.apply(self.scores, self.mask)


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly ``k`` highest entries of ``scores`` (ties: lowest index first).

    A threshold from ``kthvalue`` is about twice as fast as ``topk`` on CPU, which matters
    when the mask is recomputed every step.
    """
    flat = scores.detach().flatten()
    n = flat.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(flat.float(), n - k).values
    keep = flat > threshold
    missing = k - int(keep.sum())
    if missing > 0:  # ties at the threshold: take the first ones
        keep[torch.nonzero(flat == threshold).flatten()[:missing]] = True
    return keep.view_as(scores)


def top_k_masks(scores: dict[str, torch.Tensor], remaining: float, scope: str) -> dict[str, torch.Tensor]:
    """Masks keeping the highest ``remaining`` fraction of scores, per matrix or over all."""
    if remaining >= 1.0:
        return {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    if scope == "local":
        return {n: top_k_mask(s, round(remaining * s.numel())) for n, s in scores.items()}
    flat = torch.cat([s.detach().flatten() for s in scores.values()])
    keep = top_k_mask(flat, round(remaining * flat.numel()))
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


# ----- the methods -------------------------------------------------------------------------


class MovementPruning(PruningMethod):
    """Shared machinery: scores, parametrizations, schedule, finalize."""

    paper = PAPER
    starts_from = "dense"
    granularity = "element"

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        s = self.settings
        self.linears = prunable_linears(model)
        if not self.linears:
            raise ValueError(f"method {self.name!r}: the model has no encoder nn.Linear to prune")
        self.total_steps = plan.total_steps
        self.warmup = int(s.warmup_fraction * plan.total_steps)
        self.cooldown = int(s.cooldown_fraction * plan.total_steps)
        cubic_remaining(1, self.total_steps, 0.5, 1.0, self.warmup, self.cooldown)  # validates the schedule
        self.scores: dict[str, torch.Tensor] = {}
        self.parametrizations: dict[str, MaskedWeight] = {}
        for name, module in self.linears.items():
            scores = torch.zeros_like(module.weight, requires_grad=True)
            masked = MaskedWeight(scores)
            parametrize.register_parametrization(module, "weight", masked)
            self.scores[name] = scores
            self.parametrizations[name] = masked
        self._update_masks(1)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": list(self.scores.values()), "lr": self.settings.score_learning_rate, "weight_decay": 0.0}]

    def schedule(self, step: int, initial: float, final: float) -> float:
        """The cubic schedule from ``initial`` to ``final`` with warm-up and cool-down."""
        return cubic_remaining(step, self.total_steps, final, initial, self.warmup, self.cooldown)

    def masks_at(self, step: int) -> dict[str, torch.Tensor]:
        """Masks for the forward pass of ``step``."""
        raise NotImplementedError

    @torch.no_grad()
    def _update_masks(self, step: int) -> None:
        for name, mask in self.masks_at(step).items():
            self.parametrizations[name].mask = mask

    def after_step(self, model: nn.Module, step: int) -> None:
        # Scores changed: recompute the mask for the next forward pass (step + 1).
        if step % self.settings.update_every == 0 or step >= self.total_steps - self.cooldown:
            self._update_masks(step + 1)

    def final_masks(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def current_remaining(self) -> float:
        """Fraction of encoder weights the current masks keep."""
        masks = [p.mask for p in self.parametrizations.values()]
        return sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        self.remaining_before_finalize = self.current_remaining()
        for name, mask in self.final_masks().items():
            module = self.linears[name]
            # The trainer may have moved the model (not our plain-tensor masks) back to the CPU.
            self.parametrizations[name].mask = mask.to(module.parametrizations.weight.original.device)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        self.scores, self.parametrizations = {}, {}
        return model


@register("movement_hard")
class HardMovement(MovementPruning):
    """Movement pruning with a top-k mask on the learned scores (Sanh et al. 2020)."""

    Settings = HardSettings
    finalize_enforcement: ClassVar[str] = (
        "per-matrix top-k of the final scores; the schedule already holds the "
        "budget during the cool-down, so this prunes nothing extra"
    )

    def masks_at(self, step: int) -> dict[str, torch.Tensor]:
        remaining = self.schedule(step, 1.0, self.target_remaining)
        return top_k_masks(self.scores, remaining, self.settings.scope)

    def final_masks(self) -> dict[str, torch.Tensor]:
        return top_k_masks(self.scores, self.target_remaining, self.settings.scope)


@register("movement_soft")
class SoftMovement(MovementPruning):
    """Soft movement pruning: threshold on sigmoid(S) plus an L1 penalty (Sanh et al. 2020);
    the exact budget is enforced at ``finalize`` by a global top-k of the scores."""

    Settings = SoftSettings
    finalize_enforcement: ClassVar[str] = (
        "soft movement controls sparsity only through lambda and tau; at finalize "
        "the global top-k scores are kept so the budget is met exactly"
    )
    #: The profile LAMBDA_CALIBRATION was measured on (see the module docstring).
    calibrated_on: ClassVar[dict[str, Any]] = {"model": "embedded", "task": "sst2", "steps": 200, "batch_size": 32}

    @property
    def final_lambda(self) -> float:
        """The setting, or the budget-dependent calibrated value when it is null."""
        if self.settings.final_lambda is not None:
            return self.settings.final_lambda
        return calibrated_lambda(self.target_remaining)

    def threshold(self, step: int) -> float:
        s = self.settings
        return self.schedule(step, s.initial_threshold, s.final_threshold)

    def regularization_weight(self, step: int) -> float:
        """λ_t = final_lambda · τ_t / final_threshold (the authors' schedule)."""
        return self.final_lambda * self.threshold(step) / self.settings.final_threshold

    def masks_at(self, step: int) -> dict[str, torch.Tensor]:
        tau = self.threshold(step)
        return {name: torch.sigmoid(s.detach()) > tau for name, s in self.scores.items()}

    def penalty(self, model: nn.Module, step: int) -> torch.Tensor | None:
        weight = self.regularization_weight(step)
        if weight == 0.0:
            return None
        per_matrix = torch.stack([torch.sigmoid(s).mean() for s in self.scores.values()])
        return weight * per_matrix.mean()

    def final_masks(self) -> dict[str, torch.Tensor]:
        return top_k_masks(self.scores, self.target_remaining, "global")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["final_lambda_used"] = self.final_lambda
        return info


@register("movement_hard_pretrained")
class HardMovementFromPretrained(HardMovement):
    """Hard movement pruning in the paper's setting: fine-pruning from the pretrained weights (Sanh et al. 2020)."""

    starts_from = "pretrained"


@register("movement_soft_pretrained")
class SoftMovementFromPretrained(SoftMovement):
    """Soft movement pruning in the paper's setting: fine-pruning from the pretrained weights (Sanh et al. 2020)."""

    starts_from = "pretrained"
    #: LAMBDA_CALIBRATION was measured from the dense checkpoint: a run from the pretrained weights differs (‡)
    calibrated_on: ClassVar[dict[str, Any]] = {**SoftMovement.calibrated_on, "starts_from": "dense"}
