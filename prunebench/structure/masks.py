"""Element-wise masks on the encoder's linear weights: choose, apply, keep applied.

Shared by every unstructured method. A mask keeps exactly ``round(remaining * n)`` entries
(top-k by score, ties broken by index), either over all encoder matrices at once
("global") or per matrix ("local", i.e. layer-wise / matrix-local as in Gordon et al. 2020).
"""

from __future__ import annotations

import torch
from torch import nn

SCOPES = ("global", "local")


def topk_masks(scores: dict[str, torch.Tensor], remaining: float, scope: str) -> dict[str, torch.Tensor]:
    """Boolean masks keeping the highest-scoring ``remaining`` fraction of entries."""
    if scope not in SCOPES:
        raise ValueError(f"unknown mask scope {scope!r}; expected one of {SCOPES}")
    if scope == "local":
        return {name: _topk_mask(s, round(remaining * s.numel())) for name, s in scores.items()}
    flat = torch.cat([s.detach().flatten().float() for s in scores.values()])
    keep = _topk_mask(flat, round(remaining * flat.numel()))
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


def _topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        mask[torch.topk(scores.detach().flatten().float(), k, sorted=False).indices] = True
    return mask.view_as(scores)


@torch.no_grad()
def apply_masks(linears: dict[str, nn.Linear], masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked-out weights in place."""
    for name, module in linears.items():
        module.weight.mul_(masks[name].to(device=module.weight.device, dtype=module.weight.dtype))


def per_matrix_fraction(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Fraction kept per matrix, for reports and matched-proportion baselines."""
    return {name: float(m.float().mean()) for name, m in masks.items()}
