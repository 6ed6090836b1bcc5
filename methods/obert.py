"""oBERT: the Optimal BERT Surgeon (Kurtic et al. 2022, arXiv 2203.07259).

Gradual second-order pruning during fine-tuning (Sec. 3; neuralmagic/sparseml
``modifier_pruning_obs.py``):

- Empirical Fisher, block-diagonal (Sec. 3.1, Eq. 4): F = damp * I + (1/m) sum_k g_k g_k^T
  over m loss gradients, restricted to blocks of B consecutive weights (paper: 50) of each
  flattened matrix (the last block zero-padded).
- Its inverse by m Woodbury (Sherman-Morrison) rank-1 updates starting from I / damp
  (Sec. 3.1): F_k^-1 = F_{k-1}^-1 - F_{k-1}^-1 g g^T F_{k-1}^-1 / (m + g^T F_{k-1}^-1 g).
  ``block_fisher_inverse``; computed in float64 (damp 1e-7 puts 1e7 on the diagonal).
- Saliency (Eq. 2 for one weight): rho_i = w_i^2 / (2 [F^-1]_ii), ranked globally over all
  encoder weight matrices (the paper's choice; ``scope: local`` ranks per matrix).
- Update of the remaining weights (``update``): ``summed`` (default, what sparseml does):
  the single-weight OBS update summed over the weights Q pruned in a block,
  dw = - sum_{q in Q} F^-1 e_q w_q / [F^-1]_qq; ``exact``: the multi-weight OBS formula of
  Sec. 3.1, dw = - F^-1 E_Q (E_Q^T F^-1 E_Q)^-1 E_Q^T w per block. Then pruned weights are
  set to zero and kept at zero.

Gradients (``num_grads`` m, one per mini-batch of ``grad_batch_size`` training examples):
the paper uses m = 1024 mini-batches of 16 (MNLI) with blocks of B = 50, far too many gradients
for a CPU step. Within a block the empirical Fisher has rank at most min(m, B): with fewer
gradients than block weights, B - m of its directions are pure damping and the saliency of
those weights is set by lambda, not by the data. The default therefore keeps m >= 2B with
m = 32 gradients and blocks of B = 16 (prepare() refuses m < B), drawn afresh at every pruning
step (calibration draws of the training split, recorded in ``describe()["calibration_data"]``).
Gradients are sampled in eval mode (dropout off), as sparseml's OBS modifier does, at already
pruned weights set to zero (those coordinates are constraints and never updated); the
settings used are recorded in ``describe()["fisher"]``. Memory: m x (encoder weights) floats
for the gradients plus one matrix's blocks at a time (about 1.4 GB for MiniLM-L6 at m = 32).

Schedule: the cubic schedule of ``prunebench.training.schedules`` inside the common fine-tuning
budget (warm-up, ramp, cool-down as methods/magnitude.py), a pruning step every
``update_every`` optimiser steps (default 20: 6 steps over 200-step runs, like the paper's
7 pruning steps over its 30-epoch recipe; the paper's first jump to 70% sparsity and
knowledge distillation are not reproduced). If the ramp ended above the budget (too few
steps), ``finalize`` runs one more oBERT pruning step to the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.structure.masks import SCOPES, apply_masks, topk_masks
from prunebench.training.calibration import describe_indices, require_calibration
from prunebench.training.schedules import cubic_remaining

UPDATES = ("summed", "exact")


@dataclass(frozen=True)
class OBERTSettings:
    warmup_fraction: float = field(default=0.1, metadata={"help": "share of steps before pruning starts"})
    cooldown_fraction: float = field(default=0.3, metadata={"help": "share of steps fine-tuned at the final sparsity"})
    update_every: int = field(default=20, metadata={"help": "optimiser steps between oBERT pruning steps"})
    num_grads: int = field(
        default=32, metadata={"help": "m: gradients (mini-batches) per Fisher estimate, >= block_size (paper: 1024)"}
    )
    grad_batch_size: int = field(default=16, metadata={"help": "training examples per gradient (paper: 16 on MNLI)"})
    block_size: int = field(
        default=16, metadata={"help": "B: consecutive weights per diagonal Fisher block, <= num_grads (paper: 50)"}
    )
    damp: float = field(
        default=1e-7, metadata={"help": "lambda: dampening of the empirical Fisher, F = lambda I + ... (paper: 1e-7)"}
    )
    scope: str = field(
        default="global", metadata={"help": "'global' (paper) or 'local' (per matrix) ranking of saliencies"}
    )
    update: str = field(
        default="summed",
        metadata={"help": "'summed' single-weight OBS updates (sparseml) or 'exact' multi-weight OBS per block"},
    )


def _blocks(vector: torch.Tensor, block: int) -> torch.Tensor:
    """Zero-pad the last dimension to a multiple of ``block`` and split it into blocks: (..., nb, block)."""
    n = vector.shape[-1]
    pad = (-n) % block
    if pad:
        vector = torch.nn.functional.pad(vector, (0, pad))
    return vector.reshape(*vector.shape[:-1], -1, block)


def block_fisher_inverse(grads: torch.Tensor, block: int, damp: float) -> torch.Tensor:
    """Inverse of the block-diagonal damped empirical Fisher by m Woodbury updates (Kurtic et al. Sec. 3.1).

    ``grads``: (m, n) gradients of one flattened matrix. Returns (n_blocks, block, block): the
    inverse of damp * I + (1/m) sum_k g_k g_k^T restricted to each block.
    """
    if grads.dim() != 2 or grads.shape[0] == 0:
        raise ValueError(f"grads must be (m >= 1, n), got shape {tuple(grads.shape)}")
    if damp <= 0:
        raise ValueError(f"damp must be positive, got {damp}")
    m = grads.shape[0]
    g = _blocks(grads.double(), block)  # (m, nb, B)
    finv = torch.eye(block, dtype=torch.float64, device=grads.device).repeat(g.shape[1], 1, 1) / damp
    for k in range(m):
        fg = torch.einsum("nij,nj->ni", finv, g[k])
        denom = m + torch.einsum("ni,ni->n", g[k], fg)
        finv -= torch.einsum("ni,nj->nij", fg, fg) / denom[:, None, None]
    return finv


def obs_saliency(weight: torch.Tensor, finv: torch.Tensor) -> torch.Tensor:
    """rho_i = w_i^2 / (2 [F^-1]_ii) (Kurtic et al. Eq. 2), shaped like ``weight``."""
    diag = finv.diagonal(dim1=1, dim2=2).reshape(-1)[: weight.numel()]
    return (weight.detach().double().reshape(-1).pow(2) / (2 * diag)).reshape(weight.shape)


def obs_update(weight: torch.Tensor, finv: torch.Tensor, prune: torch.Tensor, exact: bool) -> torch.Tensor:
    """Weights after removing ``prune`` (bool, like ``weight``) with the OBS update of the rest, per block."""
    block = finv.shape[-1]
    w = _blocks(weight.detach().double().reshape(-1), block)
    q = _blocks(prune.reshape(-1).double(), block)
    if exact:  # dw = -F^-1 E_Q (E_Q^T F^-1 E_Q)^-1 E_Q^T w, batched with identity outside Q
        eye = torch.eye(block, dtype=torch.float64, device=w.device)
        restricted = finv * q.unsqueeze(2) * q.unsqueeze(1) + torch.diag_embed(1 - q) * eye
        x = torch.linalg.solve(restricted, (w * q).unsqueeze(-1)).squeeze(-1) * q
    else:  # sum of single-weight updates: dw = -sum_q F^-1 e_q w_q / [F^-1]_qq
        x = w * q / finv.diagonal(dim1=1, dim2=2)
    new = w - torch.einsum("nij,nj->ni", finv, x)
    new = new.reshape(-1)[: weight.numel()].reshape(weight.shape)
    return torch.where(prune, torch.zeros_like(new), new).to(weight.dtype)


@register("obert")
class OptimalBertSurgeon(PruningMethod):
    """oBERT (Kurtic et al. 2022): gradual pruning by block-Fisher OBS saliency with the OBS update of the rest."""

    paper = "Kurtic et al. 2022, The Optimal BERT Surgeon (arXiv 2203.07259)"
    Settings = OBERTSettings
    finalize_enforcement = "one more oBERT pruning step to the budget if the schedule ended above it"

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        s = self.settings
        if s.scope not in SCOPES or s.update not in UPDATES:
            raise ValueError(
                f"obert: scope must be one of {SCOPES} and update one of {UPDATES}, got {s.scope!r}, {s.update!r}"
            )
        if s.num_grads < 1 or s.grad_batch_size < 1 or s.block_size < 1 or s.update_every < 1:
            raise ValueError("obert: num_grads, grad_batch_size, block_size and update_every must be positive")
        if s.num_grads < s.block_size:
            raise ValueError(
                f"obert: num_grads ({s.num_grads}) < block_size ({s.block_size}): each block's empirical Fisher would"
                f" have rank {s.num_grads} of {s.block_size}, the rest pure damping; use num_grads >= block_size"
                " (paper: 1024 gradients, blocks of 50)"
            )
        self.calibration = require_calibration(plan, self.name)
        self.linears = prunable_linears(model)
        self.masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in self.linears.items()}
        self.total_steps = plan.total_steps
        self.warmup = int(s.warmup_fraction * plan.total_steps)
        self.cooldown = int(s.cooldown_fraction * plan.total_steps)
        self.draws, self.used_indices, self.history = 0, [], []

    def remaining_at(self, step: int) -> float:
        """Scheduled remaining fraction at ``step`` (cubic, Zhu & Gupta 2017)."""
        return cubic_remaining(step, self.total_steps, self.target_remaining, 1.0, self.warmup, self.cooldown)

    def _kept_fraction(self) -> float:
        return sum(int(m.sum()) for m in self.masks.values()) / sum(m.numel() for m in self.masks.values())

    def after_step(self, model: nn.Module, step: int) -> None:
        due = step % self.settings.update_every == 0 or step == self.total_steps - self.cooldown
        if due:
            target = self.remaining_at(step)
            if target < self._kept_fraction() - 1e-9:
                self.prune_step(model, target, step)
        apply_masks(self.linears, self.masks)

    def gradients(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """m loss gradients of each encoder matrix (m, numel), one per calibration mini-batch.

        Zero at pruned weights.
        """
        s = self.settings
        data = self.calibration(s.num_grads * s.grad_batch_size, s.grad_batch_size, draw=self.draws)
        self.draws += 1
        self.used_indices += data.indices
        names = list(self.linears)
        weights = [self.linears[n].weight for n in names]
        grads = {n: torch.zeros(len(data), w.numel(), device=w.device) for n, w in zip(names, weights)}
        was_training = model.training
        model.eval()  # dropout off: the Fisher of the model being pruned, not of a dropped-out copy
        try:
            for k, batch in enumerate(data):
                with torch.enable_grad():
                    loss = model(**batch).loss
                    for n, g in zip(names, torch.autograd.grad(loss, weights)):
                        grads[n][k] = (g * self.masks[n]).reshape(-1)
        finally:
            model.train(was_training)
        return grads

    @torch.no_grad()
    def prune_step(self, model: nn.Module, remaining: float, step: int) -> None:
        """One oBERT step: Fisher inverses, saliencies, new masks, OBS update of the remaining weights."""
        s = self.settings
        grads = self.gradients(model)
        scores = {}
        for name, module in self.linears.items():
            finv = block_fisher_inverse(grads[name], s.block_size, s.damp)
            score = obs_saliency(module.weight, finv)
            scores[name] = score.masked_fill(~self.masks[name], float("-inf"))
        new_masks = topk_masks(scores, remaining, s.scope)
        for name, module in self.linears.items():
            prune = self.masks[name] & ~new_masks[name]
            if prune.any():  # the Fisher inverse is recomputed: keeping all matrices' blocks would cost 50x the weights
                finv = block_fisher_inverse(grads[name], s.block_size, s.damp)
                module.weight.copy_(obs_update(module.weight, finv, prune | ~self.masks[name], s.update == "exact"))
            self.masks[name] = new_masks[name] & self.masks[name]
        apply_masks(self.linears, self.masks)
        self.history.append({"step": step, "remaining": self._kept_fraction()})

    def finalize(self, model: nn.Module) -> nn.Module:
        apply_masks(self.linears, self.masks)
        self.remaining_before_finalize = remaining_fraction(model)
        if self._kept_fraction() > self.target_remaining + 1e-9:
            self.prune_step(model, self.target_remaining, self.total_steps)
        return model

    def describe(self) -> dict:
        out = super().describe()
        out["calibration_data"] = describe_indices(self.used_indices) if getattr(self, "used_indices", None) else None
        out["pruning_steps"] = getattr(self, "history", [])
        s = self.settings
        out["fisher"] = {
            "num_grads": s.num_grads,
            "block_size": s.block_size,
            "rank_per_block": min(s.num_grads, s.block_size),
            "gradient_mode": "eval",
        }
        return out
