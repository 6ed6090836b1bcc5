"""SparseGPT: one-shot pruning with OBS weight reconstruction (Frantar & Alistarh 2023, arXiv 2301.00774).

Per Linear layer with calibration inputs X (real tokens only), the layer-wise problem
min ||W X - W' X||^2 is solved approximately (Sec. 3, Alg. 1; IST-DASLab/sparsegpt ``fasterprune``):

1. Hessian H = (2/n) sum_t x_t x_t^T, damped with 1% of mean(diag H); inputs that are never
   active (diag 0) get H_jj = 1 and their weights are zeroed.
2. Hinv = upper Cholesky factor of H^-1 (Sec. 3.3: the rows of the Cholesky factor are the
   successive inverses after eliminating earlier columns).
3. Columns in blocks of 128 (``block_size``); in each block the mask is chosen adaptively
   (Sec. 3.3, "adaptive mask selection"): the lowest w^2 / [Hinv]_jj^2 over the block are pruned.
   Then column by column (Alg. 1): err = (w_j - q_j) / [Hinv]_jj (q_j = 0 if pruned, else w_j),
   W[:, j:] -= err * Hinv[j, j:]; after the block, W[:, end:] -= Err * Hinv[block, end:].

With ``pattern: "2:4"`` the mask is chosen per group of 4 columns when the loop reaches it
(lowest 2 of every 4 by the same score; Sec. 3.4).

Sparsity is uniform per layer (the paper's setting): each matrix keeps ``round(r * numel)``
weights; each block prunes its cumulative share so the matrix total is exact.

Sequential (Sec. 3.4, ``opt_sequential``): encoder layers are pruned one after the other,
and the inputs of layer l are computed with layers < l already pruned and updated; the six
Linears of one layer are pruned together from one pass (as the reference code does per
block). Calibration: ``calibration_examples`` training examples (default 512; the paper
uses 128 x 2048 tokens of C4, see methods/wanda.py). Then the common fine-tuning budget
with the mask fixed (``finetune: false`` keeps the one-shot weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from methods.semi_structured import OneShotPruning, OneShotSettings
from prunebench.method.base import TrainingPlan
from prunebench.method.registry import register
from prunebench.training.calibration import collect_layer_inputs, linears_by_layer


@dataclass(frozen=True)
class SparseGPTSettings(OneShotSettings):
    calibration_examples: int = field(
        default=512,
        metadata={"help": "training examples whose tokens form the input Hessian (paper: 128 x 2048 tokens)"},
    )
    calibration_batch_size: int = field(default=32, metadata={"help": "examples per calibration forward pass"})
    block_size: int = field(
        default=128, metadata={"help": "columns per lazy-update block and per adaptive mask selection (paper: 128)"}
    )
    damping: float = field(
        default=0.01, metadata={"help": "dampening added to diag(H), as a fraction of mean(diag H) (paper: 1%)"}
    )
    pattern: str = field(
        default="unstructured", metadata={"help": "'unstructured' or '2:4' (N:M, 2 of every 4 inputs kept)"}
    )


def damped_hessian(hessian: torch.Tensor, weight: torch.Tensor, damping: float) -> torch.Tensor:
    """H + damping * mean(diag H) * I, with dead inputs (H_jj = 0) set to 1 and their weights zeroed in place."""
    H = hessian.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    weight[:, dead] = 0.0
    H.diagonal().add_(damping * torch.mean(torch.diag(H)))
    return H


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    remaining: float,
    block_size: int = 128,
    damping: float = 0.01,
    nm: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (Alg. 1) on one matrix: returns (updated weight, keep-mask); the inputs are not modified.

    ``hessian`` is (2/n) sum x x^T over the layer's calibration inputs; ``remaining`` the
    fraction kept (ignored when ``nm`` = (N kept, M) is given).
    """
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"Hessian of shape {tuple(hessian.shape)} does not match a weight with {cols} input features")
    W = weight.detach().clone().float()
    H = damped_hessian(hessian.float(), W, damping)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    keep = torch.ones_like(W, dtype=torch.bool)
    to_prune_total = rows * cols - round(remaining * rows * cols)
    pruned = 0
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)
        Err1 = torch.zeros_like(W1)
        prune1 = torch.zeros_like(W1, dtype=torch.bool)
        if nm is None:  # adaptive mask over the block, cumulative share of the matrix total
            k = round(to_prune_total * i2 / cols) - pruned
            if k > 0:
                score = W1.pow(2) / d.pow(2).unsqueeze(0)
                prune1.view(-1)[torch.topk(score.flatten(), k, largest=False).indices] = True
            pruned += k
        for j in range(i2 - i1):
            if nm is not None and j % nm[1] == 0:
                score = W1[:, j : j + nm[1]].pow(2) / d[j : j + nm[1]].pow(2).unsqueeze(0)
                idx = torch.topk(score, nm[1] - nm[0], dim=1, largest=False).indices
                prune1.scatter_(1, j + idx, True)
            w = W1[:, j]
            q = torch.where(prune1[:, j], torch.zeros_like(w), w)
            err = (w - q) / d[j]
            W1[:, j:] -= err.unsqueeze(1) * Hinv1[j, j:].unsqueeze(0)
            W1[:, j] = q
            Err1[:, j] = err
        W[:, i1:i2] = W1
        keep[:, i1:i2] = ~prune1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    W[~keep] = 0.0
    return W.to(weight.dtype), keep


@register("sparsegpt")
class SparseGPT(OneShotPruning):
    """SparseGPT (Frantar & Alistarh 2023).

    Layer-wise OBS reconstruction, one-shot, then fine-tuning with a fixed mask.
    """

    paper = "Frantar & Alistarh 2023, SparseGPT (arXiv 2301.00774)"
    Settings = SparseGPTSettings

    def prune_oneshot(self, model: nn.Module, plan: TrainingPlan) -> dict[str, torch.Tensor]:
        s = self.settings
        if s.block_size <= 0 or s.damping < 0:
            raise ValueError(f"sparsegpt: block_size must be > 0 and damping >= 0, got {s.block_size} and {s.damping}")
        calibration = self.draw_calibration(plan)
        nm = self.pattern()
        masks: dict[str, torch.Tensor] = {}
        for layer in linears_by_layer(self.linears):
            sums = {n: torch.zeros(m.in_features, m.in_features, device=m.weight.device) for n, m in layer.items()}
            tokens = {n: 0 for n in layer}

            def accumulate(name: str, x: torch.Tensor) -> None:
                sums[name].addmm_(x.t(), x)
                tokens[name] += x.shape[0]

            collect_layer_inputs(model, layer, calibration, accumulate)
            for name, module in layer.items():
                hessian = sums[name] * (2.0 / max(1, tokens[name]))
                new_weight, masks[name] = sparsegpt_prune(
                    module.weight, hessian, self.target_remaining, s.block_size, s.damping, nm
                )
                with torch.no_grad():
                    module.weight.copy_(new_weight)
        return masks

    def describe(self) -> dict:
        out = super().describe()
        out["sequential"] = "layer by layer; inputs of layer l computed with layers < l pruned and updated"
        return out
