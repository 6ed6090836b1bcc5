"""LayerDrop (Fan et al. 2019, "Reducing Transformer Depth on Demand with Structured
Dropout", arXiv 1909.11556) and its control, plain layer pruning.

``layerdrop``: during fine-tuning every encoder layer is skipped (identity) independently
with probability ``rate`` at each training forward pass; in eval mode no layer is ever
skipped. At ``finalize`` the model is pruned to ``k`` layers with the paper's "every other"
strategy and the layers are physically removed (``prunebench.structure.surgery.remove_layers``).

- Rate: ``rate`` = 0.2 by default, the value the paper uses throughout (it uses 0.5 for very
  small models, e.g. the 2-layer smoke model). ``match_rate: true`` trains with the rate the
  paper suggests for a known target depth r instead, p* = 1 - r/N.
- Every other: pruning at rate p drops the layers at depth d = 0 (mod floor(1/p)), depth
  counted from 1 at the bottom (so p = 0.5 drops layers 2, 4, 6, ... and keeps the first,
  as fairseq's ``--encoder-layers-to-keep 0,2,4,...`` example). ``every_other_drop``
  implements the rule literally. To keep ``k`` of ``N`` layers, p = 1 - k/N; where the
  literal rule does not drop exactly N - k layers (p > 1/2, or N not a multiple of the
  stride), ``layers_to_drop`` keeps the evenly spaced layers floor(i N / k), i = 0..k-1,
  which is the same set whenever the rule works (e.g. N = 6: k = 3 keeps 1, 3, 5 in depth).
- Budget: every layer holds the same share of encoder weights, so the method keeps the
  ``k`` in 1..N whose remaining fraction is *nearest* the budget (ties: more layers) --
  layers are coarse (1/6 of MiniLM each), and neither rounding direction is fair to all
  budgets; ``describe()`` reports the fraction reached and the record measures it anyway.
- Starting point: the paper applies LayerDrop in pre-training and fine-tuning, and reports
  fine-tuning-only LayerDrop as weaker; pre-training is out of this benchmark's budget, so
  LayerDrop is applied while fine-tuning from the *pretrained* weights
  (``starts_from = "pretrained"``) for the common fine-tuning budget.

``layer_prune`` (the control): the same fine-tuning from the pretrained weights without
LayerDrop, then the same layers removed -- the paper's comparison of pruning a model
trained with and without LayerDrop. ``prune_before_finetuning: true`` instead removes the
layers before fine-tuning, so the shallower model is fine-tuned (a stronger baseline).

Guard (``prunebench.method.base``): the every-other rule *is* the final selection (chosen in
``prepare`` from the budget, applied in ``finalize``), so ``remaining_before_finalize`` is the
fraction that rule chose (``reached``) and no truncation is flagged.
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
from prunebench.structure.surgery import encoder_layers, remove_layers


def every_other_drop(n_layers: int, rate: float) -> list[int]:
    """Layers (0-based) the paper's rule drops at rate ``p``: depth d (from 1) with d = 0 mod floor(1/p)."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"LayerDrop rate {rate} must be in (0, 1]")
    stride = math.floor(1.0 / rate + 1e-9)
    return [d - 1 for d in range(1, n_layers + 1) if d % stride == 0]


def layers_to_drop(n_layers: int, keep: int) -> list[int]:
    """Layers (0-based) to remove so that ``keep`` remain, "every other" style."""
    if not 1 <= keep <= n_layers:
        raise ValueError(f"cannot keep {keep} of {n_layers} layers")
    if keep == n_layers:
        return []
    literal = every_other_drop(n_layers, 1.0 - keep / n_layers)
    if len(literal) == n_layers - keep:
        return literal
    kept = {math.floor(i * n_layers / keep) for i in range(keep)}
    return [d for d in range(n_layers) if d not in kept]


def layers_for_budget(model: nn.Module, target: float) -> tuple[int, list[int], float]:
    """``(k, layers_to_drop, reached)``: the depth whose remaining fraction is nearest ``target``."""
    layers = encoder_layers(model)
    n = len(layers)
    count = count_encoder_weights(model)
    per_layer = [sum(int(torch.count_nonzero(p)) for p in layer.parameters() if p.dim() == 2) for layer in layers]
    best = None
    for k in range(n, 0, -1):  # from more layers to fewer: ties keep more
        drop = layers_to_drop(n, k)
        reached = (count.nonzero - sum(per_layer[i] for i in drop)) / count.dense_reference
        if best is None or abs(reached - target) < abs(best[2] - target) - 1e-12:
            best = (k, drop, reached)
    return best


