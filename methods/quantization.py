"""int8 dynamic quantization: the Q8BERT-style comparison row (no sparsity budget).

Zafrir et al. 2019 ("Q8BERT: Quantized 8Bit BERT", arXiv 1910.06188) store every matrix
multiply of BERT in 8-bit integers. This row is the post-training *dynamic* variant:
nothing changes during training; ``finalize`` replaces each encoder ``nn.Linear`` by an
int8 layer (symmetric per-channel int8 weights, activations quantized per token at run
time, integer GEMM), see ``prunebench.quantized`` for the scheme and why it does not use
the deprecated ``torch.ao.quantization.quantize_dynamic``.

The method starts from the *pretrained* weights and gets the common fine-tuning budget
with the same seed as the dense baseline, and the trainer is deterministic for a fixed
seed, so the quantized model is the dense baseline of that seed, quantized: the accuracy
difference in the report is the effect of quantization alone. It is budget-free: the
workflow runs it once per (task, seed) at budget 1. Embeddings, pooler and classifier stay
fp32 (the paper's quantization-aware variant also quantizes the embeddings).
"""

from __future__ import annotations

from torch import nn

from methods.base import PruningMethod
from methods.registry import register
from prunebench.quantized import quantize_encoder_linears


@register("int8_dynamic")
class Int8Dynamic(PruningMethod):
    """Post-training dynamic int8 quantization of the encoder's linear layers."""

    paper = "Zafrir et al. 2019, Q8BERT (arXiv 1910.06188): int8 comparison row, post-training dynamic variant"
    starts_from = "pretrained"  # same seed and budget as the dense run: the dense model, quantized
    granularity = "int8-weights"
    budget_free = True

    def finalize(self, model: nn.Module) -> nn.Module:
        return quantize_encoder_linears(model)
