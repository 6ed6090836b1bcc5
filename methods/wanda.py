"""Wanda: pruning by weights and activations (Sun et al. 2023, arXiv 2306.11695).

Score (Sun et al. Eq. 1): S_ij = |W_ij| * ||X_j||_2, where X_j is input feature j of the
Linear layer over all calibration tokens (real tokens only: padding is removed with the
attention mask). Comparison group (Sec. 3, "per output"): within each output row i the
lowest-scoring weights are removed, so every row keeps the same share; no weight update.
With ``pattern: "2:4"`` the lowest 2 of every 4 consecutive inputs of a row are removed
(the paper's N:M variant).

Calibration (paper: 128 sequences x 2048 tokens of C4). Here the calibration examples come
from the task's training split (``calibration_examples``, default 512: SST-2-like sentences
are ~10-25 tokens, so 512 examples give ~5-10k tokens, against 262k in the paper; 128 would
give fewer tokens than the feed-forward layers have input features). Which examples were
used is in ``describe()["calibration_data"]``.

Sequential, like the reference code (locuslab/wanda ``prune_wanda``): encoder layers are
pruned one after the other, and the inputs of layer l are collected with layers < l already
pruned; the six Linears of a layer are pruned together from one pass (as the reference code
does within a block). The norms are exact sums over tokens, so the order only matters
through the already pruned layers below.

Budget: ``round(r * d_in)`` weights are kept per row; the few rows that keep one weight
more (so a matrix keeps exactly ``round(r * rows * d_in)``) are those whose next weight
scores highest. Then the common fine-tuning budget with the mask fixed (``wanda``), or
none (``wanda_oneshot``: the one-shot weights saved at ``prepare`` are restored in
``finalize``, the paper's setting: "no retraining").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from methods.semi_structured import OneShotPruning, OneShotSettings, nm_mask
from prunebench.method.base import TrainingPlan
from prunebench.method.registry import register
from prunebench.training.calibration import collect_layer_inputs, linears_by_layer


@dataclass(frozen=True)
class WandaSettings(OneShotSettings):
    calibration_examples: int = field(
        default=512,
        metadata={
            "help": "training examples whose tokens calibrate the input norms (paper: 128 x 2048-token sequences)"
        },
    )
    calibration_batch_size: int = field(default=32, metadata={"help": "examples per calibration forward pass"})
    pattern: str = field(
        default="unstructured",
        metadata={"help": "'unstructured' (per-row top-k) or '2:4' (N:M, keep 2 of every 4 inputs)"},
    )


@dataclass(frozen=True)
class WandaOneShotSettings(WandaSettings):
    finetune: bool = field(
        default=False, metadata={"help": "false: the record is the one-shot model without fine-tuning"}
    )


def wanda_scores(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2 (Sun et al. Eq. 1), from the squared input norms sum_t x_tj^2."""
    if input_sq_norms.shape != (weight.shape[1],):
        raise ValueError(
            f"input norms of shape {tuple(input_sq_norms.shape)} do not match a weight with "
            f"{weight.shape[1]} input features"
        )
    return weight.detach().abs().float() * input_sq_norms.float().clamp_min(0).sqrt().unsqueeze(0)


def rowwise_mask(scores: torch.Tensor, remaining: float) -> torch.Tensor:
    """Keep the top ``remaining`` share of each row; exactly ``round(remaining * numel)`` in all.

    Every row keeps ``floor(remaining * cols)``; the leftover weights go, one per row, to the
    rows whose next-best weight scores highest (ties: lower row index).
    """
    rows, cols = scores.shape
    total = round(remaining * scores.numel())
    base = min(cols, total // rows)
    order = torch.argsort(scores.float(), dim=1, descending=True, stable=True)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep.scatter_(1, order[:, :base], True)
    extra = total - base * rows
    if extra > 0:
        nxt = scores.gather(1, order[:, base : base + 1]).squeeze(1).float()
        chosen = torch.argsort(nxt, descending=True, stable=True)[:extra]
        keep[chosen, order[chosen, base]] = True
    return keep


@register("wanda")
class Wanda(OneShotPruning):
    """Wanda (Sun et al. 2023): |W| x input-norm scores per output row, one-shot, then fine-tuning with a fixed mask."""

    paper = "Sun et al. 2023, A Simple and Effective Pruning Approach for LLMs (arXiv 2306.11695)"
    Settings = WandaSettings

    def prune_oneshot(self, model: nn.Module, plan: TrainingPlan) -> dict[str, torch.Tensor]:
        calibration = self.draw_calibration(plan)
        nm = self.pattern()
        masks: dict[str, torch.Tensor] = {}
        for layer in linears_by_layer(self.linears):
            norms = {name: torch.zeros(m.in_features, device=m.weight.device) for name, m in layer.items()}
            collect_layer_inputs(model, layer, calibration, lambda name, x: norms[name].add_(x.pow(2).sum(0)))
            for name, module in layer.items():
                scores = wanda_scores(module.weight, norms[name])
                masks[name] = nm_mask(scores, *nm) if nm else rowwise_mask(scores, self.target_remaining)
                with torch.no_grad():
                    module.weight.mul_(masks[name].to(module.weight.dtype))
        return masks

    def describe(self) -> dict:
        out = super().describe()
        out["sequential"] = "layer by layer; inputs of layer l computed with layers < l pruned"
        return out


@register("wanda_oneshot")
class WandaOneShot(Wanda):
    """Wanda without fine-tuning (the paper's setting): the one-shot weights are the record."""

    Settings = WandaOneShotSettings