class _LayerSkip:
    """Replaces one layer's ``forward``: identity with probability ``rate`` in training mode."""

    def __init__(self, layer: nn.Module, rate: float, generator: torch.Generator):
        self.layer, self.rate, self.generator = layer, rate, generator
        self.original = layer.forward
        self.skipped = self.run = 0

    def __call__(self, *args, **kwargs):
        if self.layer.training and self.rate > 0 and float(torch.rand((), generator=self.generator)) < self.rate:
            self.skipped += 1
            return args[0] if args else kwargs["hidden_states"]
        self.run += 1
        return self.original(*args, **kwargs)


def install_layerdrop(model: nn.Module, rate: float, seed: int) -> list[_LayerSkip]:
    """Make every encoder layer skip itself with probability ``rate`` in training mode."""
    generator = torch.Generator().manual_seed(seed)
    skips = []
    for layer in encoder_layers(model):
        skip = _LayerSkip(layer, rate, generator)
        layer.forward = skip  # an instance attribute: nn.Module.__call__ uses it
        skips.append(skip)
    return skips


def uninstall_layerdrop(model: nn.Module) -> None:
    for layer in encoder_layers(model):
        if isinstance(layer.__dict__.get("forward"), _LayerSkip):
            del layer.forward


@dataclass(frozen=True)
class LayerDropSettings:
    rate: float = field(
        default=0.2,
        metadata={
            "help": "probability of skipping each layer at each training step (paper: 0.2; 0.5 for very small models)"
        },
    )
    match_rate: bool = field(
        default=False,
        metadata={"help": "train with p* = 1 - k/N for the pruned depth k instead of 'rate' (Fan et al.)"},
    )

    def __post_init__(self):
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"rate {self.rate} must be in [0, 1)")


@register("layerdrop")
class LayerDrop(PruningMethod):
    """LayerDrop during fine-tuning, then "every other" layer pruning to the budget."""

    paper = "Fan et al. 2019 (arXiv 1909.11556)"
    starts_from = "pretrained"
    granularity = "layer"
    Settings = LayerDropSettings
    use_layerdrop: ClassVar[bool] = True
    finalize_enforcement = "removes the layers the every-other rule chose for the budget (the rule's own selection)"

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        self.n_layers = len(encoder_layers(model))
        self.keep, self.drop, self.reached = layers_for_budget(model, self.target_remaining)
        self.rate = (1.0 - self.keep / self.n_layers) if self.settings.match_rate else self.settings.rate
        self.skips = install_layerdrop(model, self.rate, plan.seed) if self.use_layerdrop and self.rate > 0 else []

    def finalize(self, model: nn.Module) -> nn.Module:
        self.remaining_before_finalize = self.reached  # the rule's own choice (see the module docstring)
        uninstall_layerdrop(model)
        if self.drop:
            remove_layers(model, self.drop)
        return model

    def describe(self) -> dict:
        out = super().describe()
        skipped = sum(s.skipped for s in getattr(self, "skips", []))
        run = sum(s.run for s in getattr(self, "skips", []))
        out["layers"] = {
            "total": getattr(self, "n_layers", None),
            "kept": getattr(self, "keep", None),
            "removed": getattr(self, "drop", None),
            "reached": getattr(self, "reached", None),
            "train_rate": getattr(self, "rate", None),
            "skipped_fraction": skipped / (skipped + run) if skipped + run else None,
        }
        return out


@dataclass(frozen=True)
class LayerPruneSettings:
    prune_before_finetuning: bool = field(
        default=False,
        metadata={"help": "remove the layers before fine-tuning (fine-tune the shallow model) instead of after"},
    )


@register("layer_prune")
class LayerPrune(LayerDrop):
    """Control: the same layers removed from a model fine-tuned without LayerDrop."""

    paper = "control for Fan et al. 2019: every-other layer pruning without LayerDrop"
    Settings = LayerPruneSettings
    use_layerdrop = False

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        self.n_layers = len(encoder_layers(model))
        self.keep, self.drop, self.reached = layers_for_budget(model, self.target_remaining)
        self.rate, self.skips = 0.0, []
        if self.settings.prune_before_finetuning and self.drop:
            remove_layers(model, self.drop)
            self.drop = []  # done

    def describe(self) -> dict:
        out = super().describe()
        if self.settings.prune_before_finetuning and hasattr(self, "keep"):
            out["layers"]["removed"] = layers_to_drop(self.n_layers, self.keep)
        return out
