"""Hard-concrete gates (Louizos, Welling & Kingma 2018, arXiv 1712.01312), shared by the L0 methods.

A ``HardConcrete`` module holds ``n`` gates, each with a learnable location ``log_alpha``, a
fixed temperature ``beta`` and a fixed stretch interval ``(l, r)`` with ``l < 0 < 1 < r``
(the paper's gamma and zeta).

- Training sample (Louizos et al. Sec. 4, Eq. 10): ``u ~ U(0, 1)``,
  ``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)``, stretched ``s_bar = s (r - l) + l``,
  gate ``z = min(1, max(0, s_bar))``. Because the stretched interval overshoots [0, 1], exact
  zeros and exact ones occur with non-zero probability, and ``z`` is differentiable in
  ``log_alpha`` wherever it is strictly inside (0, 1) (reparameterisation trick).
- Probability that a gate is non-zero (Eq. 12, the expected L0 norm term):
  ``P(z != 0) = sigmoid(log_alpha - beta * log(-l / r))``; ``expected_l0()`` is its sum.
- Deterministic test-time gate (Eq. 13): ``z_hat = min(1, max(0, sigmoid(log_alpha) (r - l) + l))``.

Methods that use these gates pick their own constants: Voita et al. 2019 (heads) use
``beta = 0.33, (l, r) = (-0.1, 1.1)``; Wang et al. 2019 (FLOP) ``beta = 1.0`` with the same
stretch; Sanh et al. 2020 ``beta = 2/3``. Initialisation follows the FLOP code's convention of
an initial *keep* probability ``p``: ``log_alpha ~ N(log(p / (1 - p)), init_std)`` (FLOP's
``init_mean`` is the drop rate ``1 - p``; ``p = 0.5`` gives ``log_alpha ~ 0`` in both).

The gate parameters are deliberately *not* attached to the pruned model: a method keeps its
``HardConcrete`` modules and hands ``log_alpha`` to the trainer through
``parameter_groups``, so the trainer never sees them twice and ``finalize`` can drop them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Numerical guard for ``u`` in ``log u - log(1 - u)``.
_EPS = 1e-6


def logit(p: float) -> float:
    """``log(p / (1 - p))``: the ``log_alpha`` whose plain sigmoid is ``p``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a keep probability must lie in (0, 1), got {p}")
    return math.log(p) - math.log1p(-p)


class HardConcrete(nn.Module):
    """``n`` hard-concrete gates with learnable ``log_alpha`` (Louizos et al. 2018)."""

    def __init__(
        self,
        n: int,
        beta: float = 2.0 / 3.0,
        l: float = -0.1,
        r: float = 1.1,
        init_keep: float = 0.5,
        init_std: float = 0.01,
        log_alpha: torch.Tensor | None = None,
    ):
        super().__init__()
        if not (l < 0.0 and r > 1.0):
            raise ValueError(f"the stretch interval must satisfy l < 0 < 1 < r, got ({l}, {r})")
        if beta <= 0:
            raise ValueError(f"the temperature beta must be positive, got {beta}")
        self.n, self.beta, self.l, self.r = int(n), float(beta), float(l), float(r)
        if log_alpha is None:
            log_alpha = torch.empty(self.n).normal_(logit(init_keep), init_std)
        self.log_alpha = nn.Parameter(log_alpha.detach().clone().float().reshape(self.n))

    def extra_repr(self) -> str:
        return f"n={self.n}, beta={self.beta}, l={self.l}, r={self.r}"

    # ----- Eq. 10: the reparameterised training sample ----------------------------------
    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One differentiable sample of the ``n`` gates, each in [0, 1] (exact 0 and 1 occur)."""
        u = torch.rand(self.n, generator=generator, device=self.log_alpha.device).clamp(_EPS, 1.0 - _EPS)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return (s * (self.r - self.l) + self.l).clamp(0.0, 1.0)

    # ----- Eq. 13: the deterministic test-time gate -------------------------------------
    def eval_gate(self) -> torch.Tensor:
        """Louizos et al.'s test-time estimator ``min(1, max(0, sigmoid(log_alpha)(r - l) + l))``."""
        return (torch.sigmoid(self.log_alpha) * (self.r - self.l) + self.l).clamp(0.0, 1.0)

    def forward(self) -> torch.Tensor:
        """A sample in training mode, the deterministic gate in eval mode."""
        return self.sample() if self.training else self.eval_gate()

    # ----- Eq. 12: the expected L0 norm -------------------------------------------------
    def prob_open(self) -> torch.Tensor:
        """``P(z != 0) = sigmoid(log_alpha - beta log(-l / r))`` per gate (differentiable)."""
        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.l / self.r))

    def expected_l0(self) -> torch.Tensor:
        """Expected number of non-zero gates, ``sum_j P(z_j != 0)`` (differentiable)."""
        return self.prob_open().sum()
