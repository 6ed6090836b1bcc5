"""Quant-Noise: fine-tuning with quantization noise (Fan, Stock et al. 2020, "Training with
Quantization Noise for Extreme Model Compression", arXiv 2004.07320), scalar int8 and int4 rows.

The method (``../shared/PAPERS-2.md`` section 2; fairseq ``examples/quant_noise/README.md`` and
``fairseq/modules/quantization/scalar/``): in each training forward pass a random subset of the
blocks of every weight matrix is replaced by its quantized value and the rest stays in full
precision; gradients pass straight through (``w + mask * (q(w) - w).detach()``, mask ~ Bernoulli(p)).
At evaluation the whole network is quantized (p = 1). For *scalar* quantization a block is one
weight element. ``prunebench.quantization.fake_quant`` has the equations (``quant_noise``, ``WeightFakeQuant``).

Rows:

- ``quant_noise``: 8 bits, finalized with ``prunebench.quantization.int8.quantize_encoder_linears`` (real
  int8 weights, activations quantized dynamically at run time, int8 kernel) -- latency on the int8
  kernel.
- ``quant_noise_int4``: 4 bits, finalized with ``prunebench.quantization.int4.quantize_encoder_linears_int4``:
  per-channel int4 codes, two per byte on disk (~1/8 of fp32 bytes for the encoder matrices).
  **Inference dequantizes the weights to fp32 at every forward pass** (no int4 kernel on the CPU
  here): the row saves bytes on disk, not time.

Choices, each with why:

- p = 0.5, the value of fairseq's scalar example (``--quant-noise-scalar 0.5``). The paper's
  int4 runs use a p not read here (tag [U]); 0.5 is used for both rows.
- Quantizer: symmetric, one step per output row (``max|row| / (2^(b-1) - 1)``), recomputed at every
  forward pass -- exactly the quantizer the finalized model uses (int8: ``quantize_weight`` of
  ``prunebench.quantization.int8``; int4: ``prunebench.quantization.int4``), so the noise is the error of the deployed
  quantization and the model evaluated at p = 1 before ``finalize`` has exactly the finalized model's
  weights (int4: it *is* the finalized model, activations being fp32 in both). fairseq
  offers per-tensor, per-channel and histogram observers (default: histogram, affine uint8 per
  tensor) and recomputes the parameters every 1,000 forward passes to save the observer's cost;
  max|row| costs nothing, so it is recomputed every pass.
- Which tensors: the encoder's linear weights (Q, K, V, attention output, FFN in and out), the
  matrices the finalized model quantizes. fairseq's ``quantize_model_`` also wraps the embeddings
  and every other linear layer; here embeddings, pooler and classifier stay fp32 in the finalized
  model (as ``int8_dynamic``), so noise on them would train for a quantization that never happens.
- Activations (``quant_noise`` only, ``activation_noise: true``): fairseq quantizes the outputs of
  each quantized module with the same p (per-tensor histogram observer, clamped to +-5). The int8
  kernel quantizes the *inputs* of the encoder linears dynamically at run time, so the noise is put
  there, with the same p: symmetric 8-bit with one step per token (``max|x_token| / 127``), the
  quantizer of the ``int_mm`` kernel of ``prunebench.quantization.int8``. Its default ``engine`` kernel
  quantizes activations a little differently (rows scaled to max|x| = 1, then uint8 with a 7-bit
  range per tensor, as of this writing; the kernels are being reworked), so for activations the
  noise approximates the deployed quantizer instead of copying it; which kernel ran is recorded
  (``inference.kernel_report``). The weights' grid is the deployed one exactly. At evaluation all
  activations are quantized, so the model evaluated at p = 1 before ``finalize`` has the finalized
  model's weights and approximately its activation rounding. The int4 row keeps activations fp32
  (its inference does), so it has no activation noise.
- Fine-tuning budget: the common one (same trainer and steps), from the pretrained weights: the
  paper trains with noise (in pre-training and fine-tuning; pre-training is out of this benchmark's
  budget, as for LayerDrop), so ``starts_from = "pretrained"``. Budget-free: run once per (task, seed).

Left out: **iPQ** (iterative product quantization, the paper's headline 14 MB RoBERTa). Faithfully it
needs k-means codebooks over blocks of 8 input columns of each matrix, quantizing FFN, embeddings and
attention in stages with ~20 k-means iterations each and centroid fine-tuning between the stages,
i.e. several extra training phases beyond the common fine-tuning budget, a codebook storage format
and a lookup kernel; none of that fits this row's budget or the time given, so only the scalar
variant is implemented. Its block noise (fairseq ``quant_noise``: blocks of 8 zeroed and rescaled by
1/(1-p), written into the weights) is therefore not implemented either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.quantization.fake_quant import InputFakeQuant, WeightFakeQuant
from prunebench.quantization.int4 import quantize_encoder_linears_int4
from prunebench.quantization.int8 import inference_details, quantize_encoder_linears
from prunebench.structure.budget import dense_encoder_size, prunable_linears

PAPER = "Fan et al. 2020, Quant-Noise (arXiv 2004.07320): scalar quantization noise"


@dataclass(frozen=True)
class QuantNoiseSettings:
    p: float = field(
        default=0.5,
        metadata={
            "help": "share of weights (and activations) quantized per training forward pass "
            "(fairseq scalar example: 0.5)"
        },
    )
    activation_noise: bool = field(
        default=True, metadata={"help": "also quantize a share p of the encoder linears' inputs (8-bit, per token)"}
    )

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p {self.p} must be in [0, 1]")


@dataclass(frozen=True)
class QuantNoiseInt4Settings:
    p: float = field(
        default=0.5,
        metadata={
            "help": "share of weights quantized to 4 bits per training forward pass (the paper's int4 p not read; 0.5)"
        },
    )

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p {self.p} must be in [0, 1]")


@register("quant_noise")
class QuantNoise(PruningMethod):
    """Scalar int8 quantization noise during fine-tuning, then real int8 encoder matrices."""

    paper = PAPER + ", int8"
    starts_from = "pretrained"
    granularity = "int8-weights"
    quantizes = True
    budget_free = True
    Settings = QuantNoiseSettings
    bits: ClassVar[int] = 8
    finalize_enforcement = (
        "none (no budget): stores the encoder matrices with the quantizer the noise used; the "
        "weights it rounds to zero are the only ones counted as removed"
    )

    @property
    def activation_noise(self) -> bool:
        return bool(getattr(self.settings, "activation_noise", False))

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        self.linears: dict[str, nn.Linear] = prunable_linears(model)
        self.weights: dict[str, WeightFakeQuant] = {}
        self.inputs: dict[str, InputFakeQuant] = {}
        for i, (name, module) in enumerate(self.linears.items()):
            noise = WeightFakeQuant(self.bits, axis=0, p=self.settings.p, seed=plan.seed * 1000 + 2 * i)
            parametrize.register_parametrization(module, "weight", noise)
            self.weights[name] = noise
            if self.activation_noise:
                self.inputs[name] = InputFakeQuant(
                    8, mode="per_token", p=self.settings.p, seed=plan.seed * 1000 + 2 * i + 1
                ).install(module)

    def _remove(self) -> None:
        for hook in getattr(self, "inputs", {}).values():
            hook.remove()
        for module in getattr(self, "linears", {}).values():
            if parametrize.is_parametrized(module, "weight"):
                # the float weights: finalize quantizes them with the very quantizer of the noise
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)

    def quantize(self, model: nn.Module) -> nn.Module:
        return quantize_encoder_linears(model)

    def finalize(self, model: nn.Module) -> nn.Module:
        # the guard of prunebench.method.base: non-zero weights of the fully quantized (eval-mode, p = 1) matrices,
        # which are exactly the finalized model's
        model.eval()
        with torch.no_grad():
            nonzero = sum(int(torch.count_nonzero(m.weight)) for m in getattr(self, "linears", {}).values())
        self.remaining_before_finalize = nonzero / dense_encoder_size(model.config)
        self._remove()
        model = self.quantize(model)
        self.inference = inference_details(model)
        return model

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        weights, inputs = getattr(self, "weights", {}), getattr(self, "inputs", {})

        def share(hooks):
            seen = sum(h.seen for h in hooks)
            return sum(h.noised for h in hooks) / seen if seen else None

        q = 2 ** (self.bits - 1) - 1
        out["quantization"] = {
            "scheme": "quantization noise (scalar): a random share p of the entries quantized per training forward "
            "pass, straight-through gradient; all quantized at evaluation and in the finalized model",
            "bits": self.bits,
            "p": self.settings.p,
            "blocks": "scalar: one weight element per block, Bernoulli(p) per element and forward pass",
            "weights": f"encoder Linear weights, symmetric per output row, step max|row|/{q}, "
            "recomputed every forward pass",
            "activations": (
                "inputs of the encoder Linears, 8-bit symmetric per token (the int_mm kernel's "
                "quantizer; the engine kernel's differs slightly), share p in training"
                if self.activation_noise
                else "fp32, not quantized"
            ),
            "noised": {"encoder_linear_weights": len(weights), "encoder_linear_inputs": len(inputs)},
            "noised_share_weights": share(weights.values()),
            "noised_share_activations": share(inputs.values()),
            "kept_fp32": ["embeddings", "pooler", "classifier", "biases", "LayerNorm"],
            "ipq": "not implemented (see methods/quant_noise.py): scalar variant only",
            "inference": dict(getattr(self, "inference", {})),
        }
        return out


@register("quant_noise_int4")
class QuantNoiseInt4(QuantNoise):
    """Scalar int4 quantization noise during fine-tuning, then packed int4 encoder matrices (fp32 compute)."""

    paper = PAPER + ", int4"
    granularity = "int4-weights"
    quantizes = True
    Settings = QuantNoiseInt4Settings
    bits = 4

    def quantize(self, model: nn.Module) -> nn.Module:
        return quantize_encoder_linears_int4(model)
