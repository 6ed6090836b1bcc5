"""Reweighted Proximal Pruning, RPP (Guo, Liu, Mungall, Lin & Wang 2019, arXiv 1909.12486).

RPP minimises the task loss plus a *reweighted* L1 penalty on the encoder weights,

    min_w  L(w) + γ Σ_i α_i |w_i|,          α_i = 1 / (|w_i| + ε),

and splits each iteration in two: the optimiser (the trainer's AdamW) takes a step on L
alone, then the proximal operator of the penalty, scaled by that step's learning rate η_t,
is applied to the result,

    w_i ← sign(w_i) · max(|w_i| − η_t γ α_i, 0)          (soft thresholding),

so the sparsity pattern comes from the proximal step and not from the (adaptive) gradient
step. The weights α_i are recomputed from the current weights every ``reweight_every``
steps: small weights get a large penalty and reach exactly zero, large weights are barely
shrunk (the reweighted-L1 scheme of Candès, Wakin & Boyd 2008, which approximates L0).

Choices (the paper's values for η, γ and ε are not verified; ``../shared/PAPERS.md``):

- η_t: the lr of the optimiser step just taken (the trainer's linear warm-up/decay), which the
  trainer hands over as ``method.current_lr`` before ``after_step``. Both AdamW's step
  (≈ η_t · m/√v, at most about η_t) and the proximal step (η_t γ α_i) scale with η_t, so
  γ α_i is the proximal pull in units of AdamW's largest step: a weight whose gradient pushes
  it outward survives while γ/(|w|+ε) stays below its normalised Adam step. ``step_size``
  set to a number replaces η_t by that constant.
- ``gamma`` γ: ``None`` (default) is calibrated at the first proximal step. With α tracking
  the weights, the proximal step alone moves f(w) = |w|² + 2ε|w| down by 2 η_t γ per step,
  for every weight alike (so it never changes the order of the magnitudes by itself), and in
  total by C = 2 γ Σ_t η_t over the pruning phase; Σ η_t is computed from the first proximal
  step's lr assuming the trainer's linear decay to 0 at the last step (a constant
  ``step_size`` times the number of pruning steps otherwise). γ = C / (2 Σ η_t) with
  C = min(f(q), f(m) − f(s·m)): q is the magnitude ranked at the budget at the start (the
  proximal steps alone would reach the budget), m the median magnitude of the start's top-k
  and s = ``min_survivor_scale`` (the proximal steps alone would leave that survivor at least
  s of its size). The cap matters because a survivor w ends near sqrt(w² − q²): zeroing q
  by shrinkage leaves MiniLM's median survivor at 0.84x (budget 0.5) or 0.61x (0.1), while
  AdamW moves a weight by at most Σ η_t ≈ 0.01 in the default profile (200 steps, peak lr
  1e-4), far less than q (0.035 / 0.099) and too little to undo the shrinkage. With the cap
  the proximal steps reach about 0.6 (budget 0.5) or 0.3 (0.1) by themselves and the loss
  gradient can still reorder the weights near the cut-off before ``finalize``'s top-k;
  ``min_survivor_scale: 0`` gives the uncapped calibration. A number for ``gamma`` overrides.
- Sparsity floor (our addition): the proximal step never takes the remaining fraction below
  the cubic schedule of the other gradual methods (``prunebench.training.schedules.cubic_remaining``,
  same warm-up and cool-down as magnitude pruning). When the full step would zero more, its
  step size is reduced for that step (the same operator with a smaller η) so exactly the
  scheduled number of weights survives; before the warm-up ends no proximal step is taken.
  The floor only limits how *many* weights die at a step; *which* ones is the proximal
  order (smallest f(w) after the Adam step). ``floor_limited_steps`` counts when it bound.
- ``finalize``: the smallest-|w| encoder weights are zeroed (global top-k) so the budget is met
  exactly; ``remaining_before_finalize`` (attribute and ``describe()``) is the fraction the
  proximal steps had reached before that.

Starts from the fine-tuned dense checkpoint (the paper prunes during pre-training and keeps the
pattern for fine-tuning; our benchmark gives every element-wise method the dense checkpoint and
the same fine-tuning budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import prunable_linears
from prunebench.structure.masks import SCOPES, apply_masks, topk_masks
from prunebench.training.schedules import cubic_remaining


@dataclass(frozen=True)
class RPPSettings:
    gamma: float | None = field(
        default=None,
        metadata={
            "help": "penalty strength gamma of the reweighted L1 term; null = calibrated at the first proximal step "
            "from the budget, min_survivor_scale and the lr integral of the pruning phase (module docstring)"
        },
    )
    eps: float = field(
        default=1e-3,
        metadata={
            "help": "epsilon in alpha_i = 1/(|w_i| + eps): caps the penalty of near-zero weights at gamma/eps "
            "(about 1/35 of the median |w| of MiniLM's encoder)"
        },
    )
    reweight_every: int = field(
        default=10, metadata={"help": "optimiser steps between recomputations of alpha from the current weights"}
    )
    step_size: float | None = field(
        default=None,
        metadata={
            "help": "proximal step size eta; null = the lr of the optimiser step just taken (Guo et al.), "
            "a number = that constant"
        },
    )
    min_survivor_scale: float = field(
        default=0.9,
        metadata={
            "help": "calibrated gamma is capped so the proximal steps alone keep the median weight of the start's "
            "magnitude top-k at >= this share of its size; 0 = no cap (the proximal steps alone reach the budget)"
        },
    )
    warmup_fraction: float = field(
        default=0.1, metadata={"help": "share of steps before the first proximal step (the sparsity floor stays at 1)"}
    )
    cooldown_fraction: float = field(
        default=0.3,
        metadata={"help": "share of final steps with the sparsity floor at the budget (as magnitude pruning)"},
    )
    scope: str = field(
        default="global",
        metadata={
            "help": "top-k of |w| at finalize over all encoder matrices ('global', the penalty is global) or per matrix"
        },
    )

    def __post_init__(self) -> None:
        if self.gamma is not None and self.gamma < 0:
            raise ValueError(f"gamma must be >= 0 (or null for the calibrated value), got {self.gamma}")
        if self.eps <= 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        if self.step_size is not None and self.step_size <= 0:
            raise ValueError(f"step_size must be positive (or null for the trainer's lr), got {self.step_size}")
        if not 0.0 <= self.min_survivor_scale < 1.0:
            raise ValueError(f"min_survivor_scale must be in [0, 1), got {self.min_survivor_scale}")
        if self.reweight_every < 1:
            raise ValueError(f"reweight_every must be >= 1, got {self.reweight_every}")
        if not (
            0.0 <= self.warmup_fraction
            and 0.0 <= self.cooldown_fraction
            and self.warmup_fraction + self.cooldown_fraction < 1.0
        ):
            raise ValueError(
                f"warmup_fraction ({self.warmup_fraction}) and cooldown_fraction "
                f"({self.cooldown_fraction}) must be >= 0 and sum to less than 1"
            )
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")


def reweight(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """α = 1 / (|w| + ε)."""
    return 1.0 / (weight.detach().abs() + eps)


def proximal_step(weight: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Soft thresholding, the proximal operator of Σ_i t_i |w_i|: sign(w) · max(|w| − t, 0)."""
    return torch.sign(weight) * torch.clamp(weight.abs() - threshold, min=0.0)


