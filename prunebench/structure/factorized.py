"""Low-rank factorized linear layers (FLOP, Wang et al. 2019, arXiv 1910.04732) and their surgery op.

A weight matrix ``W`` (out x in) is written as ``W = P Q`` with ``P`` (out x r) and ``Q``
(r x in). ``FactorizedLinear`` stores the two factors as two ordinary ``nn.Linear`` layers,

    in_proj  (in -> r, no bias):  weight = Q
    out_proj (r -> out, bias):    weight = P, bias = the original bias,

so ``y = P (Q x) + b`` and a rank-``r`` layer costs ``r (in + out)`` weights and multiply-adds
per token instead of ``in x out``. The factors are 2-D parameters under ``encoder.layer.``, so
``prunebench.structure.budget`` counts their entries like any other encoder weight, against the dense
reference recorded by the surgery.

``factorize_svd`` builds the full-rank factorization from the SVD ``W = U S V^T``, split
symmetrically (``P = U S^1/2``, ``Q = S^1/2 V^T``), computed in float64 so that the factorized
layer reproduces ``W`` to rounding error. FLOP trains a gate ``z_k`` per rank-one component
(``W = P diag(z) Q``); ``compact`` keeps the components with non-zero gates and folds the gate
values into ``P``'s columns.

Surgery op ``factorize`` (registered with ``prunebench.structure.surgery``): args
``{"ranks": {module_name: r}}`` replaces each named ``nn.Linear`` of a freshly built
dense-shaped model by an (uninitialised) rank-``r`` ``FactorizedLinear`` of the same in/out
size, so ``checkpoints.load_model`` can rebuild the shapes before loading the weights.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from prunebench.structure.surgery import surgery_op


class FactorizedLinear(nn.Module):
    """``y = out_proj(in_proj(x))``: a rank-``rank`` linear map ``in_features -> out_features``."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = int(in_features), int(out_features), int(rank)
        with warnings.catch_warnings():  # rank 0 (every component pruned) is legal: no zero-size init warning
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            self.in_proj = nn.Linear(self.in_features, self.rank, bias=False)
            self.out_proj = nn.Linear(self.rank, self.out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.in_proj(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"

    @property
    def stored_weights(self) -> int:
        """Weights stored by the two factors: ``rank x (in + out)``."""
        return self.rank * (self.in_features + self.out_features)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """The dense ``out x in`` matrix ``P Q`` the factors represent."""
        return self.out_proj.weight @ self.in_proj.weight


@torch.no_grad()
def factorize_svd(linear: nn.Linear) -> FactorizedLinear:
    """The full-rank (``min(out, in)``) factorization of ``linear``; equal to it up to rounding."""
    w = linear.weight.detach()
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    root = s.sqrt()
    out_features, in_features = w.shape
    fl = FactorizedLinear(in_features, out_features, s.numel(), bias=linear.bias is not None)
    fl.to(device=w.device, dtype=w.dtype)
    fl.out_proj.weight.copy_((u * root).to(w.dtype))
    fl.in_proj.weight.copy_((root[:, None] * vh).to(w.dtype))
    if linear.bias is not None:
        fl.out_proj.bias.copy_(linear.bias.detach())
    return fl


@torch.no_grad()
def compact(fl: FactorizedLinear, keep: torch.Tensor, scale: torch.Tensor | None = None) -> FactorizedLinear:
    """A smaller ``FactorizedLinear`` with only components ``keep`` (indices), ``scale`` folded into P."""
    keep = keep.to(device=fl.in_proj.weight.device, dtype=torch.long)
    out = FactorizedLinear(fl.in_features, fl.out_features, keep.numel(), bias=fl.out_proj.bias is not None)
    out.to(device=fl.in_proj.weight.device, dtype=fl.in_proj.weight.dtype)
    p = fl.out_proj.weight[:, keep]
    if scale is not None:
        p = p * scale.to(p)[None, :]
    out.out_proj.weight.copy_(p)
    out.in_proj.weight.copy_(fl.in_proj.weight[keep, :])
    if fl.out_proj.bias is not None:
        out.out_proj.bias.copy_(fl.out_proj.bias)
    return out


@torch.no_grad()
def to_linear(fl: FactorizedLinear) -> nn.Linear:
    """The dense ``nn.Linear`` equal to ``fl`` (used when the factors would be larger than ``W``)."""
    lin = nn.Linear(fl.in_features, fl.out_features, bias=fl.out_proj.bias is not None)
    lin.to(device=fl.in_proj.weight.device, dtype=fl.in_proj.weight.dtype)
    lin.weight.copy_(fl.merged_weight())
    if fl.out_proj.bias is not None:
        lin.bias.copy_(fl.out_proj.bias)
    return lin


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def factorized_layers(model: nn.Module) -> dict[str, FactorizedLinear]:
    """Every ``FactorizedLinear`` of ``model`` by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, FactorizedLinear)}


@surgery_op("factorize")
def _factorize_op(model: nn.Module, args: dict[str, Any]) -> None:
    """Surgery op: replace each named ``nn.Linear`` by a rank-``r`` ``FactorizedLinear`` shell."""
    for name, rank in args["ranks"].items():
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"surgery op 'factorize': {name} is a {type(linear).__name__}, expected nn.Linear")
        fl = FactorizedLinear(linear.in_features, linear.out_features, int(rank), bias=linear.bias is not None)
        fl.to(device=linear.weight.device, dtype=linear.weight.dtype)
        set_submodule(model, name, fl)
