"""int4 encoder matrices: symmetric per-channel 4-bit weights, two codes per byte on disk.

The storage format of the ``quant_noise_int4`` row (``methods/quant_noise.py``):

- codes: ``q = clamp(round(w / s), -7, 7)`` with one step per output row, ``s = max|row| / 7``
  (``prunebench.quantization.fake_quant``; the code -8 is unused, so the grid is symmetric);
- file (``model.safetensors``): each encoder matrix is stored as ``<name>.weight_packed``, a
  ``uint8`` tensor of shape ``(out, ceil(in / 2))`` with two 4-bit two's-complement codes per byte
  (column ``2j`` in the low nibble, ``2j + 1`` in the high nibble; an odd last column is padded with
  0), and ``<name>.weight_scale`` (fp32, one per row) -- plain tensors that safetensors stores, so
  the bytes on disk of an encoder matrix are ``out * in / 2`` + ``4 * out``, ~1/8 of fp32;
- in memory: ``Int4WeightLinear.weight`` is a frozen ``int8`` parameter holding the codes unpacked
  (one per byte, shape ``(out, in)``), so the shared ruler (``prunebench.structure.budget``: non-zero entries
  of 2-D encoder parameters), the FLOP counter and the sparse encoding see a weight matrix of the
  dense shape; its state dict (``_save_to_state_dict``) holds the packed codes instead, and loading
  unpacks them.

Inference: **there is no int4 matrix-multiply kernel on the CPU here**. ``forward`` dequantizes the
codes to an fp32 matrix (``q * s``) at every call and runs ``torch.nn.functional.linear`` in fp32;
activations stay fp32. The latency of an int4 row is therefore fp32 latency plus the dequantization,
never an int4 speed-up; the saving is bytes on disk (and the codes held one per byte in memory).

A model with such layers carries ``config.prunebench_quantization`` with ``scheme: int4-weight-only``
(so ``prunebench.checkpoints.portable`` saves it in the non-stock format); ``prunebench.checkpoints.store.load_model``
routes such folders to ``load_int4_model``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.quantization.fake_quant import per_token_scale, quantize, symmetric_scale
from prunebench.quantization.int8 import CONFIG_ATTR, encoder_linear_names

BITS = 4
SCHEME = {
    "scheme": "int4-weight-only",
    "bits": BITS,
    "weights": "int4 symmetric per output channel (codes -7..7, step max|row|/7), two codes per byte on disk",
    "activations": "fp32 (not quantized)",
    "modules": "encoder nn.Linear",
    "kernel": "dequantize to fp32 at every forward + torch.nn.functional.linear (no int4 CPU kernel)",
}
PACKED = "weight_packed"


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack integer codes in [-8, 7] of shape ``(rows, cols)`` into ``uint8`` ``(rows, ceil(cols / 2))``."""
    if codes.dim() != 2:
        raise ValueError(f"pack_int4 expects a matrix, got shape {tuple(codes.shape)}")
    c = codes.to(torch.int16)
    if bool(((c < -8) | (c > 7)).any()):
        raise ValueError("int4 codes must lie in [-8, 7]")
    if c.shape[1] % 2:
        c = F.pad(c, (0, 1))
    nibbles = (c & 0xF).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of ``pack_int4``: ``int8`` codes of shape ``(rows, cols)``."""
    p = packed.to(torch.int16)
    low, high = p & 0xF, (p >> 4) & 0xF
    codes = torch.stack((low, high), dim=-1).reshape(p.shape[0], -1)[:, :cols]
    return torch.where(codes >= 8, codes - 16, codes).to(torch.int8)


def quantize_weight_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(int8 codes in [-7, 7], fp32 step per row)``: symmetric per-output-channel 4-bit quantization."""
    scale = symmetric_scale(weight, BITS, axis=0)  # (out, 1)
    return quantize(weight, scale, BITS).to(torch.int8), scale.reshape(-1)


class Int4WeightLinear(nn.Linear):
    """A linear layer whose weight is int4 codes + one fp32 step per row; computes in fp32."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, input_bits: int | None = None):
        nn.Module.__init__(self)  # no float weight to allocate
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, dtype=torch.int8), requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        #: ``None``: fp32 activations (quant_noise_int4). An integer b: the input is rounded to b bits,
        #: symmetric per token (``prunebench.quantization.fake_quant.per_token_scale``), computed in fp32 -- the
        #: 8-bit activations of Q-BERT's mixed rows (``prunebench.quantization.mixed``); not in the state dict,
        #: the config's scheme carries it.
        self.input_bits = input_bits

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int4WeightLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        codes, scale = quantize_weight_int4(linear.weight)
        layer.weight.data.copy_(codes)
        layer.weight_scale.copy_(scale)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach().float())
        return layer

    def reset_parameters(self) -> None:  # nn.Linear API; the codes are set by from_float or loading
        pass

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_bits is not None:
            xf = x.float()
            scale = per_token_scale(xf, self.input_bits)
            x = (quantize(xf, scale, self.input_bits) * scale).to(x.dtype)
        w = self.dequantized_weight().to(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination.pop(prefix + "weight", None)
        destination[prefix + PACKED] = pack_int4(self.weight.detach())

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + PACKED
        if key in state_dict:
            packed = state_dict.pop(key)
            expected = (self.out_features, (self.in_features + 1) // 2)
            if tuple(packed.shape) != expected or packed.dtype != torch.uint8:
                error_msgs.append(f"{key}: expected uint8 {expected}, got {packed.dtype} {tuple(packed.shape)}")
                return
            state_dict[prefix + "weight"] = unpack_int4(packed, self.in_features)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            "int4 weights" + (f", {self.input_bits}-bit inputs per token" if self.input_bits else "")
        )


@torch.no_grad()
def quantize_encoder_linears_int4(model: nn.Module) -> nn.Module:
    """Replace every encoder ``nn.Linear`` of ``model`` by ``Int4WeightLinear`` (in place); marks the config."""
    model.eval()
    for name in encoder_linear_names(model):
        module = model.get_submodule(name)
        if not isinstance(module, Int4WeightLinear):
            model.set_submodule(name, Int4WeightLinear.from_float(module).to(module.weight.device))
    if getattr(model, "config", None) is not None:
        setattr(model.config, CONFIG_ATTR, dict(SCHEME))
    return model


def is_int4_model(model: nn.Module) -> bool:
    return any(isinstance(m, Int4WeightLinear) for m in model.modules())


def is_int4_config(config) -> bool:
    """True when a model config marks int4 encoder matrices (``SCHEME``)."""
    q = getattr(config, CONFIG_ATTR, None)
    return isinstance(q, dict) and q.get("scheme") == SCHEME["scheme"]


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the encoder matrices as the file stores them: packed codes and scales."""
    packed = scales = 0
    for name in encoder_linear_names(model):
        m = model.get_submodule(name)
        if isinstance(m, Int4WeightLinear):
            packed += m.out_features * ((m.in_features + 1) // 2)
            scales += m.weight_scale.numel() * m.weight_scale.element_size()
    return {"packed_code_bytes": packed, "scale_bytes": scales}