def shrink_potential(magnitude: float, eps: float) -> float:
    """f(w) = w² + 2εw: the proximal step with α = 1/(|w|+ε) lowers it by 2·η·γ per step, for every weight."""
    return magnitude * (magnitude + 2 * eps)


def shrink_target(weights: list[torch.Tensor], remaining: float, eps: float, min_survivor_scale: float) -> float:
    """Total drop C of f over the pruning phase: min(f(q), f(m) − f(s·m)) (module docstring)."""
    flat = torch.cat([w.detach().abs().flatten().float().cpu() for w in weights]).sort().values
    keep = round(remaining * flat.numel())
    if keep >= flat.numel():
        return 0.0
    q = float(flat[flat.numel() - keep - 1]) if keep > 0 else float(flat[-1])
    target = shrink_potential(q, eps)
    if min_survivor_scale > 0 and keep > 0:
        m = float(flat[flat.numel() - keep :].median())
        target = min(target, shrink_potential(m, eps) - shrink_potential(min_survivor_scale * m, eps))
    return target


def linear_decay_lr_integral(lr: float, step: int, last_step: int, total_steps: int) -> float:
    """Σ_{s=step}^{last_step} η_s when η_s = lr · (T − s + 1) / (T − step + 1), the trainer's linear decay."""
    if last_step < step:
        return 0.0
    span = total_steps - step + 1
    terms = sum(total_steps - s + 1 for s in range(step, last_step + 1))
    return lr * terms / span


