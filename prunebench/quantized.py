"""Dynamic int8 quantization of the encoder's linear layers, saved and reloaded like any model.

The comparison row of Q8BERT (Zafrir et al. 2019, arXiv 1910.06188): 8-bit integer weights
in every encoder matrix multiply. Zafrir et al. train with simulated quantization during
fine-tuning; this benchmark applies *post-training dynamic* quantization (no training-time
change), which is the cheaper variant the same paper compares against.

Which PyTorch path
------------------
torch 2.13 still ships ``torch.ao.quantization.quantize_dynamic``, but it warns that
``torch.ao.quantization`` is deprecated (its successor is the separate ``torchao``
package, which this project does not install); its modules keep the weights in opaque
packed parameters that ``safetensors`` cannot store. This module therefore implements the
same scheme as torchao's "int8 dynamic activation, int8 weight" with plain tensors:

- weights: symmetric per-output-channel int8, ``w ~= weight_int8 * weight_scale[:, None]``;
- activations: quantized per token at run time, symmetric int8 (scale = max|x| / 127);
- the matrix product runs in integers with ``torch._int_mm`` (int8 x int8 -> int32, the
  kernel torchao itself calls; on the CPU it is oneDNN/fbgemm-backed), and is rescaled to
  fp32; where ``_int_mm`` refuses a shape, the exact integer product is computed in fp32.

``Int8DynamicLinear`` subclasses ``nn.Linear`` and keeps its int8 matrix in a frozen
``weight`` parameter, so the shared ruler (``prunebench.budget``: non-zero entries of 2-D
encoder parameters), the FLOP counter and the sparse encoding all see it unchanged. A
model with such layers carries ``config.prunebench_quantization``; ``load_quantized_model``
rebuilds it from a checkpoint folder (``prunebench.checkpoints.load_model`` routes such
folders here: ``is_quantized_checkpoint``). ``save_model`` writes them in the non-stock format
(``prunebench.portable``), so stock transformers refuses them instead of loading the int8
matrices as floats without their scales.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from prunebench.budget import ENCODER_PREFIX

#: Config attribute that marks a quantized model (and says how it was quantized).
CONFIG_ATTR = "prunebench_quantization"
SCHEME = {"scheme": "int8-dynamic", "weights": "int8 symmetric per output channel",
          "activations": "int8 symmetric per token, dynamic", "modules": "encoder nn.Linear",
          "kernel": "torch._int_mm"}
QMAX = 127


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantization: ``(int8 matrix, fp32 scale per row)``.

    Zero stays exactly zero, so pruned weights stay pruned; a row of zeros gets scale 1.
    """
    w = weight.detach().float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    q = torch.clamp(torch.round(w / scale[:, None]), -QMAX, QMAX).to(torch.int8)
    return q, scale


def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    amax = x.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    return torch.clamp(torch.round(x / scale[:, None]), -QMAX, QMAX).to(torch.int8), scale


