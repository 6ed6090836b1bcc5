"""L0 head gates (Voita, Talbot, Moiseev, Sennrich & Titov 2019, arXiv 1905.09418).

Each attention head ``h`` of layer ``l`` gets a scalar hard-concrete gate ``g_lh``
(``prunebench.structure.hard_concrete``; the constants of Voita et al.'s code: temperature 0.33,
stretch (-0.1, 1.1)) multiplying its context vector before the attention output projection
(``prunebench.structure.surgery.head_gate_hooks``). A fresh gate sample is drawn at every forward pass
in training; in eval mode the deterministic gate (Louizos et al. Eq. 13) is used. The loss
is Voita et al.'s ``L_task + lambda * sum_h (1 - P(g_h = 0))`` (the ``penalty`` hook; the sum
is ``HardConcrete.expected_l0``), and the gates' ``log_alpha`` are one extra AdamW group
(``parameter_groups``, lr ``gate_lr``, no weight decay).

Reaching the common budget. Voita et al. tune lambda by hand per run; here the number of
heads to keep follows from the budget. A head owns ``4 x hidden x d_head`` encoder weights
(its Q, K, V rows and attention-output columns); the feed-forward matrices are not
prunable by this method. The target number of kept heads ``k`` is the largest with
``(dense - (H - k) x 4 x hidden x d_head) / dense <= budget`` (never above the budget, like
the other methods), but at least ``min_head_fraction x H``. lambda is then controlled instead of tuned (``control``):

- ``"lagrangian"`` (default): dual ascent on the constraint "expected open heads <= target":
  after every step ``lambda <- max(0, lambda + lambda_lr x (E[open] - k_t) / H)``, where the
  target ``k_t`` ramps linearly from ``H`` to ``k`` over ``ramp_fraction`` of the steps;
  lambda starts at ``lambda_init``. The penalty keeps Voita's form (lambda >= 0 times the
  expected L0); only its weight moves.
- ``"fixed"``: lambda stays at ``lambda_init`` (Voita's setting; ~0.1 in their code).

Expected versus deterministic count. The Lagrangian constrains the *expected* number of open
gates (the differentiable L0 term), not the number of heads whose deterministic test-time
gate is non-zero, which is what ``finalize`` keeps. The two differ: at temperature 0.33 a
gate whose test-time value is 0 (``sigmoid(log_alpha) <= -l / (r - l) = 1/12``) is still open
in training with probability up to ~0.17, so the expected count can sit at ``k`` while almost
every head is shut (e.g. all ``log_alpha`` at -2.45 give 1.28 expected open heads of
``k = 2`` on the tiny model, and 0 deterministic ones). The dual ascent keeps the expected
count, Voita's objective (the deterministic count is a step function of ``log_alpha``, so
it gives lambda no graded signal near the end); ``finalize`` reconciles the two counts.

``finalize`` keeps exactly ``k`` heads. It fixes every gate to its deterministic value, then:

- more than ``k`` heads open: closes the open heads with the smallest ``log_alpha`` until
  ``k`` remain (so the target is never exceeded);
- fewer than ``k`` open: reopens the closed heads with the largest ``log_alpha`` until ``k``
  are open (so ``min_head_fraction`` of the heads is kept when the budget is out of reach).
  A reopened head's deterministic value is 0, so it gets its *mean training gate*
  ``E[z]`` (a fixed-seed Monte-Carlo mean of ``REOPEN_SAMPLES`` hard-concrete samples):
  what the model saw from that head on average during training; if even that is 0 (a
  gate shut for good), ``1 - P(z = 0)``.

The gate values are folded into the attention output projection (for heads that were not
reopened, exactly what the gated model computed in eval mode), and the closed heads are
removed physically (``surgery.remove_heads``, which records the op for reloading; a layer
may lose all its heads). ``remaining_before_finalize`` (the guard of ``prunebench.method.base``) is the
fraction the deterministic gates alone would have kept (every closed head removed) and
``result.deterministic_open_heads`` their count, so the record shows how many heads
``finalize`` reopened or closed.

Budgets below what head removal can reach. With the feed-forward matrices fixed, removing
every head of BERT leaves 2/3 of the encoder weights, so budgets such as 0.5 or 0.1 cannot
be met: the method then keeps ``min_head_fraction`` of the heads and the record's
``encoder_remaining`` (measured from the weights) shows the fraction actually reached,
which is above the budget. ``describe()`` reports the target and reached fractions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import count_encoder_weights, dense_encoder_size
from prunebench.structure.hard_concrete import HardConcrete
from prunebench.structure.surgery import encoder_layers, head_gate_hooks, remove_heads

#: Samples of the Monte-Carlo mean gate of a reopened head (fixed seed: deterministic).
REOPEN_SAMPLES = 4096


@dataclass(frozen=True)
class HeadL0Settings:
    temperature: float = field(
        default=0.33, metadata={"help": "hard-concrete temperature beta (Voita et al.'s code: 0.33)"}
    )
    stretch_left: float = field(default=-0.1, metadata={"help": "hard-concrete stretch l (Voita et al.'s code: -0.1)"})
    stretch_right: float = field(default=1.1, metadata={"help": "hard-concrete stretch r (Voita et al.'s code: 1.1)"})
    init_keep: float = field(
        default=0.9,
        metadata={"help": "initial sigmoid(log_alpha) of every gate (near 1: start from the trained model)"},
    )
    gate_lr: float = field(default=0.1, metadata={"help": "peak AdamW learning rate of the gates' log_alpha"})
    control: str = field(
        default="lagrangian",
        metadata={"help": "'lagrangian' (lambda by dual ascent towards the head target) or 'fixed'"},
    )
    lambda_init: float = field(
        default=0.0, metadata={"help": "initial lambda (the value used throughout with control='fixed'; Voita ~0.1)"}
    )
    lambda_lr: float = field(default=1.0, metadata={"help": "dual-ascent step size of lambda ('lagrangian')"})
    ramp_fraction: float = field(
        default=0.6, metadata={"help": "share of steps over which the head target ramps from all heads to k"}
    )
    min_head_fraction: float = field(
        default=0.2,
        metadata={
            "help": "share of heads always kept (Voita et al. keep 10 of 48 encoder heads); 0 allows removing all"
        },
    )


def head_weights(config) -> int:
    """Encoder weights owned by one head: its Q, K, V rows and attention-output columns."""
    d_head = config.hidden_size // config.num_attention_heads
    return 4 * config.hidden_size * d_head


def target_heads(config, budget: float, min_fraction: float) -> int:
    """Most heads that keep the remaining fraction <= ``budget``, but at least the floor."""
    total = config.num_hidden_layers * config.num_attention_heads
    dense = dense_encoder_size(config)
    per_head = head_weights(config)
    # remaining(k) = 1 - (total - k) * per_head / dense <= budget  <=>  k <= total - (1 - budget) dense / per_head
    k = math.floor(total - (1.0 - budget) * dense / per_head + 1e-9)
    floor = math.ceil(min_fraction * total - 1e-9)
    return int(min(total, max(k, floor, 0)))


@register("head_l0")
class HeadL0(PruningMethod):
    """Hard-concrete L0 gates on attention heads; closed heads are removed."""

    paper = "Voita et al. 2019, Analyzing Multi-Head Self-Attention (arXiv 1905.09418)"
    starts_from = "dense"
    granularity = "head"
    Settings = HeadL0Settings
    finalize_enforcement = (
        "exactly k heads kept: open heads beyond k closed (lowest log_alpha), "
        "closed heads reopened up to k (highest log_alpha)"
    )

    def __init__(self, target_remaining: float, settings: dict[str, Any] | None = None):
        super().__init__(target_remaining, settings)
        if self.settings.control not in ("lagrangian", "fixed"):
            raise ValueError(
                f"method 'head_l0': control must be 'lagrangian' or 'fixed', got {self.settings.control!r}"
            )

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        s = self.settings
        config = model.config
        self.total_steps = plan.total_steps
        layers = encoder_layers(model)
        self.n_heads = [int(layer.attention.self.num_attention_heads) for layer in layers]
        if len(set(self.n_heads)) != 1 or self.n_heads[0] != config.num_attention_heads:
            raise ValueError("method 'head_l0' expects an uncompacted model (every layer with all its heads)")
        self.total_heads = sum(self.n_heads)
        self.k = target_heads(config, self.target_remaining, s.min_head_fraction)
        device = next(model.parameters()).device
        self.gates = [
            HardConcrete(n, s.temperature, s.stretch_left, s.stretch_right, s.init_keep).to(device)
            for n in self.n_heads
        ]
        self.lam = float(s.lambda_init)
        self._open = float(self.total_heads)

        def sampler(layer: nn.Module, gate: HardConcrete):
            return lambda: gate.sample() if layer.training else gate.eval_gate()

        self.handles = head_gate_hooks(
            model, [sampler(layer.attention.output, g) for layer, g in zip(layers, self.gates)]
        )
        self.history: list[dict[str, float]] = []

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": [g.log_alpha for g in self.gates], "lr": self.settings.gate_lr, "weight_decay": 0.0}]

    def expected_open(self) -> torch.Tensor:
        """``sum_h (1 - P(g_h = 0))``: Voita et al.'s L0 term (differentiable)."""
        return sum(g.expected_l0() for g in self.gates)

    def target_at(self, step: int) -> float:
        ramp = max(1, int(math.ceil(self.settings.ramp_fraction * self.total_steps)))
        return self.total_heads + (self.k - self.total_heads) * min(1.0, step / ramp)

    def penalty(self, model: nn.Module, step: int) -> torch.Tensor:
        l0 = self.expected_open()
        self._open = float(l0.detach())
        return self.lam * l0

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.settings.control == "lagrangian":
            gap = (self._open - self.target_at(step)) / self.total_heads
            self.lam = max(0.0, self.lam + self.settings.lambda_lr * gap)
        if step % 10 == 0 or step == self.total_steps:
            self.history.append(
                {"step": step, "expected_open_heads": self._open, "target": self.target_at(step), "lambda": self.lam}
            )

    @torch.no_grad()
    def reopen_values(self) -> torch.Tensor:
        """Gate value of each head if reopened: mean training gate ``E[z]``, else ``1 - P(z = 0)``."""
        generator = torch.Generator().manual_seed(0)
        means, probs = [], []
        for g in self.gates:
            gate = HardConcrete(g.n, g.beta, g.l, g.r, log_alpha=g.log_alpha.detach().cpu())  # a CPU copy
            means.append(torch.stack([gate.sample(generator) for _ in range(REOPEN_SAMPLES)]).mean(0))
            probs.append(g.prob_open().detach().cpu())
        mean, prob = torch.cat(means), torch.cat(probs)
        return torch.where(mean > 0, mean, prob)

    @torch.no_grad()
    def final_gates(self) -> list[torch.Tensor]:
        """Exactly ``k`` heads: deterministic gates, trimmed (lowest ``log_alpha``) or reopened (highest)."""
        flat = torch.cat([g.eval_gate().detach().cpu().clone() for g in self.gates])
        alphas = torch.cat([g.log_alpha.detach().cpu() for g in self.gates])
        self.deterministic_open = int((flat > 0).sum())
        open_idx = torch.nonzero(flat > 0).flatten()
        if open_idx.numel() > self.k:
            order = open_idx[torch.argsort(alphas[open_idx], stable=True)]
            flat[order[: open_idx.numel() - self.k]] = 0.0
        elif open_idx.numel() < self.k:
            shut_idx = torch.nonzero(flat == 0).flatten()
            order = shut_idx[torch.argsort(alphas[shut_idx], descending=True, stable=True)]
            chosen = order[: self.k - open_idx.numel()]
            flat[chosen] = self.reopen_values()[chosen]
        return list(torch.split(flat, self.n_heads))

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        for h in self.handles:
            h.remove()
        self.handles = []
        gates = self.final_gates()
        layers = encoder_layers(model)
        closed: dict[int, list[int]] = {}
        for l, (layer, g) in enumerate(zip(layers, gates)):
            dense = layer.attention.output.dense
            size = dense.in_features // self.n_heads[l]
            dense.weight.mul_(g.to(dense.weight).repeat_interleave(size)[None, :])  # fold the gate values in
            shut = torch.nonzero(g == 0).flatten().tolist()
            if shut:
                closed[l] = shut
        if closed:
            remove_heads(model, closed)
        kept = self.total_heads - sum(len(v) for v in closed.values())
        per_head = head_weights(model.config) / dense_encoder_size(model.config)
        # what the deterministic gates alone kept: every shut head removed (the guard, prunebench.method.base)
        self.remaining_before_finalize = 1.0 - (self.total_heads - self.deterministic_open) * per_head
        self.report = {
            "target_heads": self.k,
            "kept_heads": kept,
            "deterministic_open_heads": self.deterministic_open,
            "total_heads": self.total_heads,
            "heads_kept_per_layer": [self.n_heads[l] - len(closed.get(l, [])) for l in range(len(self.n_heads))],
            "reachable_min_remaining": 1.0
            - self.total_heads * head_weights(model.config) / dense_encoder_size(model.config),
            "reached_remaining": count_encoder_weights(model).remaining_fraction,
            "budget_met": count_encoder_weights(model).remaining_fraction <= self.target_remaining + 1e-9,
            "final_lambda": self.lam,
            "history": self.history,
        }
        self.gates = []
        return model

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if hasattr(self, "report"):
            out["result"] = self.report
        return out
