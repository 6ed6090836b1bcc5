"""Q8BERT: quantization-aware fine-tuning with 8-bit fake quantization (Zafrir et al. 2019,
"Q8BERT: Quantized 8Bit BERT", arXiv 1910.06188), finalized to real int8 encoder matrices.

What the paper does (``../shared/PAPERS-2.md`` section 3; the authors' code is
``IntelLabs/nlp-architect``, ``nlp_architect/nn/torch/quantization.py`` and
``models/transformers/quantized_bert.py``), and what this module does:

- **Symmetric linear quantization, 8 bits** (``prunebench.quantization.fake_quant``): ``q = clamp(round(x / s),
  -127, 127)``, ``s = T / 127``.
- **Weights**: ``T = max|W|`` of the whole matrix, recomputed at every training step (per tensor;
  ``weight_scale: channel`` is an option, see below). Installed as a parametrization of every encoder
  ``nn.Linear`` (Q, K, V, attention output, FFN in and out): the forward pass uses ``W^``, the
  optimiser updates the float ``W`` (straight-through estimator).
- **Activations**: the input of every one of those layers is fake-quantized to 8 bits with
  ``T`` = an exponential moving average of ``max|x|`` (``EMARangeObserver``), decay 0.9999, set by the
  first training batch and updated at every training forward pass, as ``QuantizedLinear`` does in
  EMA mode. (Decay 0.9999 over a few hundred steps moves ``T`` very little from the first batch's
  value; that is what the paper's setting does under this benchmark's budget.)
- **Straight-through estimator**: round inside the forward pass, identity gradient, also where a
  value was clamped (``FakeLinearQuantizationWithSTE`` returns ``grad_output`` unchanged).
- **Embeddings**: the word and position embeddings are fake-quantized per tensor (``T = max|E|``),
  the token-type embeddings stay fp32 -- the authors' configuration (``word_embeddings`` and
  ``position_embeddings`` in EMA mode, ``token_type_embeddings`` ``none``; a third-party copy of it,
  tag [S]). When the embeddings are frozen (``finetune.freeze_embeddings``, the default profile) their
  fake-quantized value never changes, so it is written into the weights once in ``prepare`` (the same
  forward pass, without re-quantizing the 11.7M-entry MiniLM table at every step); trainable embeddings get a
  parametrization like the linear layers. ``quantize_embeddings: false`` keeps them fp32.
- **Fine-tuning budget**: the common one (same trainer, steps, optimiser and schedule), from the
  *pretrained* weights -- the paper quantizes during fine-tuning (``starts_from = "pretrained"``,
  like ``int8_dynamic``; with the same seed the difference to the dense row is the quantization-aware
  training and the int8 conversion). Budget-free: the workflow runs it once per (task, seed) at budget 1.

Kept in fp32 (what the authors keep in fp32, and what this benchmark's int8 path keeps):
biases (the paper stores them as int32 at scale ``s_w s_x`` at inference; training uses the float bias,
as the authors' ``training_quantized_forward`` does), LayerNorm, softmax, GELU, the attention products
(``QK^T``, ``PV``), token-type embeddings. Left out, with why:

- pooler and classifier: the authors quantize them too (the head after 200 steps, [S]), but
  ``quantize_encoder_linears`` -- the int8 path whose latency is measured -- keeps them fp32, so
  fake-quantizing them in training would train for a model that is not the one evaluated;
- re-quantizing the outputs of Q and K (the authors' ``requantize_output`` for the inputs of the
  attention-score product, [S]): the int8 kernel keeps the attention products in fp32.

``finalize``: the activation hooks are removed, every encoder weight is left at its fake-quantized
value ``W^`` (the weights the model was trained with), the embeddings too, and
``prunebench.quantization.int8.quantize_encoder_linears`` turns the encoder linears into real int8 layers, so
latency is measured on the int8 kernel. That kernel differs from the training simulation in two
ways, both recorded in ``describe()``:

1. it stores weights with one scale per *output row* (``max|row| / 127``) instead of the trained
   per-tensor scale: rows whose largest weight is the matrix's largest are reproduced exactly, the
   others are re-rounded onto a finer grid (error at most half a row step, below half the trained
   step); ``finalize_requantization`` records the largest error in trained steps and the share of
   weights reproduced exactly. ``weight_scale: channel`` trains with per-row scales instead, which
   the kernel reproduces exactly (a deviation from the paper, off by default);
2. it quantizes activations dynamically at run time, with its own scheme (``prunebench.quantization.int8``
   describes its kernels; which one ran is in ``inference.kernel_report``), instead of with the
   learned static 8-bit EMA ranges; the learned thresholds are recorded (``activation_thresholds``)
   but not used.

A kernel option of ``quantize_encoder_linears`` taking given per-tensor weight scales and static
activation ranges would run the learned Q8BERT scheme exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.quantization.fake_quant import (
    InputFakeQuant,
    WeightFakeQuant,
    fake_quantize_embeddings,
    symmetric_scale,
)
from prunebench.quantization.int8 import inference_details, quantize_encoder_linears
from prunebench.structure.budget import prunable_linears, remaining_fraction

#: Q8BERT quantizes to 8 bits (weights and activations); the int8 kernel needs 8.
BITS = 8
#: Embeddings the authors quantize (token-type embeddings stay fp32).
EMBEDDINGS = ("word_embeddings", "position_embeddings")


@dataclass(frozen=True)
class Q8BertSettings:
    ema_decay: float = field(
        default=0.9999, metadata={"help": "decay of the EMA of max|x| that sets each activation range (paper: 0.9999)"}
    )
    weight_scale: str = field(
        default="tensor",
        metadata={
            "help": "'tensor': T = max|W| per matrix (paper); 'channel': per output row (what the int8 kernel stores)"
        },
    )
    quantize_embeddings: bool = field(
        default=True, metadata={"help": "fake-quantize the word and position embeddings to 8 bits (paper: yes)"}
    )

    def __post_init__(self):
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay {self.ema_decay} must be in [0, 1)")
        if self.weight_scale not in ("tensor", "channel"):
            raise ValueError(f"weight_scale must be 'tensor' or 'channel', got {self.weight_scale!r}")


@register("q8bert")
class Q8Bert(PruningMethod):
    """Quantization-aware fine-tuning with 8-bit fake quantization (EMA activation ranges, STE), then int8."""

    paper = "Zafrir et al. 2019, Q8BERT (arXiv 1910.06188): quantization-aware fine-tuning, 8-bit"
    starts_from = "pretrained"  # the paper quantizes while fine-tuning the pretrained model
    granularity = "int8-weights"
    quantizes = True
    budget_free = True
    Settings = Q8BertSettings
    finalize_enforcement = (
        "none (no budget): converts the encoder matrices to int8; a weight the trained 8-bit grid "
        "rounds to zero stays zero, one it keeps stays non-zero"
    )

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        axis = None if self.settings.weight_scale == "tensor" else 0
        self.linears: dict[str, nn.Linear] = prunable_linears(model)
        self.inputs: dict[str, InputFakeQuant] = {}
        for name, module in self.linears.items():
            parametrize.register_parametrization(module, "weight", WeightFakeQuant(BITS, axis=axis))
            self.inputs[name] = InputFakeQuant(BITS, mode="ema", decay=self.settings.ema_decay).install(module)
        self.embeddings: dict[str, str] = (
            fake_quantize_embeddings(model, EMBEDDINGS, BITS) if self.settings.quantize_embeddings else {}
        )

    def finalize(self, model: nn.Module) -> nn.Module:
        for hook in getattr(self, "inputs", {}).values():
            hook.remove()
        snapped, steps = {}, {}
        for name, module in getattr(self, "linears", {}).items():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            snapped[name] = module.weight.detach().clone()
            steps[name] = symmetric_scale(snapped[name], BITS, None if self.settings.weight_scale == "tensor" else 0)
        # the guard of prunebench.method.base: what the method's own rule (the trained 8-bit grid) left non-zero;
        # re-quantizing per row keeps zeros zero and non-zeros non-zero (a row step <= the trained step)
        self.remaining_before_finalize = remaining_fraction(model)
        embeddings = model.base_model.embeddings
        for name in EMBEDDINGS:
            emb = getattr(embeddings, name, None)
            if emb is not None and parametrize.is_parametrized(emb, "weight"):
                parametrize.remove_parametrizations(emb, "weight", leave_parametrized=True)
        model = quantize_encoder_linears(model)
        self.inference = inference_details(model)
        self.requantization = _requantization(model, snapped, steps)
        return model

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        inputs = getattr(self, "inputs", {})
        per_channel = self.settings.weight_scale == "channel"
        out["quantization"] = {
            "scheme": "quantization-aware fine-tuning: symmetric linear fake quantization, straight-through estimator",
            "weight_bits": BITS,
            "activation_bits": BITS,
            "weights": (
                "T = max|W| per output row, every forward pass (deviation: paper per tensor)"
                if per_channel
                else "T = max|W| per matrix, every forward pass (paper)"
            ),
            "activations": f"input of every encoder Linear; T = EMA of max|x|, decay {self.settings.ema_decay}, "
            "set by the first training batch",
            "ema_decay": self.settings.ema_decay,
            "ste": "round in the forward pass, identity gradient everywhere (clamped values included)",
            "fake_quantized": {
                "encoder_linear_weights": len(getattr(self, "linears", {})),
                "encoder_linear_inputs": len(inputs),
                "embeddings": dict(getattr(self, "embeddings", {})),
            },
            "kept_fp32": [
                "biases",
                "LayerNorm",
                "softmax",
                "GELU",
                "attention products QK^T and PV",
                "token_type_embeddings",
                "pooler",
                "classifier",
            ]
            + ([] if self.settings.quantize_embeddings else list(EMBEDDINGS)),
            "activation_thresholds": {name: h.observer.state()["threshold"] for name, h in inputs.items()},
            "activation_updates": max((h.observer.updates for h in inputs.values()), default=0),
            "inference": {
                **getattr(self, "inference", {}),
                "differs_from_training": (
                    "weights: the trained per-row grid, reproduced exactly; "
                    if per_channel
                    else "weights re-quantized per output row from the trained values (finalize_requantization); "
                )
                + "activations quantized dynamically at run time by the kernel "
                "(kernel_report), not with the learned static EMA ranges",
            },
            "finalize_requantization": getattr(self, "requantization", None),
        }
        return out


@torch.no_grad()
def _requantization(model: nn.Module, snapped: dict[str, torch.Tensor], steps: dict[str, torch.Tensor]) -> dict | None:
    """How far the int8 layers' weights are from the trained fake-quantized weights (in trained steps)."""
    worst, exact, total = 0.0, 0, 0
    for name, w in snapped.items():
        module = model.get_submodule(name)
        if not hasattr(module, "dequantized_weight"):
            return None  # another kernel: nothing to compare with
        diff = (module.dequantized_weight().float() - w.float()).abs()
        step = steps[name].float()
        worst = max(worst, float((diff / step).max()))
        exact += int((diff <= 1e-5 * step).sum())
        total += w.numel()
    return {"max_error_in_trained_steps": round(worst, 6), "share_reproduced_exactly": exact / total if total else None}
