"""Dynamic int8 quantization of the encoder's linear layers, saved and reloaded like any model.

The comparison row of Q8BERT (Zafrir et al. 2019, arXiv 1910.06188): 8-bit integer weights
in every encoder matrix multiply. Zafrir et al. train with simulated quantization during
fine-tuning; this benchmark applies *post-training dynamic* quantization (no training-time
change), which is the cheaper variant the same paper compares against.

Stored form (the same for every kernel)
---------------------------------------
Weights are symmetric per-output-channel int8, ``w ~= weight_int8 * weight_scale[:, None]``,
kept as two plain tensors (``<layer>.weight``: int8, ``<layer>.weight_scale``: fp32, one per
row) that ``safetensors`` stores, so an encoder matrix takes ``out * in`` bytes + ``4 * out`` on
disk, ~1/4 of fp32 (``tests/test_quantized.py`` measures it on a saved folder). Activations are
quantized at run time (dynamic). Nothing kernel-specific is ever saved.

Kernels (``kernel``: ``auto`` | ``engine`` | ``int_mm``)
------------------------------------------------------
``engine`` -- PyTorch's quantized engine (``torch.backends.quantized.engine`` one of
  ``ENGINES``: ``x86``, ``fbgemm``, ``onednn``): the stored int8 matrix and scales become a
  per-channel ``qint8`` tensor, packed once per layer, lazily, with
  ``torch.ops.quantized.linear_prepack`` (held in a plain attribute, not in the state dict; packed
  again when the weights, scales or engine change), and every call runs
  ``torch.ops.quantized.linear_dynamic(x / r, packed, reduce_range=True) * r + bias`` -- PyTorch's
  own dynamic int8 ``Linear`` (fbgemm on x86), fp32 out. ``linear_dynamic`` quantizes its input
  *per tensor* (uint8, asymmetric); BERT's hidden states have tokens whose range is far larger
  than the others' ([CLS], [SEP], punctuation), and one range for the whole batch left 97.0% of the
  fine-tuned MiniLM's SST-2 dev predictions equal to fp32's (872 sentences, batch 32; accuracy
  85.4% vs 85.2%: the flips went both ways). So each token
  is first divided by its own ``r = max|x|`` (and the output multiplied back): per-token ranges, as
  the ``int_mm`` kernel has, through the per-tensor kernel -- 99.2% equal (``int_mm``: 100%),
  accuracy 84.9% vs 85.2% fp32, at the cost of two element-wise passes.
  ``reduce_range`` is what PyTorch's dynamic ``Linear`` passes, and it is needed: on a
  CPU without AVX512-VNNI the u8 x s8 kernels add pairs of products in int16, and a full 8-bit
  range saturates (measured here with the CPU capped to AVX2 -- ``ATEN_CPU_CAPABILITY=avx2
  ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` -- relative error 0.065 with
  ``reduce_range=False``, 0.02 with ``True``).
``int_mm`` -- activations int8 symmetric *per token*, ``torch._int_mm``
  (int8 x int8 -> int32) rescaled to fp32. It is fast where oneDNN has VNNI (AVX512-VNNI, AMX);
  on an AVX2-only CPU the int8 model measured 0.10x (batch 1) and 0.05x (batch 32) of
  the dense model's speed.
  Without VNNI it is also *inexact* (oneDNN's u8 x s8 path saturates in int16: max abs error
  92,884 on a 64x384x384 product of int8 values with the CPU capped to AVX2), so
  ``int8_matmul`` checks ``_int_mm`` once per process on a probe (``int_mm_is_exact``) and, where
  it is inexact, computes the exact integer product in fp32 instead.
``auto`` (the default) -- ``engine`` where the engine is available (CPU weights, engine in
  ``ENGINES`` and in ``torch.backends.quantized.supported_engines``, prepacking works), else
  ``int_mm``. ``engine`` requested where it is not available raises.

The two kernels quantize activations differently (engine: per-token range, then 7-bit asymmetric;
``int_mm``: per token, 8-bit symmetric), so their outputs differ slightly (the tests bound the
difference relative to the output scale and check argmax agreement). Which kernel ran is part of
the record: ``kernel_report(model)``, in the method's ``describe()`` (``details.method.kernel``,
resolved on the machine that evaluated the model); the setting is in
``config.prunebench_quantization.kernel``.

Which PyTorch path, and what is deprecated in torch 2.13
-------------------------------------------------------
``torch.ao.quantization.quantize_dynamic`` (the module-swapping API) warns that
``torch.ao.quantization`` is deprecated (successor: the separate ``torchao`` package, not installed
here) and keeps weights in opaque packed parameters that ``safetensors`` cannot store: not used.
The engine kernel calls the C++ ops ``quantized::linear_prepack`` / ``quantized::linear_dynamic``
directly; the ops carry no deprecation, but building their ``qint8`` weight tensor does (torch 2.13
warns once: "quantized tensor creation functions ... are deprecated and will be removed in a future
PyTorch release"; the warning is silenced at the one place that creates it). Should a later torch
remove quantized tensors, prepacking fails, ``auto`` falls back to ``int_mm`` and
``kernel_report`` says why. The non-deprecated oneDNN op that Inductor lowers to
(``onednn::qlinear_pointwise``, plain tensors) was measured as the alternative and not chosen:
with activations quantized in Python (per tensor, 7-bit) it was slower than ``linear_dynamic`` in 11
of 12 cases (MiniLM's three shapes at 64 and 2,048 rows, AVX512 and AVX2-capped; up to 2.5x), and
with a full 8-bit activation range it saturates on AVX2 like ``_int_mm``. ``torchao`` (0.18.0) can be
downloaded from the local package index but is not added: its CPU int8 path would be one more
compiled dependency pinned to a torch version, for the same kernels.

``Int8DynamicLinear`` subclasses ``nn.Linear`` and keeps its int8 matrix in a frozen
``weight`` parameter, so the shared ruler (``prunebench.structure.budget``: non-zero entries of 2-D
encoder parameters), the FLOP counter and the sparse encoding all see it unchanged. A
model with such layers carries ``config.prunebench_quantization``; ``load_quantized_model``
rebuilds it from a checkpoint folder (``prunebench.checkpoints.store.load_model`` routes such
folders here: ``is_quantized_checkpoint``). ``save_model`` writes them in the non-stock format
(``prunebench.checkpoints.portable``), so stock transformers refuses them instead of loading the int8
matrices as floats without their scales.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.structure.budget import ENCODER_PREFIX

#: Config attribute that marks a quantized model (and says how it was quantized).
CONFIG_ATTR = "prunebench_quantization"
#: Kernel settings: ``auto`` = ``engine`` where available, else ``int_mm``.
KERNELS = ("auto", "engine", "int_mm")
DEFAULT_KERNEL = "auto"
#: PyTorch quantized engines whose ``quantized::linear_dynamic`` the engine kernel uses.
ENGINES = ("x86", "fbgemm", "onednn")
#: ``linear_dynamic``'s ``reduce_range``: 7-bit activations, exact on CPUs without VNNI (module docstring).
REDUCE_RANGE = True
KERNEL_DETAILS = {
    "engine": {
        "op": "torch.ops.quantized.linear_dynamic (reduce_range=True); weights packed once per layer "
        "with torch.ops.quantized.linear_prepack from the stored int8 + scales (not saved)",
        "activations": "dynamic: each token scaled to max|x| = 1, then uint8 asymmetric per tensor with a "
        "7-bit range (reduce_range); output rescaled per token, bias added in fp32",
        "engines": list(ENGINES),
    },
    "int_mm": {
        "op": "torch._int_mm (int8 x int8 -> int32), rescaled to fp32; exact fp32 product where _int_mm "
        "is inexact (no VNNI) or refuses a shape",
        "activations": "int8 symmetric per token, dynamic",
    },
}
SCHEME = {
    "scheme": "int8-dynamic",
    "weights": "int8 symmetric per output channel",
    "activations": "quantized at run time (dynamic), per-token ranges: uint8 7-bit after scaling each token to "
    "max|x| = 1 (engine kernel) or int8 symmetric per token (int_mm kernel)",
    "modules": "encoder nn.Linear",
    "kernel": DEFAULT_KERNEL,
    "kernels": KERNEL_DETAILS,
}
QMAX = 127


def check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"int8 kernel must be one of {list(KERNELS)}, got {kernel!r}")
    return kernel


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


_INT_MM_EXACT: dict[str, bool] = {}


def int_mm_is_exact(device: torch.device | str = "cpu") -> bool:
    """Whether ``torch._int_mm`` computes exact int8 products on ``device`` (checked once per process).

    Probes the saturation case of u8 x s8 kernels without VNNI (large positive activations and
    weights, see the module docstring) at two shapes; a refused shape counts as inexact here
    (``int8_matmul`` then uses the fp32 product anyway).
    """
    key = str(torch.device(device))
    if key not in _INT_MM_EXACT:
        g = torch.Generator().manual_seed(0)
        exact = True
        for m in (32, 128):
            a = torch.randint(-127, 128, (m, 384), generator=g, dtype=torch.int8)
            b = torch.randint(-127, 128, (384, 128), generator=g, dtype=torch.int8)
            a[0], b[:, 0] = 127, 127  # 255 * 127 * 2 after the u8 shift: beyond int16
            try:
                got = torch._int_mm(a.to(device), b.to(device)).cpu()
            except (RuntimeError, AttributeError):
                exact = False
                break
            if not torch.equal(got.double(), a.double() @ b.double()):
                exact = False
                break
        _INT_MM_EXACT[key] = exact
    return _INT_MM_EXACT[key]


def int8_matmul(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """``a @ b_t.T`` for int8 ``a`` (M, K) and ``b_t`` (N, K): exact, as int32 (``torch._int_mm``) or,
    where ``_int_mm`` is inexact on this device (no VNNI) or refuses the shape, as an fp32 product."""
    if int_mm_is_exact(a.device):
        try:
            return torch._int_mm(a, b_t.t())
        except (RuntimeError, AttributeError):  # shape/backend _int_mm does not support
            pass
    return a.float() @ b_t.float().t()


def _supported_engines() -> list[str]:
    return list(torch.backends.quantized.supported_engines)


def engine_unavailable(device: torch.device | str = "cpu") -> str | None:
    """Why the engine kernel cannot run for weights on ``device`` here, or ``None`` when it can."""
    device = torch.device(device)
    if device.type != "cpu":
        return f"weights on {device.type}: the quantized engines are CPU kernels"
    engine = torch.backends.quantized.engine
    if engine not in ENGINES:
        return f"quantized engine {engine!r} is not one of {list(ENGINES)}"
    if engine not in _supported_engines():
        return f"quantized engine {engine!r} is not supported by this torch build"
    return None


def _version(t: torch.Tensor | None) -> tuple[int, int]:
    if t is None:
        return (0, 0)
    try:
        return (t.data_ptr(), t._version)
    except RuntimeError:  # an inference tensor keeps no version counter
        return (t.data_ptr(), -1)


class Int8DynamicLinear(nn.Linear):
    """A linear layer with int8 weights and dynamically quantized int8 activations.

    ``weight`` is a frozen int8 parameter (same name and shape as the float layer's), so
    state dicts, weight counts and the sparse encoding treat it like any weight matrix;
    ``weight_scale`` (fp32, one per output channel) turns it back into real values.
    ``kernel`` (``auto`` | ``engine`` | ``int_mm``, module docstring) chooses the matrix product;
    the engine's packed weights are a cache outside the state dict.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, kernel: str = DEFAULT_KERNEL):
        nn.Module.__init__(self)  # not nn.Linear.__init__: no float weight to allocate
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, dtype=torch.int8), requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.kernel = check_kernel(kernel)
        self._packed: tuple | None = None  # (key, packed params or None, why it failed or None)

    @classmethod
    def from_float(cls, linear: nn.Linear, kernel: str = DEFAULT_KERNEL) -> Int8DynamicLinear:
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, kernel=kernel)
        w, s = quantize_weight(linear.weight)
        q.weight.data.copy_(w)
        q.weight_scale.copy_(s)
        if linear.bias is not None:
            q.bias.data.copy_(linear.bias.detach().float())
        return q

    def reset_parameters(self) -> None:  # nn.Linear API; the int8 weight is set by from_float
        pass

    def __getstate__(self):  # copy / deepcopy / pickle: the packed weights are rebuilt on demand
        state = super().__getstate__()
        state["_packed"] = None
        return state

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight.float() * self.weight_scale[:, None]

    # ----- the engine kernel ---------------------------------------------------------------
    def _pack_key(self) -> tuple:
        return (torch.backends.quantized.engine, _version(self.weight), _version(self.weight_scale))

    def packed_weight(self):
        """The engine's packed weight (``LinearPackedParamsBase``, no bias), built once and reused while
        the weights, scales and engine stay the same; ``None`` when packing failed (``_packed[2]``)."""
        key = self._pack_key()
        if self._packed is None or self._packed[0] != key:
            try:
                with torch.no_grad():
                    zero_points = torch.zeros(self.out_features, dtype=torch.long)
                    with warnings.catch_warnings():  # quantized tensor creation is deprecated (module docstring)
                        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
                        qweight = torch._make_per_channel_quantized_tensor(
                            self.weight.detach().contiguous(), self.weight_scale.detach().double(), zero_points, 0
                        )
                    packed = torch.ops.quantized.linear_prepack(qweight, None)  # bias: added after the row rescale
                self._packed = (key, packed, None)
            except Exception as exc:  # noqa: BLE001 -- any failure: the engine is not usable here
                self._packed = (key, None, f"prepacking failed: {type(exc).__name__}: {str(exc)[:200]}")
        return self._packed[1]

    def resolve_kernel(self) -> tuple[str, str | None]:
        """``(kernel that runs now, why not the engine)``: ``("engine", None)`` or ``("int_mm", reason)``.

        ``kernel="engine"`` where the engine cannot run raises ``RuntimeError``.
        """
        if self.kernel == "int_mm":
            return "int_mm", None
        why = engine_unavailable(self.weight.device)
        if why is None and self.packed_weight() is None:
            why = self._packed[2]
        if why is None:
            return "engine", None
        if self.kernel == "engine":
            raise RuntimeError(f"Int8DynamicLinear: kernel 'engine' requested, but {why}")
        return "int_mm", why

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        if self.resolve_kernel()[0] == "engine":
            # per-token ranges through a per-tensor kernel: every row scaled to max |x| = 1 first
            amax = x2.abs().amax(dim=1, keepdim=True)
            amax = torch.where(amax > 0, amax, torch.ones_like(amax))
            out = torch.ops.quantized.linear_dynamic((x2 / amax).contiguous(), self.packed_weight(), REDUCE_RANGE)
            out = out.mul_(amax) if self.bias is None else torch.addcmul(self.bias, out, amax)
        else:
            xq, xs = _quantize_rows(x2)
            acc = int8_matmul(xq, self.weight).float()
            out = acc * xs[:, None] * self.weight_scale[None, :]
            if self.bias is not None:
                out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"int8 dynamic, kernel={self.kernel}"
        )


