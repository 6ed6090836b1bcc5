"""Reweighted Proximal Pruning, RPP (Guo, Liu, Mungall, Lin & Wang 2019, arXiv 1909.12486).

RPP minimises the task loss plus a *reweighted* L1 penalty on the encoder weights,

    min_w  L(w) + γ Σ_i α_i |w_i|,          α_i = 1 / (|w_i| + ε),

and splits each iteration in two: the optimiser (the trainer's AdamW) takes a step on L
alone, then the proximal operator of the penalty is applied to the result,

    w_i ← sign(w_i) · max(|w_i| − η_t γ α_i, 0)          (soft thresholding),

so the sparsity pattern comes from the proximal step and not from the (adaptive) gradient
step. The weights α_i are recomputed from the current weights every ``reweight_every``
steps: small weights get a large penalty and reach exactly zero, large weights are barely
shrunk (the reweighted-L1 scheme of Candès, Wakin & Boyd 2008, which approximates L0).

Choices (the paper's values for η, γ and ε are not verified; ``../shared/PAPERS.md``):

- ``step_size`` η: the paper uses the current learning rate. The ``after_step`` hook does not
  see the trainer's lr, so η is a setting, constant over training; its default is the default
  profile's peak AdamW lr (1e-4). Only the product η·γ matters.
- ``gamma`` γ: ``None`` (default) calibrates it to the budget and the training length. With α
  recomputed as the weights shrink, the proximal step alone moves a weight as
  d|w|/dt = −ηγ / (|w| + ε), which takes a weight of magnitude q to zero in q(q + 2ε) / (2ηγ)
  steps; γ is set so that q — the magnitude of the weight ranked at the budget at the start —
  reaches zero at the end of the pruning phase. The loss gradient pushes back on weights that
  matter, so the sparsity pattern is RPP's, not magnitude's. A number overrides it.
- Sparsity floor (our addition): the proximal step never takes the remaining fraction below
  the cubic schedule of the other gradual methods (``prunebench.schedules.cubic_remaining``,
  same warm-up and cool-down as magnitude pruning). When the full step would zero more, its
  step size is reduced for that step (the same operator with a smaller η) so exactly the
  scheduled number of weights survives; before the warm-up ends no proximal step is taken.
  This keeps a strong γ from pruning everything in the first steps.
- ``finalize``: the smallest-|w| encoder weights are zeroed (global top-k) so the budget is met
  exactly; ``describe()`` records the fraction the proximal steps had reached before that.

Starts from the fine-tuned dense checkpoint (the paper prunes during pre-training and keeps the
pattern for fine-tuning; our benchmark gives every element-wise method the dense checkpoint and
the same fine-tuning budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from methods.base import PruningMethod, TrainingPlan
from methods.registry import register
from prunebench.budget import prunable_linears
from prunebench.masks import SCOPES, apply_masks, topk_masks
from prunebench.schedules import cubic_remaining


@dataclass(frozen=True)
class RPPSettings:
    gamma: float | None = field(default=None, metadata={
        "help": "penalty strength gamma of the reweighted L1 term; null = calibrated so the proximal steps "
                "alone would reach the budget by the end of the pruning phase (see the module docstring)"})
    eps: float = field(default=1e-3, metadata={
        "help": "epsilon in alpha_i = 1/(|w_i| + eps): caps the penalty of near-zero weights at gamma/eps "
                "(about 1/35 of the median |w| of MiniLM's encoder)"})
    reweight_every: int = field(default=10, metadata={
        "help": "optimiser steps between recomputations of alpha from the current weights"})
    step_size: float = field(default=1e-4, metadata={
        "help": "proximal step size eta (the paper uses the current lr; the hook does not see it, so a constant "
                "equal to the default peak AdamW lr)"})
    warmup_fraction: float = field(default=0.1, metadata={
        "help": "share of steps before the first proximal step (the sparsity floor stays at 1)"})
    cooldown_fraction: float = field(default=0.3, metadata={
        "help": "share of final steps with the sparsity floor at the budget (as magnitude pruning)"})
    scope: str = field(default="global", metadata={
        "help": "top-k of |w| at finalize over all encoder matrices ('global', the penalty is global) or per matrix"})

    def __post_init__(self) -> None:
        if self.gamma is not None and self.gamma < 0:
            raise ValueError(f"gamma must be >= 0 (or null for the calibrated value), got {self.gamma}")
        if self.eps <= 0 or self.step_size <= 0:
            raise ValueError(f"eps and step_size must be positive, got {self.eps} and {self.step_size}")
        if self.reweight_every < 1:
            raise ValueError(f"reweight_every must be >= 1, got {self.reweight_every}")
        if not (0.0 <= self.warmup_fraction and 0.0 <= self.cooldown_fraction
                and self.warmup_fraction + self.cooldown_fraction < 1.0):
            raise ValueError(f"warmup_fraction ({self.warmup_fraction}) and cooldown_fraction "
                             f"({self.cooldown_fraction}) must be >= 0 and sum to less than 1")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")


def reweight(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """α = 1 / (|w| + ε)."""
    return 1.0 / (weight.detach().abs() + eps)


def proximal_step(weight: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Soft thresholding, the proximal operator of Σ_i t_i |w_i|: sign(w) · max(|w| − t, 0)."""
    return torch.sign(weight) * torch.clamp(weight.abs() - threshold, min=0.0)