def calibrated_gamma(
    weights: list[torch.Tensor], remaining: float, eps: float, lr_integral: float, min_survivor_scale: float = 0.0
) -> float:
    """γ = C / (2 Σ η_t): the proximal steps alone lower f(w) by C over the pruning phase."""
    if lr_integral <= 0:
        raise ValueError(f"RPP calibration: the lr integral of the pruning phase must be positive, got {lr_integral}")
    return shrink_target(weights, remaining, eps, min_survivor_scale) / (2 * lr_integral)


@register("rpp")
class ReweightedProximalPruning(PruningMethod):
    """AdamW step on the loss, then the proximal operator of a reweighted L1 penalty scaled by the step's lr.

    Reads ``self.current_lr``, which the trainer sets to the lr of the step just taken before calling
    ``after_step`` (only when ``step_size`` is null).
    """

    paper = "Guo et al. 2019, Reweighted Proximal Pruning (arXiv 1909.12486)"
    starts_from = "dense"
    granularity = "element"
    Settings = RPPSettings
    finalize_enforcement = "global (or per-matrix) top-k |w| so the budget is met exactly, after the proximal steps"

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
        self.start_weights = [m.weight.detach().clone() for m in self.linears.values()]
        self.gamma = s.gamma
        self.lr_integral: float | None = None
        self.alpha = {n: reweight(m.weight, s.eps) for n, m in self.linears.items()}
        self.limited_steps = 0

    def floor_at(self, step: int) -> float:
        """Scheduled minimum remaining fraction after the proximal step of ``step``."""
        return cubic_remaining(step, self.total_steps, self.target_remaining, 1.0, self.warmup, self.cooldown)

    def step_lr(self, step: int) -> float:
        """η_t: the constant ``step_size``, or the lr of the step just taken (``current_lr``, set by the trainer)."""
        if self.settings.step_size is not None:
            return self.settings.step_size
        lr = getattr(self, "current_lr", None)
        if lr is None:
            raise RuntimeError(
                f"method 'rpp', step {step}: no current_lr; the trainer sets it before after_step "
                "(or give the setting step_size a number)"
            )
        return float(lr)

    def _calibrate(self, step: int, lr: float) -> None:
        """Set γ (if not given) at the first proximal step, from the lr integral of the pruning phase."""
        last = self.total_steps - self.cooldown
        if self.settings.step_size is not None:
            self.lr_integral = self.settings.step_size * max(1, last - step + 1)
        else:
            self.lr_integral = linear_decay_lr_integral(lr, step, last, self.total_steps)
        if self.gamma is None:
            self.gamma = calibrated_gamma(
                self.start_weights,
                self.target_remaining,
                self.settings.eps,
                self.lr_integral,
                self.settings.min_survivor_scale,
            )
        self.start_weights = []

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        s = self.settings
        if step % s.reweight_every == 0:
            self.alpha = {n: reweight(m.weight, s.eps) for n, m in self.linears.items()}
        keep = round(self.floor_at(step) * self.total)
        if keep >= self.total:
            return
        lr = self.step_lr(step)
        if self.lr_integral is None:
            self._calibrate(step, lr)
        if self.gamma == 0.0 or lr <= 0.0:
            return
        thresholds = {n: lr * self.gamma * self.alpha[n] for n in self.linears}
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
            info["lr_integral"] = self.lr_integral
            info["floor_limited_steps"] = self.limited_steps
        if hasattr(self, "remaining_before_finalize"):
            info["remaining_before_finalize"] = self.remaining_before_finalize
        info["finalize"] = (
            "global top-k |w| so the budget is met exactly"
            if self.settings.scope == "global"
            else "per-matrix top-k |w| so the budget is met exactly"
        )
        return info