def encoder_linear_names(model: nn.Module) -> list[str]:
    """Names of the encoder's linear layers (the ones the budget counts)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ENCODER_PREFIX in n + "."]


def _mark_config(model: nn.Module, kernel: str) -> None:
    if getattr(model, "config", None) is not None:
        setattr(model.config, CONFIG_ATTR, {**SCHEME, "kernel": kernel})


@torch.no_grad()
def quantize_encoder_linears(model: nn.Module, kernel: str = DEFAULT_KERNEL) -> nn.Module:
    """Replace every encoder ``nn.Linear`` of ``model`` by ``Int8DynamicLinear`` (in place).

    Embeddings, pooler and classifier stay fp32 (as in Zafrir et al.'s comparison of
    dynamic quantization, which leaves the task head in float). Marks ``model.config``
    (``prunebench_quantization``, with the ``kernel`` setting, default ``auto``).
    """
    check_kernel(kernel)
    model.eval()
    for name in encoder_linear_names(model):
        module = model.get_submodule(name)
        if not isinstance(module, Int8DynamicLinear):
            model.set_submodule(name, Int8DynamicLinear.from_float(module, kernel=kernel).to(module.weight.device))
        else:
            module.kernel = kernel
    _mark_config(model, kernel)
    return model


def set_kernel(model: nn.Module, kernel: str) -> nn.Module:
    """Set the kernel of every ``Int8DynamicLinear`` of ``model`` (and its config); weights unchanged."""
    check_kernel(kernel)
    for m in model.modules():
        if isinstance(m, Int8DynamicLinear):
            m.kernel = kernel
    if getattr(getattr(model, "config", None), CONFIG_ATTR, None):
        _mark_config(model, kernel)
    return model


def kernel_report(model: nn.Module) -> dict[str, Any]:
    """Which kernel the int8 layers of ``model`` run on this machine, and why (for the record).

    ``setting``: the layers' ``kernel`` setting(s); ``used``: the kernel(s) that run now
    (``engine`` or ``int_mm``), with ``engine``: the quantized engine and ``fallback_reason`` when
    ``int_mm`` runs; ``int_mm_exact``: whether ``torch._int_mm`` is exact here; and the CPU class.
    """
    layers = [m for m in model.modules() if isinstance(m, Int8DynamicLinear)]
    if not layers:
        return {"setting": None, "used": None, "layers": 0}
    resolved = [m.resolve_kernel() for m in layers]
    settings = sorted({m.kernel for m in layers})
    used = sorted({k for k, _ in resolved})
    reasons = sorted({r for k, r in resolved if k == "int_mm" and r})
    out = {
        "setting": settings[0] if len(settings) == 1 else settings,
        "used": used[0] if len(used) == 1 else used,
        "engine": torch.backends.quantized.engine,
        "op": KERNEL_DETAILS[used[0]]["op"] if len(used) == 1 else None,
        "fallback_reason": "; ".join(reasons) or None,
        "int_mm_exact": int_mm_is_exact(layers[0].weight.device) if "int_mm" in used else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "layers": len(layers),
    }
    return out


def is_quantized_model(model: nn.Module) -> bool:
    return any(isinstance(m, Int8DynamicLinear) for m in model.modules())


def is_quantized_checkpoint(folder: str | Path) -> bool:
    """True when ``folder``'s ``config.json`` marks an int8-quantized model."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(config.get(CONFIG_ATTR))


def saved_kernel(saved: dict) -> str:
    """The kernel setting of a saved config; folders written before the setting existed say
    ``"kernel": "torch._int_mm"`` (a description, the stored tensors are the same): ``auto``."""
    kernel = saved.get("kernel")
    return kernel if kernel in KERNELS else DEFAULT_KERNEL


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the encoder's weight matrices as stored (int8 + scales, or float)."""
    total = scales = 0
    for name in encoder_linear_names(model):
        m = model.get_submodule(name)
        total += m.weight.numel() * m.weight.element_size()
        if isinstance(m, Int8DynamicLinear):
            scales += m.weight_scale.numel() * m.weight_scale.element_size()
    return {"encoder_weight_bytes": total, "scale_bytes": scales}


def inference_details(model: nn.Module) -> dict[str, Any]:
    """The finalized model's quantization scheme (its config) and, for int8, the kernel that runs here."""
    out = dict(getattr(model.config, CONFIG_ATTR, None) or {})
    if any(isinstance(m, Int8DynamicLinear) for m in model.modules()):
        out["kernel_report"] = kernel_report(model)
    return out
