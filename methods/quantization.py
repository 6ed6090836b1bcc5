"""int8 dynamic quantization: the Q8BERT-style comparison row (no sparsity budget).

Zafrir et al. 2019 ("Q8BERT: Quantized 8Bit BERT", arXiv 1910.06188) store every matrix
multiply of BERT in 8-bit integers. This row is the post-training *dynamic* variant:
nothing changes during training; ``finalize`` replaces each encoder ``nn.Linear`` by an
int8 layer (symmetric per-channel int8 weights stored as plain tensors, activations quantized
at run time, integer GEMM), see ``prunebench.quantization.int8`` for the scheme and why it does not use
the deprecated ``torch.ao.quantization.quantize_dynamic``.

Setting ``kernel`` (``auto`` | ``engine`` | ``int_mm``): the integer matrix product at inference.
``auto`` (default) runs PyTorch's quantized engine (``quantized::linear_dynamic`` on
``x86``/``fbgemm``/``onednn``: fast on AVX2 and AVX512 CPUs alike) where it is available, else
``torch._int_mm`` (fast only with VNNI). The stored checkpoint is the same for every kernel.
``describe()`` records the setting (``settings.kernel``) and what ran on the machine that trained
and evaluated the model (``kernel``: ``prunebench.quantization.int8.kernel_report``).

The method quantizes the dense baseline's checkpoint of the same task and seed (``starts_from =
"dense"``, ``trains = False``: post-training, no fine-tuning step), so the quantized model is the dense
baseline, quantized: the accuracy difference in the report is the effect of quantization alone, and the
row costs no second fine-tuning. It is budget-free: the
workflow runs it once per (task, seed) at budget 1. Embeddings, pooler and classifier stay
fp32 (the paper's quantization-aware variant also quantizes the embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.quantization.int8 import (
    DEFAULT_KERNEL,
    KERNELS,
    check_kernel,
    engine_unavailable,
    kernel_report,
    quantize_encoder_linears,
)


@dataclass(frozen=True)
class Int8Settings:
    kernel: str = field(
        default=DEFAULT_KERNEL,
        metadata={
            "help": f"int8 matrix product at inference, one of {list(KERNELS)}: 'engine' = PyTorch's quantized engine "
            "(quantized::linear_dynamic), 'int_mm' = torch._int_mm, 'auto' = engine where available"
        },
    )

    def __post_init__(self):
        check_kernel(self.kernel)


@register("int8_dynamic")
class Int8Dynamic(PruningMethod):
    """Post-training dynamic int8 quantization of the encoder's linear layers."""

    paper = "Zafrir et al. 2019, Q8BERT (arXiv 1910.06188): int8 comparison row, post-training dynamic variant"
    starts_from = "dense"  # the dense baseline of the same task and seed, quantized after training
    trains = False
    granularity = "int8-weights"
    quantizes = True
    budget_free = True
    Settings = Int8Settings
    kernel_info: dict[str, Any] | None = None

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        """``kernel: engine`` where the engine cannot run fails here, before training, not in ``finalize``."""
        if self.settings.kernel != "engine":
            return
        why = engine_unavailable(next(model.parameters()).device)
        if why is not None:
            raise RuntimeError(
                f"method int8_dynamic: kernel 'engine' requested, but {why}; use kernel 'auto' or 'int_mm'"
            )

    def finalize(self, model: nn.Module) -> nn.Module:
        model = quantize_encoder_linears(model, kernel=self.settings.kernel)
        self.kernel_info = kernel_report(model)
        return model

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["kernel"] = dict(self.kernel_info) if self.kernel_info else {"setting": self.settings.kernel, "used": None}
        return out
