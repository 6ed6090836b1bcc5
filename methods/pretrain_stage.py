"""Rows compressed during pre-training: the fine-tuning half.

Gordon et al. 2020, RPP (Guo et al. 2019) and LayerDrop (Fan et al. 2019) compress during
*pre-training* and then fine-tune the compressed model per task. Here that is two jobs:

1. the pre-training stage (``prunebench.training.pretrain``, rule ``pretrain``): masked-language-model
   training of the model with the row's *stage method* -- a registered method run through the same
   hooks as in fine-tuning -- at the row's budget, once per (row, budget, seed) and shared by all tasks;
2. this row, in the ordinary ``prune`` job: the stage's pruned encoder plus a fresh task head is
   fine-tuned with the common fine-tuning budget, **its mask kept**: every encoder weight that is
   zero when fine-tuning starts is zeroed again after each optimiser step (the trainer's
   ``after_step``), so zeros stay zero and the remaining fraction is the stage's; layers the stage
   removed are physically gone from the checkpoint. The row prunes nothing itself.

``starts_from = "pretrain"``: the workflow hands the job the stage's output folder
(``{results}/pretrained/{row}/{budget}/seed{seed}``), whose ``pretrain.json`` travels into the
record as ``details.method.pretrain`` (corpus, MLM loss against sparsity, settings).

Rows and the fine-tuning-time row each is compared with (``finetune_counterpart``, the report's
"pruned during pre-training vs during fine-tuning"):

- ``gordon_pretrain``: gradual matrix-local magnitude pruning (``magnitude_local``; Gordon et al.
  prune each matrix to the target sparsity by |w| with a gradual schedule during pre-training) ~
  ``magnitude_local`` (the same rule during fine-tuning, from the dense fine-tuned checkpoint);
- ``rpp_pretrain``: reweighted proximal pruning (``rpp``) during pre-training ~ ``rpp``;
- ``layerdrop_pretrain``: LayerDrop during pre-training, then the paper's "every other" layers
  removed at the end of the stage (``layerdrop``; Fan et al. prune after pre-training and fine-tune
  the shallower model) ~ ``layerdrop`` (LayerDrop applied while fine-tuning only).

Guard (``prunebench.method.base``): ``finalize`` re-applies the kept mask and prunes nothing, so
``remaining_before_finalize`` is the model's remaining fraction at that point.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.structure.masks import apply_masks


class PretrainStageRow(PruningMethod):
    """Fine-tune a model pruned during pre-training with its zeros kept (module docstring)."""

    starts_from = "pretrain"
    #: the registered method the pre-training stage runs (``prunebench.training.pretrain``)
    stage_method: ClassVar[str] = ""
    #: the row that applies the same method during fine-tuning (the report's comparison)
    finetune_counterpart: ClassVar[str] = ""
    finalize_enforcement = "none: re-applies the pre-training stage's mask (zeros stay zero); prunes nothing itself"

    def use_pretrain(self, summary: dict[str, Any]) -> None:
        """The stage's ``pretrain.json`` (``prunebench.training.pretrain.read_summary``), for the record."""
        from prunebench.training.pretrain import summary_for_record

        self.pretrain = summary_for_record(summary)

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        self.linears = prunable_linears(model)
        with torch.no_grad():
            self.masks = {n: m.weight.detach() != 0 for n, m in self.linears.items()}
        self.remaining_at_start = remaining_fraction(model)

    def after_step(self, model: nn.Module, step: int) -> None:
        apply_masks(self.linears, self.masks)

    def finalize(self, model: nn.Module) -> nn.Module:
        if hasattr(self, "masks"):
            apply_masks(self.linears, self.masks)
        self.remaining_before_finalize = remaining_fraction(model)
        return model

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["stage_method"] = self.stage_method
        out["finetune_counterpart"] = self.finetune_counterpart
        out["mask_kept"] = {
            "remaining_at_start": getattr(self, "remaining_at_start", None),
            "rule": "encoder weights zero at the start of fine-tuning are re-zeroed after every step",
        }
        if getattr(self, "pretrain", None) is not None:
            out["pretrain"] = self.pretrain
            layers = (self.pretrain.get("method") or {}).get("layers")
            if layers:  # the stage's layer choice (LayerDrop): kept / removed / the fraction reached
                out["layers"] = dict(layers)
        return out


@register("gordon_pretrain")
class GordonPretrain(PretrainStageRow):
    """Gradual matrix-local magnitude pruning during MLM pre-training, then fine-tuning with the mask kept."""

    paper = "Gordon et al. 2020 (arXiv 2002.08307): pruned during pre-training, then fine-tuned"
    granularity = "element"
    stage_method = "magnitude_local"
    finetune_counterpart = "magnitude_local"


@register("rpp_pretrain")
class RPPPretrain(PretrainStageRow):
    """Reweighted proximal pruning during MLM pre-training, then fine-tuning with the mask kept."""

    paper = "Guo et al. 2019, Reweighted Proximal Pruning (arXiv 1909.12486): pruned during pre-training"
    granularity = "element"
    stage_method = "rpp"
    finetune_counterpart = "rpp"


@register("layerdrop_pretrain")
class LayerDropPretrain(PretrainStageRow):
    """LayerDrop during MLM pre-training, every-other layers removed after it, then fine-tuning."""

    paper = "Fan et al. 2019, LayerDrop (arXiv 1909.11556): LayerDrop in pre-training, layers pruned before fine-tuning"
    granularity = "layer"
    stage_method = "layerdrop"
    finetune_counterpart = "layerdrop"
