"""Mixed-precision encoders: some encoder layers int8, others int4-packed, group-wise ranges.

The storage of the ``qbert`` row (Q-BERT, Shen et al. 2020, ``methods/qbert.py``): each encoder
``nn.Linear`` gets its own bit width b and is stored in the container the project has a kernel or a
format for:

- b = 8: ``prunebench.quantization.int8.Int8DynamicLinear`` (int8 codes + one fp32 step per output row, real
  int8 kernel, activations quantized dynamically by the kernel);
- b in {2, 3, 4}: ``prunebench.quantization.int4.Int4WeightLinear`` (codes in [-(2^(b-1)-1), 2^(b-1)-1], two per
  byte on disk, one fp32 step per row; dequantized to fp32 at every forward: no int4 CPU kernel), with
  its input rounded to ``input_bits`` (8) bits per token, computed in fp32 (``Int4WeightLinear.input_bits``).
  2- and 3-bit codes take 4 bits on disk here (no 2/3-bit packing).

Group-wise ranges: one range (step ``max|group| / (2^(b-1) - 1)``) per group of ``group_rows``
consecutive output rows (``group_scale``); ``group_rows = 1`` is one range per row. The int8 and int4
containers store one step per *row*, so any grouping of whole rows is stored exactly: every row of a
group carries the group's step. ``quantize_linear`` builds the layers from float weights with the
very quantizer ``GroupWeightFakeQuant`` trains with, so the stored weights are bit-for-bit the
trained fake-quantized ones.

The model's config carries ``prunebench_quantization`` = ``{"scheme": "mixed-int8-int4", "layers":
{name: {"bits": b, "storage": "int8" | "int4"}}, "group_rows": ..., "input_bits": ..., "kernel": ...}``
(``SCHEME``); ``prunebench.checkpoints.store.load_model`` routes such folders to ``load_mixed_model``, which
rebuilds each layer in its container and loads the state dict strictly. ``save_model`` writes them in
the non-stock format (``prunebench.checkpoints.portable``: label ``prunebench-int8-int4-...``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunebench.quantization.fake_quant import fake_quantize, qmax, quantize
from prunebench.quantization.int4 import Int4WeightLinear
from prunebench.quantization.int8 import (
    CONFIG_ATTR,
    DEFAULT_KERNEL,
    KERNEL_DETAILS,
    Int8DynamicLinear,
    check_kernel,
    encoder_linear_names,
)

SCHEME_NAME = "mixed-int8-int4"
#: Bit widths with a container: 8 -> int8 layer; 2, 3, 4 -> packed int4 layer.
SUPPORTED_BITS = (2, 3, 4, 8)
INPUT_BITS = 8


def storage_of(bits: int) -> str:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"mixed precision: {bits} bits has no container here; supported {list(SUPPORTED_BITS)}")
    return "int8" if bits == 8 else "int4"


@torch.no_grad()
def group_scale(w: torch.Tensor, bits: int, group_rows: int = 1) -> torch.Tensor:
    """Step per output row, shape ``(out, 1)``: rows in a group of ``group_rows`` consecutive rows share
    ``max|group| / (2^(b-1) - 1)``; an all-zero group gets step 1 (zeros stay zeros)."""
    if w.dim() != 2:
        raise ValueError(f"group_scale expects a matrix, got shape {tuple(w.shape)}")
    if group_rows < 1 or w.shape[0] % group_rows:
        raise ValueError(f"group_rows {group_rows} must divide the {w.shape[0]} output rows")
    amax = w.detach().abs().float().reshape(w.shape[0] // group_rows, -1).amax(dim=1)
    step = torch.where(amax > 0, amax / qmax(bits), torch.ones_like(amax))
    return step.repeat_interleave(group_rows).reshape(-1, 1)


class GroupWeightFakeQuant(nn.Module):
    """Parametrization ``W -> W^``: symmetric b-bit fake quantization with one range per group of
    ``group_rows`` output rows, recomputed from ``W`` at every forward pass; straight-through gradient
    (``prunebench.quantization.fake_quant.fake_quantize``)."""

    def __init__(self, bits: int, group_rows: int = 1):
        super().__init__()
        storage_of(bits)
        self.bits, self.group_rows = int(bits), int(group_rows)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quantize(w, group_scale(w, self.bits, self.group_rows), self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, group_rows={self.group_rows}"


@torch.no_grad()
def quantize_linear(
    linear: nn.Linear, bits: int, group_rows: int = 1, kernel: str = DEFAULT_KERNEL, input_bits: int | None = INPUT_BITS
) -> nn.Linear:
    """The int8 (b = 8) or int4-packed (b <= 4) layer of ``linear`` with group-wise steps (module docstring)."""
    w = linear.weight.detach().float()
    scale = group_scale(w, bits, group_rows)
    codes = quantize(w, scale, bits).to(torch.int8)
    bias = linear.bias is not None
    if storage_of(bits) == "int8":
        layer = Int8DynamicLinear(linear.in_features, linear.out_features, bias, kernel=check_kernel(kernel))
    else:
        layer = Int4WeightLinear(linear.in_features, linear.out_features, bias, input_bits=input_bits)
    layer.weight.data.copy_(codes)
    layer.weight_scale.copy_(scale.reshape(-1))
    if bias:
        layer.bias.data.copy_(linear.bias.detach().float())
    return layer.to(linear.weight.device)


def scheme(
    bits: dict[str, int], group_rows: int, kernel: str = DEFAULT_KERNEL, input_bits: int | None = INPUT_BITS
) -> dict[str, Any]:
    """The config entry of a mixed model (``prunebench_quantization``)."""
    return {
        "scheme": SCHEME_NAME,
        "layers": {n: {"bits": int(b), "storage": storage_of(int(b))} for n, b in bits.items()},
        "group_rows": int(group_rows),
        "input_bits": input_bits,
        "kernel": check_kernel(kernel),
        "weights": f"symmetric, one step per group of {group_rows} consecutive output rows (stored per row); "
        "int8 layers: int8 codes; 2-4 bit layers: 4-bit two's-complement codes, two per byte",
        "activations": (
            f"int8 layers: the int8 kernel's dynamic per-token quantization; int4-packed layers: "
            f"{input_bits}-bit symmetric per token, computed in fp32"
            if input_bits
            else "int8 layers: the int8 kernel's dynamic quantization; int4-packed layers: fp32"
        ),
        "modules": "encoder nn.Linear",
        "kernels": {
            "int8": KERNEL_DETAILS,
            "int4": "dequantize to fp32 at every forward + torch.nn.functional.linear (no int4 CPU kernel)",
        },
    }


@torch.no_grad()
def quantize_encoder_mixed(
    model: nn.Module,
    bits: dict[str, int],
    group_rows: int = 1,
    kernel: str = DEFAULT_KERNEL,
    input_bits: int | None = INPUT_BITS,
) -> nn.Module:
    """Replace every encoder ``nn.Linear`` named in ``bits`` by its int8 / int4 layer (in place); every
    encoder linear must be named. Marks the config (``scheme``)."""
    names = encoder_linear_names(model)
    missing = sorted(set(names) - set(bits))
    unknown = sorted(set(bits) - set(names))
    if missing or unknown:
        raise ValueError(f"mixed precision: bits missing for {missing[:5]}, unknown layers {unknown[:5]}")
    model.eval()
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, (Int8DynamicLinear, Int4WeightLinear)):
            raise ValueError(f"{name} is already quantized")
        model.set_submodule(name, quantize_linear(module, bits[name], group_rows, kernel, input_bits))
    if getattr(model, "config", None) is not None:
        setattr(model.config, CONFIG_ATTR, scheme(bits, group_rows, kernel, input_bits))
    return model


def is_mixed_config(config) -> bool:
    q = getattr(config, CONFIG_ATTR, None)
    return isinstance(q, dict) and q.get("scheme") == SCHEME_NAME


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the encoder matrices as the file stores them: int8 codes (1 byte per weight), packed
    int4 codes (half a byte), fp32 steps (4 bytes per row), float matrices; and the fp32 equivalent."""
    out = {"int8_code_bytes": 0, "int4_packed_code_bytes": 0, "scale_bytes": 0, "float_bytes": 0, "fp32_bytes": 0}
    for name in encoder_linear_names(model):
        m = model.get_submodule(name)
        out["fp32_bytes"] += 4 * m.out_features * m.in_features
        if isinstance(m, Int4WeightLinear):
            out["int4_packed_code_bytes"] += m.out_features * ((m.in_features + 1) // 2)
            out["scale_bytes"] += m.weight_scale.numel() * m.weight_scale.element_size()
        elif isinstance(m, Int8DynamicLinear):
            out["int8_code_bytes"] += m.weight.numel()
            out["scale_bytes"] += m.weight_scale.numel() * m.weight_scale.element_size()
        else:
            out["float_bytes"] += m.weight.numel() * m.weight.element_size()
    out["total"] = out["int8_code_bytes"] + out["int4_packed_code_bytes"] + out["scale_bytes"] + out["float_bytes"]
    return out
