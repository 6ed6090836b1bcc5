"""Attention-head pruning by importance (Michel et al. 2019, "Are Sixteen Heads Really
Better than One?", arXiv 1905.10650), and two controls.

Importance. Every head h gets a gate xi_h = 1 that scales its context vector (the shared
mechanism ``prunebench.structure.surgery.head_gate_hooks``); its importance is the expected
sensitivity of the loss to the gate, I_h = E_x |dL/dxi_h| (Michel et al. Eq. 2), estimated
on *training* batches and normalised per layer by the layer's L2 norm (the authors' code
does this by default). Heads are pruned in order of increasing importance, a fixed share of
all heads per pruning step (``step_fraction``; 5% as in the authors' pruning script), and
at ``finalize`` the pruned heads are physically removed (``prunebench.structure.surgery.remove_heads``),
so the saved model is smaller and faster.

Adaptation to the benchmark (the method hooks see ``(model, step)``, never a batch): the
gradient of the gates comes free with the trainer's own backward pass, so |dL/dxi| is
accumulated in ``after_step`` over the normal training steps. The absolute value is taken
per token by default (``abs_over``), as the authors' code does (|<dL/dctx_h, ctx_h>| per token,
summed), so signs cannot cancel inside a batch: a probe gate of ones with one entry per
(example, token, head) multiplies each head's context (``_probe_hook``), and one backward of
the batch-mean loss gives every per-token gradient ((1/B) x the example's, same order).
``abs_over: example`` takes |.| per example, ``batch`` per batch (the bertology example of
transformers); the constant 1/tokens factor is dropped. Pruning steps are spread
evenly from the end of a warm-up (``warmup_fraction``, importance only) to the start of a
cool-down (``cooldown_fraction``, fine-tuning at the final head count), like the gradual
schedule of Zhu & Gupta 2017, all inside the common fine-tuning budget. The paper prunes
without retraining; here the model keeps fine-tuning between pruning steps
(``finetune_between``), and ``reestimate`` says whether importance is re-estimated (on the
batches seen since the previous pruning step) before each step, or estimated once during
the warm-up and kept (the paper's default). With ``finetune_between: false`` every pruning
step happens at the end of the warm-up, by the warm-up's importance, and the rest of the
budget fine-tunes the pruned model; re-estimation is then impossible (no batches between
steps) and refused.

Budget. Heads hold only the Q, K, V and attention-output weights (4 x hidden x head size
each); the feed-forward matrices (2/3 of a BERT layer) stay. The method removes as many
heads as it can while the remaining fraction stays at or above the budget (closest from
above). When the budget is below what head pruning can reach, it removes every head but
``min_heads_per_layer`` per layer (default 1: Michel et al. find one head per layer often
enough at test time) and reports the fraction it reached (``describe()`` -> ``reached``);
the record's ``encoder_remaining`` is measured from the weights anyway. With MiniLM-L6-H384
(6 x 12 heads, attention = 1/3 of the encoder) the floor is 0.694 (1 head per layer) or
0.667 (``min_heads_per_layer: 0``).

Controls: ``head_random`` (a fixed random order) and ``head_magnitude`` (L2 norm of each
head's Q, K, V rows and output columns, recomputed at each pruning step), same schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import count_encoder_weights
from prunebench.structure.surgery import encoder_layers, head_counts, head_gate_hooks, remove_heads

ABS_OVER = ("token", "example", "batch")


@dataclass(frozen=True)
class HeadPruningSettings:
    step_fraction: float = field(
        default=0.05, metadata={"help": "share of all heads pruned per pruning step (Michel et al.'s script: 5%)"}
    )
    reestimate: bool = field(
        default=True,
        metadata={"help": "re-estimate importance before each pruning step (else estimated once during the warm-up)"},
    )
    finetune_between: bool = field(
        default=True,
        metadata={
            "help": "spread pruning steps over training (fine-tuning between them); false: all at the end of warm-up"
        },
    )
    warmup_fraction: float = field(
        default=0.1, metadata={"help": "share of steps that only estimate importance before the first pruning step"}
    )
    cooldown_fraction: float = field(
        default=0.3, metadata={"help": "share of steps fine-tuned at the final head count"}
    )
    min_heads_per_layer: int = field(
        default=1, metadata={"help": "heads every layer keeps (0 allows removing a layer's whole attention)"}
    )
    normalize_per_layer: bool = field(
        default=True,
        metadata={"help": "divide importance by its L2 norm within each layer (Michel et al.'s code default)"},
    )
    abs_over: str = field(
        default="token",
        metadata={
            "help": "where |dL/dgate| is taken before summing: 'token' (the authors' code), 'example' or 'batch'"
        },
    )

    def __post_init__(self):
        if not 0.0 < self.step_fraction <= 1.0:
            raise ValueError(f"step_fraction {self.step_fraction} must be in (0, 1]")
        if not (
            0.0 <= self.warmup_fraction < 1.0
            and 0.0 <= self.cooldown_fraction < 1.0
            and self.warmup_fraction + self.cooldown_fraction < 1.0
        ):
            raise ValueError("warmup_fraction and cooldown_fraction must be in [0, 1) with a sum below 1")
        if self.abs_over not in ABS_OVER:
            raise ValueError(f"abs_over must be one of {ABS_OVER}, got {self.abs_over!r}")
        if self.min_heads_per_layer < 0:
            raise ValueError("min_heads_per_layer must be >= 0")
        if self.reestimate and not self.finetune_between:
            raise ValueError(
                "reestimate needs finetune_between: without fine-tuning between pruning steps there are "
                "no batches to re-estimate importance on; set reestimate: false"
            )


def heads_for_budget(model: nn.Module, target: float, min_heads_per_layer: int) -> tuple[int, float, bool]:
    """How many heads to remove: ``(n_heads, reached_fraction, reachable)``.

    The most heads whose removal keeps the remaining fraction >= ``target``, capped so every
    layer keeps ``min_heads_per_layer``; ``reachable`` says whether the cap was not needed.
    """
    count = count_encoder_weights(model)
    layers = encoder_layers(model)
    per_head = [
        4 * layer.attention.output.dense.out_features * int(layer.attention.self.attention_head_size)
        for layer in layers
    ]
    counts = head_counts(model)
    capacity = sum(max(0, n - min_heads_per_layer) for n in counts)
    size = per_head[0]
    excess = count.nonzero - target * count.dense_reference
    wanted = max(0, math.floor(excess / size + 1e-9))
    n = min(wanted, capacity)
    return n, (count.nonzero - n * size) / count.dense_reference, wanted <= capacity


@register("head_importance")
class HeadImportancePruning(PruningMethod):
    """Iterative head pruning by gradient importance of head gates (Michel et al. 2019)."""

    paper = "Michel et al. 2019 (arXiv 1905.10650)"
    starts_from = "dense"
    granularity = "head"
    Settings = HeadPruningSettings
    #: Guard (prunebench.method.base): the schedule is the rule's own selection; finalize only removes the
    #: heads it masked, and prunes the rest itself only if the training budget ended before the schedule.
    finalize_enforcement = (
        "removes the heads the schedule pruned; prunes the rest by importance only if the schedule did not finish"
    )
    #: whether importance comes from the gates' gradients (controls override ``scores``).
    uses_gradients: ClassVar[bool] = True

    # ----- hooks ---------------------------------------------------------------------------
    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        s = self.settings
        self.model_ref = model
        self.generator = torch.Generator().manual_seed(plan.seed)
        self.counts = head_counts(model)
        device = next(model.parameters()).device
        self.masks = {l: torch.ones(n, dtype=torch.bool, device=device) for l, n in enumerate(self.counts)}
        self.importance = {l: torch.zeros(n, device=device) for l, n in enumerate(self.counts)}
        self.batches_seen = 0
        self.gates: dict[int, torch.Tensor] = {}
        self._new_gates()
        self.handles = head_gate_hooks(model, self.gates)
        self.probes: dict[int, torch.Tensor] = {}
        if self.uses_gradients:
            self.handles += [
                layer.attention.output.dense.register_forward_pre_hook(self._probe_hook(l))
                for l, layer in enumerate(encoder_layers(model))
            ]
        self.to_prune, self.reached, self.reachable = heads_for_budget(
            model, self.target_remaining, s.min_heads_per_layer
        )
        self.schedule = self._schedule(plan.total_steps)
        self.accumulating = self.uses_gradients
        self.history: list[dict] = []
        self.pruned = 0

    def _schedule(self, total_steps: int) -> dict[int, int]:
        """``{step: cumulative heads pruned after that step}``."""
        s = self.settings
        if self.to_prune == 0 or total_steps < 1:
            return {}
        per_step = max(1, round(s.step_fraction * sum(self.counts)))
        n_events = math.ceil(self.to_prune / per_step)
        first = min(total_steps, max(1, round(s.warmup_fraction * total_steps)))
        last = max(first, total_steps - round(s.cooldown_fraction * total_steps))
        schedule: dict[int, int] = {}
        for i in range(n_events):
            step = (
                first
                if (n_events == 1 or not s.finetune_between)
                else first + round(i * (last - first) / (n_events - 1))
            )
            schedule[step] = min(self.to_prune, (i + 1) * per_step)
        return schedule

    def _new_gates(self) -> None:
        for l, mask in self.masks.items():
            self.gates[l] = mask.float()  # masks only; gradients come from the probes

    def _probe_hook(self, layer: int):
        """Forward pre-hook: context x [B, T, n*d] times a probe of ones [B|1, T|1, n, 1] that records gradients."""

        def hook(module, args):
            if not (self.accumulating and torch.is_grad_enabled()):
                return None
            x, n = args[0], self.counts[layer]
            shape = {"token": (x.shape[0], x.shape[1]), "example": (x.shape[0], 1), "batch": (1, 1)}[
                self.settings.abs_over
            ]
            probe = torch.ones(*shape, n, 1, device=x.device, requires_grad=True)
            self.probes[layer] = probe
            out = x.reshape(*x.shape[:-1], n, -1) * probe.to(x.dtype)
            return (out.reshape(x.shape),) + tuple(args[1:])

        return hook

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.accumulating:
            for l, probe in self.probes.items():
                if probe.grad is not None:  # |d L / d probe| per token/example/batch, summed per head
                    self.importance[l] += probe.grad.detach().abs().sum(dim=(0, 1)).flatten() * self.masks[l]
            self.probes = {}
            self.batches_seen += 1
        if step in self.schedule:
            self._prune_to(self.schedule[step], step)

    def finalize(self, model: nn.Module) -> nn.Module:
        by_schedule = self.pruned  # heads the method's own schedule pruned (the guard, prunebench.method.base)
        if self.pruned < self.to_prune:  # a budget shorter than the schedule: prune the rest now
            self._prune_to(self.to_prune, None)
        for handle in self.handles:
            handle.remove()
        self.handles = []
        removed = {l: [h for h in range(len(m)) if not bool(m[h])] for l, m in self.masks.items()}
        removed = {l: hs for l, hs in removed.items() if hs}
        self.removed_heads = {str(l): hs for l, hs in removed.items()}
        if removed:
            remove_heads(model, removed)
        per_head = 4 * model.config.hidden_size * (model.config.hidden_size // model.config.num_attention_heads)
        self.remaining_before_finalize = (
            count_encoder_weights(model).remaining_fraction
            + (self.pruned - by_schedule) * per_head / count_encoder_weights(model).dense_reference
        )
        self.gates = {}
        return model

    # ----- pruning -------------------------------------------------------------------------
    def scores(self, model: nn.Module) -> dict[int, torch.Tensor]:
        """Importance of every head (higher is kept), per layer."""
        scores = {}
        for l, imp in self.importance.items():
            imp = imp.detach().float().cpu() * self.masks[l].cpu()
            if self.settings.normalize_per_layer:
                norm = imp.norm(p=2)
                imp = imp / norm if norm > 0 else imp
            scores[l] = imp
        return scores

    @torch.no_grad()
    def _prune_to(self, total: int, step: int | None) -> None:
        scores = self.scores(self.model_ref)
        kept = {l: int(m.sum()) for l, m in self.masks.items()}
        candidates = sorted(
            (float(scores[l][h]), l, h) for l, m in self.masks.items() for h in range(len(m)) if bool(m[h])
        )
        chosen = []
        for _, l, h in candidates:
            if self.pruned + len(chosen) >= total:
                break
            if kept[l] <= self.settings.min_heads_per_layer:
                continue
            kept[l] -= 1
            chosen.append((l, h))
        for l, h in chosen:
            self.masks[l][h] = False
        self.pruned += len(chosen)
        self._new_gates()
        self.history.append(
            {
                "step": step,
                "pruned_total": self.pruned,
                "batches": self.batches_seen,
                "heads": [[l, h] for l, h in chosen],
            }
        )
        if self.uses_gradients:
            if self.settings.reestimate:
                for imp in self.importance.values():
                    imp.zero_()
                self.batches_seen = 0
            else:  # importance estimated once (the warm-up's); stop paying for gate gradients
                self.accumulating = False
                self.probes = {}

    def describe(self) -> dict:
        out = super().describe()
        out["heads"] = {
            "total": sum(getattr(self, "counts", []) or []),
            "to_prune": getattr(self, "to_prune", None),
            "pruned": getattr(self, "pruned", None),
            "removed": getattr(self, "removed_heads", None),
            "reached": getattr(self, "reached", None),
            "budget_reachable": getattr(self, "reachable", None),
            "schedule": {str(k): v for k, v in getattr(self, "schedule", {}).items()},
        }
        return out


@register("head_random")
class RandomHeadPruning(HeadImportancePruning):
    """Control: heads pruned in a fixed random order, same schedule and budget."""

    paper = "control for Michel et al. 2019: random head order"
    uses_gradients = False

    def scores(self, model: nn.Module) -> dict[int, torch.Tensor]:
        if not hasattr(self, "_random"):
            self._random = {l: torch.rand(n, generator=self.generator) for l, n in enumerate(self.counts)}
        return self._random


@register("head_magnitude")
class MagnitudeHeadPruning(HeadImportancePruning):
    """Control: heads pruned by the L2 norm of their weights (Q, K, V rows, output columns)."""

    paper = "control for Michel et al. 2019: head weight norm"
    uses_gradients = False

    def scores(self, model: nn.Module) -> dict[int, torch.Tensor]:
        return {l: head_weight_norms(layer) for l, layer in enumerate(encoder_layers(model))}


@torch.no_grad()
def head_weight_norms(layer: nn.Module) -> torch.Tensor:
    """L2 norm of each head's Q, K, V rows and attention-output columns."""
    att = layer.attention.self
    n, d = int(att.num_attention_heads), int(att.attention_head_size)
    sq = torch.zeros(n)
    for lin in (att.query, att.key, att.value):
        sq += lin.weight.detach().float().cpu().view(n, d, -1).pow(2).sum(dim=(1, 2))
    out = layer.attention.output.dense.weight.detach().float().cpu()
    sq += out.view(out.shape[0], n, d).pow(2).sum(dim=(0, 2))
    return sq.sqrt()
