"""FLOP: factorized low-rank pruning (Wang, Wohlwend & Lei 2019, arXiv 1910.04732).

Every encoder weight matrix ``W`` (out x in; Q, K, V, attention output, both feed-forward
matrices) is reparameterised as ``W = P diag(z) Q`` with ``r = min(out, in)`` rank-one
components, initialised from the SVD of the fine-tuned ``W`` (``prunebench.structure.factorized``), so
training starts from a model equal to the dense one up to the gates. ``z`` are hard-concrete
gates (``prunebench.structure.hard_concrete``; the FLOP code's ``beta = 1.0``, stretch ``(-0.1, 1.1)``),
sampled once per forward pass in training.

Size control, the augmented Lagrangian of the paper: with ``s`` the *expected* number of
encoder weights of the factorized model as a fraction of the dense encoder,
``s = sum_m E[L0(z_m)] (in_m + out_m) / dense``, and ``t`` the target, the penalty added to
the task loss is ``lambda1 (s - t) + lambda2 (s - t)^2``. The multipliers are maximised, not
minimised: they are plain floats owned by this object (never model parameters and never in
the trainer's optimiser groups), updated in ``after_step`` by one step of gradient *ascent*,
``lambda1 += lagrangian_lr (s - t)``, ``lambda2 += lagrangian_lr (s - t)^2`` (the partial
derivatives of the penalty), using the ``s - t`` measured in that step's ``penalty``. The
target ``t`` ramps linearly from the expected size at the start (``s0``, so no initial jump)
to the budget over ``ramp_fraction`` of the steps, then stays at the budget, so the last
``1 - ramp_fraction`` of the steps are left to meet it.

The gates' own optimiser. The gates' ``log_alpha`` are *not* handed to the trainer
(``parameter_groups`` returns nothing): the trainer's lr schedule decays every group linearly
to 0, which freezes the gates before they can follow the Lagrangian (with the gates in the
trainer's groups the expected size ended at 0.465 for a target of 0.1). The method owns an
AdamW optimiser for ``log_alpha`` (lr ``gate_lr``, constant, no weight decay) and steps it in
``after_step``, on the gradients of the task loss plus the penalty that the trainer's backward
pass left on ``log_alpha``; the Lagrangian, like the FLOP code's, runs at a constant step size.
(The trainer clips the model's gradients only; Adam's update does not depend on the gradients'
scale.)

Reaching the target: with Adam on ``log_alpha`` the gates move at a bounded speed, so the
Lagrangian lags behind the ramp and then overshoots while ``lambda1`` unwinds. The defaults
(``gate_lr`` 0.1, ``lagrangian_lr`` 1.0, ``ramp_fraction`` 0.5) were calibrated on the default
profile (embedded MiniLM, SST-2, 200 steps, batch 32, seed 0; ``calibrated_on``). Expected
size before finalize (budget 0.1 / 0.5): ``gate_lr`` 0.1, ``lagrangian_lr`` 0.5: 0.179 / -;
``gate_lr`` 0.25, 0.5: 0.265 / 0.415; 0.1, 2.0: 0.064 / 0.184; 0.1, 1.0 (default): 0.107 /
0.241. So at budget 0.1 the gates reach the target, at 0.5 they overshoot below it (the
warning below fires, and ``fill_to_budget`` adds the highest-valued pruned components back);
no single step size met both budgets in these runs. At ``finalize`` the expected
size ``s`` is compared with the budget: when ``|s - t| > target_tolerance`` (default 0.05
absolute) the method logs a warning and the record says so (``result.gates_reached_target``
false, ``result.expected_size_before_finalize``): the exact budget was then mostly enforced by
``finalize``'s truncation, not by FLOP's Lagrangian. ``remaining_before_finalize`` (the guard
of ``prunebench.method.base``) is the size FLOP's own eval mask keeps, stored as ``finalize`` stores it
(``paper_rule_stored_remaining``: per matrix ``min(r' (in + out), in x out)``, the budget's
count of the model finalize would build from that mask alone; ``paper_rule_remaining``
prices every factor in full, as during training, and can exceed 1).

Initialisation: the FLOP code draws ``log_alpha`` for a mean keep probability of 0.5. With
our short fine-tuning budget (hundreds of steps, not epochs) a model whose gates drop half
of every matrix at random from step one loses much of what fine-tuning learnt; the default
here is ``init_keep = 0.9`` (set 0.5 for the paper's value).

``finalize``:
1. FLOP's eval mask per matrix: ``sigmoid(0.8 log_alpha / beta)`` with the expected number
   of zeros, ``round(r - E[L0])``, forced to zero (the smallest values).
2. Exact budget ("top-k by gate value"): all components are ranked -- first those FLOP's
   mask keeps, by mask value, then (``fill_to_budget``, default) the rest by
   ``sigmoid(0.8 log_alpha / beta)`` -- and the longest prefix whose stored size fits in
   ``budget x dense`` is kept. A matrix keeping ``r'`` components stores
   ``min(r' (in + out), in x out)`` weights (step 3). So when the Lagrangian leaves the model
   above the budget the lowest-valued kept components go, and when it overshoots below the
   budget the highest-valued pruned ones come back (with their mask value); the result lands
   within one component (``in + out`` weights) under the budget. ``paper_rule_remaining`` in
   the record gives the size FLOP's own rule would have kept (factors counted at full price,
   as during training).
3. Each matrix is stored as a ``FactorizedLinear`` of its kept rank with the mask values
   folded into ``P``; a matrix whose factors would be *larger* than ``W``
   (``r' (in + out) >= in x out``) is stored as the dense product instead. The surgery op
   ``factorize`` (kept rank per factorized matrix) is recorded in the config, so the saved
   model reloads with ``checkpoints.load_model``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import count_encoder_weights, dense_encoder_size, prunable_linears
from prunebench.structure.factorized import FactorizedLinear, compact, factorize_svd, set_submodule, to_linear
from prunebench.structure.hard_concrete import HardConcrete
from prunebench.structure.surgery import record_op

#: FLOP's eval-mask temperature factor: ``sigmoid(0.8 log_alpha / beta)``.
EVAL_SCALE = 0.8

log = logging.getLogger("prunebench.methods.flop")


@dataclass(frozen=True)
class FlopSettings:
    beta: float = field(default=1.0, metadata={"help": "hard-concrete temperature (FLOP code: 1.0)"})
    stretch_left: float = field(default=-0.1, metadata={"help": "hard-concrete stretch l (FLOP code: -0.1)"})
    stretch_right: float = field(default=1.1, metadata={"help": "hard-concrete stretch r (FLOP code: 1.1)"})
    init_keep: float = field(
        default=0.9,
        metadata={"help": "initial keep probability of the gates (FLOP code: 0.5; higher for short fine-tuning)"},
    )
    init_std: float = field(default=0.01, metadata={"help": "std of the initial log_alpha (FLOP code: 0.01)"})
    gate_lr: float = field(
        default=0.1,
        metadata={
            "help": "constant AdamW learning rate of the gates' log_alpha "
            "(the method's own optimiser, not the trainer's decaying schedule)"
        },
    )
    lagrangian_lr: float = field(
        default=1.0, metadata={"help": "gradient-ascent step size of the multipliers lambda1, lambda2"}
    )
    ramp_fraction: float = field(
        default=0.5,
        metadata={
            "help": "share of steps over which the target size ramps linearly to the budget "
            "(the rest are left to meet it)"
        },
    )
    target_tolerance: float = field(
        default=0.05,
        metadata={
            "help": "largest |expected size - budget| before finalize that counts as the gates reaching the target; "
            "beyond it a warning is logged and recorded"
        },
    )
    fill_to_budget: bool = field(
        default=True,
        metadata={"help": "at the end, also add back the highest-valued pruned components while the budget allows"},
    )

    def __post_init__(self):
        if not 0.0 < self.ramp_fraction <= 1.0:
            raise ValueError(f"flop: ramp_fraction {self.ramp_fraction} must be in (0, 1]")
        if self.gate_lr <= 0 or self.lagrangian_lr < 0 or self.target_tolerance < 0:
            raise ValueError(
                f"flop: gate_lr ({self.gate_lr}) must be > 0, lagrangian_lr ({self.lagrangian_lr}) "
                f"and target_tolerance ({self.target_tolerance}) >= 0"
            )


@torch.no_grad()
def flop_eval_mask(gate: HardConcrete) -> torch.Tensor:
    """FLOP's deterministic mask: ``sigmoid(0.8 log_alpha / beta)``, expected zeros forced to 0."""
    soft = torch.sigmoid(EVAL_SCALE * gate.log_alpha / gate.beta)
    zeros = int(round(gate.n - float(gate.expected_l0())))
    zeros = min(max(zeros, 0), gate.n)
    if zeros:
        soft[torch.topk(soft, zeros, largest=False).indices] = 0.0
    return soft


