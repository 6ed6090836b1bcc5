"""Fixed, non-learnable attention patterns (Raganato, Scherrer & Tiedemann 2020, arXiv 2002.10260).

In every encoder layer, all but ``learnable_heads_per_layer`` heads (default: all but one, as
in the paper) lose their learnt attention and attend by position only. The fixed heads keep
their value projection and their columns of the attention output projection; their query and
key projections are removed physically (they are not needed), so the model gets smaller
and the attention of those heads costs no ``Q K^T`` product. The learnable heads (the first
``learnable_heads_per_layer`` heads of each layer) keep ordinary scaled dot-product
attention. The model is then fine-tuned with the common budget.

Patterns (head ``h`` of the fixed heads gets ``patterns[h mod len(patterns)]``), for a query
at position ``i`` of a sequence whose non-padding positions are ``V`` (``j`` ranges over
``V``; row weights sum to 1 over non-padding keys):

- ``current``:  weight 1 on ``i`` itself.
- ``previous``: weight 1 on ``i - 1``; on ``i`` itself when ``i - 1`` is outside the sequence
  or padding (the first token, [CLS], attends to itself).
- ``next``:     weight 1 on ``i + 1``; on ``i`` itself when ``i + 1`` is outside the sequence or
  padding (the last real token, [SEP], attends to itself).
- ``left``:     uniform ``1 / |{j in V: j < i}|`` over all preceding non-padding tokens; the
  first token attends to itself.
- ``right``:    uniform ``1 / |{j in V: j > i}|`` over all following non-padding tokens; the
  last real token attends to itself.

(The paper's left/right-context heads are "wider context" patterns; this benchmark uses the
uniform version above. Its start/end-of-sentence variants are not included.) Padding queries
get whatever these rules give; their outputs are never used. The padding mask is read from
the additive or boolean 4-D mask transformers passes to the layer (the row of query 0, which
is [CLS] under right padding, is taken as the key mask).

Implementation: the patterns are computed without an L x L matrix -- shifts for
``previous``/``next``, prefix sums for ``left``/``right`` -- and ``pattern_matrix`` gives the same
weights as an explicit matrix (used by the tests). ``FixedPatternSelfAttention`` keeps
BERT's semantics: ``num_attention_heads`` is the number of heads whose contexts the output
projection reads (fixed + learnable), ``attention_head_size`` their size and ``all_head_size``
their product; ``num_learnable_heads`` counts the heads with query/key projections. Its
``attention_flops(seq_len)`` counts ``2 x 2 x L^2 x d`` (``Q K^T`` and the weighted sum) per
learnable head, nothing for ``current``/``previous``/``next`` (copies and shifts) and
``4 x L x d`` (mask, prefix sum, difference, division) per ``left``/``right`` head.

Budget: the method removes exactly the Q and K rows of the fixed heads, so the remaining
fraction is a property of the architecture and does not follow the budget: per layer
of width ``d`` with ``d_ff = 4 d`` the dense encoder has ``12 d^2`` weights and 11 of 12 fixed
heads drop ``2 x 11/12 x d^2`` of them, so ``1 - 11/72 ~ 0.847`` remains (MiniLM and BERT alike).
The method is ``budget_free``: the workflow runs it once per (task, seed) and the record's
``encoder_remaining`` gives the reached fraction.

Guard (``prunebench.method.base``): ``finalize`` prunes nothing (the Q/K rows go in ``prepare``);
``remaining_before_finalize`` is the fraction reached, so no truncation is flagged.

The attention module, the patterns and the surgery op ``fixed_attention`` that
``prunebench.checkpoints.store.load_model`` replays live in ``prunebench.structure.fixed_attention``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import count_encoder_weights
from prunebench.structure.fixed_attention import PATTERNS, assign_patterns, fix_heads
from prunebench.structure.surgery import encoder_layers

# ----- the method ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedAttentionSettings:
    learnable_heads_per_layer: int = field(
        default=1, metadata={"help": "heads per layer that keep learnt attention (paper: 1)"}
    )
    patterns: tuple = field(
        default=PATTERNS,
        metadata={"help": "fixed patterns cycled over the other heads: current, previous, next, left, right"},
    )


@register("fixed_attention")
class FixedAttention(PruningMethod):
    """Fixed position-only attention in all but one head per layer; Q/K of fixed heads removed."""

    paper = "Raganato, Scherrer & Tiedemann 2020, Fixed Encoder Self-Attention Patterns (arXiv 2002.10260)"
    starts_from = "dense"
    granularity = "head"
    budget_free = True
    Settings = FixedAttentionSettings
    finalize_enforcement = "none: the fixed heads' query/key rows are removed in prepare, finalize prunes nothing"

    def __init__(self, target_remaining: float, settings: dict[str, Any] | None = None):
        super().__init__(target_remaining, settings)
        bad = sorted(set(self.settings.patterns) - set(PATTERNS))
        if bad or not self.settings.patterns:
            raise ValueError(f"method 'fixed_attention': unknown pattern(s) {bad}; patterns are {', '.join(PATTERNS)}")

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        layers = encoder_layers(model)
        plan_ = {
            l: assign_patterns(
                int(layer.attention.self.num_attention_heads),
                self.settings.learnable_heads_per_layer,
                tuple(self.settings.patterns),
            )
            for l, layer in enumerate(layers)
        }
        fix_heads(model, plan_)
        self.layer_patterns = {str(l): p for l, p in plan_.items()}

    def finalize(self, model: nn.Module) -> nn.Module:
        self.report = {
            "patterns": self.layer_patterns,
            "reached_remaining": count_encoder_weights(model).remaining_fraction,
        }
        self.remaining_before_finalize = self.report["reached_remaining"]  # finalize prunes nothing
        return model

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["settings"]["patterns"] = list(self.settings.patterns)
        if hasattr(self, "report"):
            out["result"] = self.report
        return out
