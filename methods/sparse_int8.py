"""Compound rows: a pruned row's checkpoint, then post-training int8 (sparse + int8).

Pruning and quantization compose: Zafrir et al. 2019 (Q8BERT) quantize BERT's matrix multiplies to
8 bits, and Kurtic et al. 2022 (oBERT, Sec. 4) report their CPU speed-ups for models that are both
pruned and quantized. A compound row takes the checkpoint of its *base* row at the same task, budget,
seed and fine-tuning length (``starts_from = "pruned"``: the workflow hands the job that folder) and
applies the ``int8_dynamic`` row's post-training quantization to it (``prunebench.quantization.int8``:
symmetric per-channel int8 weights, activations quantized at run time). No training step: the row
costs one quantization, and its difference from the base row is the effect of quantization alone.

Remaining weights: the base's zeros stay zeros (code 0) and are the row's pruned weights. A kept
weight whose code rounds to 0 is not pruned (``PruningMethod.quantizes``), so the row's remaining
fraction is the one counted (``prunebench.structure.budget``) on its starting checkpoint, before
quantization (``describe()["remaining_before_quantization"]``, used by the measure job).

Rows: ``{base}_int8`` for the element-wise rows that lead the 10% budget (``BASES``); the base must run
in the same experiment (``prunebench.config`` says so otherwise), at the base's budgets.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from methods.quantization import Int8Dynamic
from prunebench.method.base import TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import remaining_fraction

#: the element-wise rows a compound row exists for
BASES = ("magnitude_global", "sparsegpt", "obert")


class SparseThenInt8(Int8Dynamic):
    """A pruned row's checkpoint, quantized to int8 after training (module docstring)."""

    starts_from = "pruned"
    #: the registered row whose checkpoint (same task, budget, seed, length) is quantized
    base_method: ClassVar[str] = ""
    granularity = "element+int8-weights"
    quantizes = True
    budget_free = False
    remaining_before_quantization: float | None = None

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        super().prepare(model, plan)
        self.remaining_before_quantization = remaining_fraction(model)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["base_method"] = self.base_method
        out["remaining_before_quantization"] = self.remaining_before_quantization
        return out


def _compound(base: str) -> type[SparseThenInt8]:
    cls = type(
        f"{base.title().replace('_', '')}Int8",
        (SparseThenInt8,),
        {
            "__doc__": f"{base}'s pruned checkpoint, then post-training int8.",
            "paper": f"{base} (its row's paper), then int8 as Zafrir et al. 2019 (Q8BERT, post-training dynamic)",
            "base_method": base,
            "__module__": __name__,
        },
    )
    return register(f"{base}_int8")(cls)


for _base in BASES:
    _compound(_base)