@register("flop")
class Flop(PruningMethod):
    """Factorized low-rank pruning with hard-concrete rank gates and an augmented Lagrangian."""

    paper = "Wang, Wohlwend & Lei 2019, Structured Pruning of Large Language Models (arXiv 1910.04732)"
    starts_from = "dense"
    granularity = "matrix-rank"
    Settings = FlopSettings
    finalize_enforcement = "rank components ranked by gate value, trimmed or filled to the exact budget"
    calibrated_on = {"model": "embedded", "task": "sst2", "steps": 200, "batch_size": 32}

    # ----- setup --------------------------------------------------------------------------
    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        s = self.settings
        self.total_steps = plan.total_steps
        self.dense_reference = dense_encoder_size(model.config)
        self.layers: dict[str, FactorizedLinear] = {}
        self.gates: dict[str, HardConcrete] = {}
        self.handles = []
        for name, linear in prunable_linears(model).items():
            fl = factorize_svd(linear)
            set_submodule(model, name, fl)
            gate = HardConcrete(fl.rank, s.beta, s.stretch_left, s.stretch_right, s.init_keep, s.init_std)
            gate.to(fl.in_proj.weight.device)
            self.layers[name], self.gates[name] = fl, gate
            self.handles.append(fl.out_proj.register_forward_pre_hook(self._gate_hook(gate)))
        self.lambda1 = self.lambda2 = 0.0
        self.gate_optimizer = torch.optim.AdamW(self.gate_parameters(), lr=s.gate_lr, weight_decay=0.0)
        self.s0 = float(self.expected_size().detach())
        self._gap = 0.0
        self.history: list[dict[str, float]] = []

    @staticmethod
    def _gate_hook(gate: HardConcrete):
        def hook(module: nn.Module, args):
            z = gate.sample() if module.training else flop_eval_mask(gate)
            return (args[0] * z.to(args[0].dtype),) + tuple(args[1:])

        return hook

    def gate_parameters(self) -> list[nn.Parameter]:
        """The gates' ``log_alpha`` (stepped by the method's own optimiser, see the module docstring)."""
        return [g.log_alpha for g in self.gates.values()]

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return []  # the gates have their own constant-lr optimiser: the trainer's lr decays to 0

    # ----- the augmented Lagrangian -----------------------------------------------------
    def expected_size(self) -> torch.Tensor:
        """``s``: expected encoder weights of the factorized model / dense reference (differentiable)."""
        total = sum(self.gates[n].expected_l0() * (fl.in_features + fl.out_features) for n, fl in self.layers.items())
        return total / self.dense_reference

    def target_at(self, step: int) -> float:
        """``t``: linear ramp from ``s0`` to the budget over ``ramp_fraction`` of the steps."""
        ramp = max(1, int(math.ceil(self.settings.ramp_fraction * self.total_steps)))
        frac = min(1.0, step / ramp)
        return self.s0 + (self.target_remaining - self.s0) * frac

    def penalty(self, model: nn.Module, step: int) -> torch.Tensor:
        s = self.expected_size()
        gap = s - self.target_at(step)
        self._gap = float(gap.detach())
        return self.lambda1 * gap + self.lambda2 * gap * gap

    def after_step(self, model: nn.Module, step: int) -> None:
        # the gates: one step of their own optimiser on the gradients the trainer's backward left
        self.gate_optimizer.step()
        self.gate_optimizer.zero_grad(set_to_none=True)
        # gradient ascent on the multipliers: d/d(lambda1) = (s - t), d/d(lambda2) = (s - t)^2
        eta = self.settings.lagrangian_lr
        self.lambda1 += eta * self._gap
        self.lambda2 += eta * self._gap * self._gap
        if step % 10 == 0 or step == self.total_steps:
            self.history.append(
                {
                    "step": step,
                    "expected_size": self._gap + self.target_at(step),
                    "target": self.target_at(step),
                    "lambda1": self.lambda1,
                    "lambda2": self.lambda2,
                }
            )

    # ----- finalize -----------------------------------------------------------------------
    @torch.no_grad()
    def final_ranks(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Kept component indices and their mask values per matrix, adjusted to the budget.

        Priority: the components FLOP's eval mask keeps, by mask value, then (``fill_to_budget``)
        the others by ``sigmoid(0.8 log_alpha / beta)``; the longest prefix whose cost
        ``sum (in + out)`` fits in ``budget x dense`` is kept.
        """
        names = list(self.gates)
        costs, values, in_flop, owner, index = [], [], [], [], []
        for i, n in enumerate(names):
            gate, layer = self.gates[n], self.layers[n]
            soft = torch.sigmoid(EVAL_SCALE * gate.log_alpha.detach() / gate.beta).cpu()
            values.append(soft)
            in_flop.append(flop_eval_mask(gate).cpu() > 0)
            owner.append(torch.full((gate.n,), i, dtype=torch.long))
            index.append(torch.arange(gate.n))
            costs.append(layer.in_features + layer.out_features)
        values, in_flop = torch.cat(values), torch.cat(in_flop)
        owner, index = torch.cat(owner), torch.cat(index)
        cost = torch.tensor(costs, dtype=torch.float64)[owner]
        candidates = torch.ones_like(in_flop) if self.settings.fill_to_budget else in_flop
        priority = in_flop.double() * 2.0 + values.double()  # FLOP's kept set first, then by value
        order = torch.argsort(priority, descending=True, stable=True)
        order = order[candidates[order]]
        # marginal stored cost of each component in that order: (in + out) while the factors are
        # smaller than W, then what is left up to in x out, then nothing (the matrix is stored dense)
        dense_size = [self.layers[n].in_features * self.layers[n].out_features for n in names]
        counts = [0] * len(names)
        marginal = torch.empty(order.numel(), dtype=torch.float64)
        for j, m in enumerate(owner[order].tolist()):
            counts[m] += 1
            k = counts[m]
            marginal[j] = min(k * costs[m], dense_size[m]) - min((k - 1) * costs[m], dense_size[m])
        allowed = self.target_remaining * self.dense_reference
        keep = order[torch.cumsum(marginal, 0) <= allowed + 1e-6]
        self.paper_rule_remaining = float(cost[in_flop].sum()) / self.dense_reference
        # the same kept set stored as finalize stores it (a matrix never above in x out): the guard's count
        flop_rank = torch.bincount(owner[in_flop], minlength=len(names)).tolist()
        self.paper_rule_stored = (
            sum(min(r * c, d) for r, c, d in zip(flop_rank, costs, dense_size)) / self.dense_reference
        )
        out = {}
        for i, n in enumerate(names):
            sel = keep[owner[keep] == i]
            sel = sel[torch.argsort(index[sel])]
            out[n] = (index[sel], values[sel])
        return out

    def check_target(self) -> dict[str, Any]:
        """Expected size before finalize against the budget; logs a warning beyond ``target_tolerance``."""
        size = float(self.expected_size().detach())
        gap = size - self.target_remaining
        reached = abs(gap) <= self.settings.target_tolerance
        if not reached:
            log.warning(
                "flop: the gates ended at an expected size of %.3f for a budget of %.3f (|gap| %.3f > "
                "tolerance %.3f); finalize's truncation, not FLOP's Lagrangian, enforces the budget",
                size,
                self.target_remaining,
                abs(gap),
                self.settings.target_tolerance,
            )
        return {
            "expected_size_before_finalize": size,
            "target_gap": gap,
            "target_tolerance": self.settings.target_tolerance,
            "gates_reached_target": reached,
        }

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        for h in self.handles:
            h.remove()
        self.handles = []
        target_check = self.check_target()
        kept = self.final_ranks()
        self.remaining_before_finalize = self.paper_rule_stored
        ranks: dict[str, int] = {}
        for name, (idx, val) in kept.items():
            fl = compact(self.layers[name].cpu(), idx, val)
            if fl.stored_weights >= fl.in_features * fl.out_features:
                set_submodule(model, name, to_linear(fl))  # the factors would be larger than W
            else:
                set_submodule(model, name, fl)
                ranks[name] = fl.rank
        record_op(model, "factorize", {"ranks": ranks})
        self.report = {
            "kept_rank": {n: int(idx.numel()) for n, (idx, _) in kept.items()},
            "full_rank": {n: fl.rank for n, fl in self.layers.items()},
            "stored_dense": sorted(set(kept) - set(ranks)),
            "reached_remaining": count_encoder_weights(model).remaining_fraction,
            "final_expected_size": float(self.expected_size().detach()),
            "paper_rule_remaining": self.paper_rule_remaining,
            "paper_rule_stored_remaining": self.paper_rule_stored,
            **target_check,
            "lambda1": self.lambda1,
            "lambda2": self.lambda2,
            "history": self.history,
        }
        self.gates, self.layers, self.gate_optimizer = {}, {}, None
        return model

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if hasattr(self, "report"):
            out["result"] = self.report
        return out