def calibrated_gamma(weights: list[torch.Tensor], remaining: float, eps: float, step_size: float, steps: int) -> float:
    """γ such that ``steps`` proximal steps alone take the weight ranked at ``remaining`` to zero."""
    flat = torch.cat([w.detach().abs().flatten().float() for w in weights])
    drop = flat.numel() - round(remaining * flat.numel())
    if drop <= 0:
        return 0.0
    q = float(torch.kthvalue(flat.cpu(), drop).values)
    return q * (q + 2 * eps) / (2 * step_size * max(1, steps))


@register("rpp")
class ReweightedProximalPruning(PruningMethod):
    """AdamW step on the loss, then the proximal operator of a reweighted L1 penalty."""

    paper = "Guo et al. 2019, Reweighted Proximal Pruning (arXiv 1909.12486)"
    starts_from = "dense"
    granularity = "element"
    Settings = RPPSettings

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        s = self.settings
        self.linears = prunable_linears(model)
        if not self.linears:
            raise ValueError("method 'rpp': the model has no encoder nn.Linear to prune")
        self.total_steps = plan.total_steps
        self.warmup = int(s.warmup_fraction * plan.total_steps)
        self.cooldown = int(s.cooldown_fraction * plan.total_steps)
        cubic_remaining(1, self.total_steps, 0.5, 1.0, self.warmup, self.cooldown)  # validates the schedule
        self.total = sum(m.weight.numel() for m in self.linears.values())
        weights = [m.weight for m in self.linears.values()]
        pruning_steps = self.total_steps - self.warmup - self.cooldown
        self.gamma = s.gamma if s.gamma is not None else calibrated_gamma(
            weights, self.target_remaining, s.eps, s.step_size, pruning_steps)
        self.alpha = {n: reweight(m.weight, s.eps) for n, m in self.linears.items()}
        self.limited_steps = 0

    def floor_at(self, step: int) -> float:
        """Scheduled minimum remaining fraction after the proximal step of ``step``."""
        return cubic_remaining(step, self.total_steps, self.target_remaining, 1.0, self.warmup, self.cooldown)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        s = self.settings
        if step % s.reweight_every == 0:
            self.alpha = {n: reweight(m.weight, s.eps) for n, m in self.linears.items()}
        keep = round(self.floor_at(step) * self.total)
        if keep >= self.total or self.gamma == 0.0:
            return
        thresholds = {n: s.step_size * self.gamma * self.alpha[n] for n in self.linears}
        scale = self._step_scale(thresholds, keep)
        for name, module in self.linears.items():
            module.weight.copy_(proximal_step(module.weight, scale * thresholds[name]))

    def _step_scale(self, thresholds: dict[str, torch.Tensor], keep: int) -> float:
        """1, or the largest smaller factor on the thresholds that leaves ``keep`` weights non-zero."""
        survivors = sum(int((m.weight.abs() > thresholds[n]).sum()) for n, m in self.linears.items())
        if survivors >= keep:
            return 1.0
        self.limited_steps += 1
        # w survives a scaled step c·t iff |w|/t > c: take c = the (keep+1)-th largest ratio.
        ratios = torch.cat([(m.weight.abs() / thresholds[n]).flatten().float() for n, m in self.linears.items()])
        return float(torch.kthvalue(ratios, self.total - keep).values)

    def current_remaining(self) -> float:
        """Fraction of encoder weights that are non-zero now."""
        return sum(int(torch.count_nonzero(m.weight)) for m in self.linears.values()) / self.total

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        self.remaining_before_finalize = self.current_remaining()
        scores = {n: m.weight.detach().abs() for n, m in self.linears.items()}
        apply_masks(self.linears, topk_masks(scores, self.target_remaining, self.settings.scope))
        return model

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if hasattr(self, "gamma"):
            info["gamma_used"] = self.gamma
            info["floor_limited_steps"] = self.limited_steps
        if hasattr(self, "remaining_before_finalize"):
            info["remaining_before_finalize"] = self.remaining_before_finalize
        info["finalize"] = "global top-k |w| so the budget is met exactly" if self.settings.scope == "global" \
            else "per-matrix top-k |w| so the budget is met exactly"
        return info