def int8_matmul(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """``a @ b_t.T`` for int8 ``a`` (M, K) and ``b_t`` (N, K), as int32 (exact) or fp32 fallback."""
    try:
        return torch._int_mm(a, b_t.t())
    except (RuntimeError, AttributeError):  # shape/backend _int_mm does not support
        return a.float() @ b_t.float().t()


class Int8DynamicLinear(nn.Linear):
    """A linear layer with int8 weights and dynamically quantized int8 activations.

    ``weight`` is a frozen int8 parameter (same name and shape as the float layer's), so
    state dicts, weight counts and the sparse encoding treat it like any weight matrix;
    ``weight_scale`` (fp32, one per output channel) turns it back into real values.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        nn.Module.__init__(self)  # not nn.Linear.__init__: no float weight to allocate
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, dtype=torch.int8), requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    def from_float(cls, linear: nn.Linear) -> "Int8DynamicLinear":
        q = cls(linear.in_features, linear.out_features, linear.bias is not None)
        w, s = quantize_weight(linear.weight)
        q.weight.data.copy_(w)
        q.weight_scale.copy_(s)
        if linear.bias is not None:
            q.bias.data.copy_(linear.bias.detach().float())
        return q

    def reset_parameters(self) -> None:  # nn.Linear API; the int8 weight is set by from_float
        pass

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        xq, xs = _quantize_rows(x2)
        acc = int8_matmul(xq, self.weight).float()
        out = acc * xs[:, None] * self.weight_scale[None, :]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8 dynamic"


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def encoder_linear_names(model: nn.Module) -> list[str]:
    """Names of the encoder's linear layers (the ones the budget counts)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ENCODER_PREFIX in n + "."]


@torch.no_grad()
def quantize_encoder_linears(model: nn.Module) -> nn.Module:
    """Replace every encoder ``nn.Linear`` of ``model`` by ``Int8DynamicLinear`` (in place).

    Embeddings, pooler and classifier stay fp32 (as in Zafrir et al.'s comparison of
    dynamic quantization, which leaves the task head in float). Marks ``model.config``.
    """
    model.eval()
    for name in encoder_linear_names(model):
        module = model.get_submodule(name)
        if not isinstance(module, Int8DynamicLinear):
            _set_module(model, name, Int8DynamicLinear.from_float(module).to(module.weight.device))
    if getattr(model, "config", None) is not None:
        setattr(model.config, CONFIG_ATTR, dict(SCHEME))
    return model


def is_quantized_model(model: nn.Module) -> bool:
    return any(isinstance(m, Int8DynamicLinear) for m in model.modules())


def is_quantized_checkpoint(folder: str | Path) -> bool:
    """True when ``folder``'s ``config.json`` marks an int8-quantized model."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(config.get(CONFIG_ATTR))


def load_quantized_model(folder: str | Path, weights_file: str = "model.safetensors", config=None) -> nn.Module:
    """Rebuild a model saved (``save_pretrained``) after ``quantize_encoder_linears``.

    The architecture comes from ``config.json`` (read with ``prunebench.checkpoints.read_config``,
    which undoes the guard that makes stock transformers refuse the folder; or pass ``config``),
    weights not randomly initialised; the encoder linears are swapped for empty
    ``Int8DynamicLinear`` layers and the state dict is loaded strictly, so a missing or extra
    tensor is a ``CheckpointError``, never a silent random initialisation.
    ``prunebench.checkpoints.load_model`` calls this for a folder whose config carries
    ``prunebench_quantization`` (stock ``from_pretrained`` would cast the int8 matrices to
    float without their scales; ``save_model`` therefore writes such folders in the non-stock
    format, see ``prunebench.portable``).
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    from prunebench.checkpoints import CheckpointError, read_config

    folder = Path(folder)
    if config is None:
        config = read_config(folder)
    try:
        heads = " ".join(getattr(config, "architectures", None) or [])
        auto = AutoModelForQuestionAnswering if "QuestionAnswering" in heads else AutoModelForSequenceClassification
        try:
            from transformers.initialization import no_init_weights
        except ImportError:  # older transformers: initialise, then overwrite
            from contextlib import nullcontext as no_init_weights
        with no_init_weights():
            model = auto.from_config(config)
    except Exception as exc:
        raise CheckpointError(f"quantized checkpoint {folder}: cannot build the model from its config: "
                              f"{type(exc).__name__}: {exc}") from exc
    for name in encoder_linear_names(model):
        old = model.get_submodule(name)
        _set_module(model, name, Int8DynamicLinear(old.in_features, old.out_features, old.bias is not None))
    state = load_file(str(folder / weights_file))
    expected = model.state_dict()
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = sorted(k for k in set(expected) - set(state) if k not in tied)
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected)
                   if tuple(state[k].shape) != tuple(expected[k].shape) or state[k].dtype != expected[k].dtype)
    if missing or unexpected or wrong:
        raise CheckpointError(f"quantized checkpoint {folder} does not match its architecture: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape/dtype differs {wrong[:5]}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def load_model(folder: str | Path) -> nn.Module:
    """``checkpoints.load_model`` that also reloads int8-quantized checkpoints (verified first)."""
    from prunebench import checkpoints

    if is_quantized_checkpoint(folder):
        return load_quantized_model(checkpoints.verify(folder))
    return checkpoints.load_model(folder)


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the encoder's weight matrices as stored (int8 + scales, or float)."""
    total = scales = 0
    for name in encoder_linear_names(model):
        m = model.get_submodule(name)
        total += m.weight.numel() * m.weight.element_size()
        if isinstance(m, Int8DynamicLinear):
            scales += m.weight_scale.numel() * m.weight_scale.element_size()
    return {"encoder_weight_bytes": total, "scale_bytes": scales}
