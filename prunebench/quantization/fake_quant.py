"""Symmetric linear fake quantization, the EMA range observer and the straight-through estimator.

Shared by the quantization-aware rows: Q8BERT (Zafrir et al. 2019, arXiv 1910.06188,
``methods/q8bert.py``) and Quant-Noise (Fan et al. 2020, arXiv 2004.07320,
``methods/quant_noise.py``). Fake quantization computes in floating point with values that lie
exactly on the b-bit integer grid, so a model trained with it can be converted to real integer
weights afterwards without changing those values.

Symmetric linear quantization with b bits (Q8BERT; the authors' ``nlp_architect/nn/torch/quantization.py``,
``get_scale``/``quantize``/``dequantize``; ``../shared/PAPERS-2.md`` section 3, tag V):

    Q  = 2^(b-1) - 1                       (127 for 8 bits, 7 for 4 bits; -2^(b-1) is unused)
    s  = T / Q                             step ("scale"); T is the range threshold
    q  = clamp(round(x / s), -Q, Q)        integer code
    x^ = q * s                             fake-quantized value (dequantized code)

Q8BERT writes the same with the inverse scale S_x = Q / T: ``quant(x) = clamp(round(x * S_x))``
and ``x^ = quant(x) / S_x``. The step form is used here because it is the form of the int8 kernel
(``prunebench.quantization.int8.quantize_weight``: ``scale = amax / 127``, ``round(w / scale)``), so a weight
fake-quantized here per output channel is bit-for-bit the weight that kernel stores.

Thresholds T:

- per tensor: ``T = max|x|`` over the whole tensor (Q8BERT's weights, every training step);
- per channel: one ``T`` per index along ``axis`` (``axis=0`` of a weight matrix: one per output
  row, as ``prunebench.quantization.int8`` stores int8 weights);
- per token: one ``T`` per row of an activation (``per_token_scale``, the ``int_mm`` int8 kernel's
  dynamic activations);
- a running EMA of ``max|x|`` (``EMARangeObserver``): Q8BERT's activations.

A threshold of 0 (an all-zero tensor or row) gets step 1, so zeros stay zeros and nothing divides by zero.

Straight-through estimator (Bengio et al. 2013; Q8BERT's ``FakeLinearQuantizationWithSTE``; Quant-Noise's
``w + noise.detach()`` in fairseq ``IntLinear``): round is inside the forward pass, its
gradient is taken as the identity, ``d x^ / d x = 1``. Q8BERT passes the gradient unchanged
everywhere, also where the input was clamped (``clip_grad=False``, the default); ``clip_grad=True``
gives the saturating variant, ``1`` inside ``[-Q s, Q s]`` and ``0`` outside. The scale receives no
gradient in either paper. Forward values are computed exactly (``torch.where`` / the grid formula),
not as ``x + (x^ - x).detach()``, so a fake-quantized tensor is exactly on the grid.

Quantization noise (Fan et al. 2020, section "Training networks with quantization noise" of the
paper; fairseq ``modules/quantization/scalar/modules/qlinear.py``; ``../shared/PAPERS-2.md`` section 2,
tag V): in each training forward pass a random subset J of the blocks is replaced by its quantized
value and the rest is left in full precision,

    b_kl <- phi(b_kl) if (k, l) in J, else b_kl,      J ~ Bernoulli(p) per block,

with the straight-through estimator for the quantized blocks; for scalar quantization a block is
one weight element. At evaluation p = 1 (the whole network quantized). ``quant_noise`` implements
it for given quantized values ``phi(w)``; p = 0 is the identity and p = 1 full fake quantization.

Precision: the fake-quantized values are computed in fp32. Under bf16 autocast
(``finetune.precision``) the matrix product then sees them rounded to bf16 (8 significant bits):
a weight on the 8-bit grid moves by up to ~1/4 of a step for the largest codes (4 bits: ~1/70 of a
step), as any fp32 weight is rounded under bf16 training. Evaluation and finalization are in fp32.
"""

from __future__ import annotations

import torch


def qmax(bits: int) -> int:
    """Largest code of symmetric b-bit quantization: ``2^(b-1) - 1`` (127 for 8 bits, 7 for 4 bits)."""
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 2:
        raise ValueError(f"bits must be an integer >= 2, got {bits!r}")
    return 2 ** (bits - 1) - 1


def _step(threshold: torch.Tensor, bits: int) -> torch.Tensor:
    threshold = threshold.float()
    return torch.where(threshold > 0, threshold / qmax(bits), torch.ones_like(threshold))


@torch.no_grad()
def symmetric_scale(x: torch.Tensor, bits: int, axis: int | None = None) -> torch.Tensor:
    """Step ``s = max|x| / (2^(b-1) - 1)``: a 0-d tensor (``axis=None``, per tensor) or one per index
    along ``axis`` (per channel), shaped to broadcast against ``x`` (size 1 on the other axes)."""
    a = x.detach().abs().float()
    if axis is None:
        return _step(a.amax(), bits)
    axis = axis % x.dim()
    others = tuple(d for d in range(x.dim()) if d != axis)
    return _step(a.amax(dim=others, keepdim=True), bits)


@torch.no_grad()
def per_token_scale(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Step per token (per row of ``x`` flattened to ``(-1, x.shape[-1])``), shaped ``(..., 1)``:
    the dynamic activation scheme of the ``int_mm`` kernel of ``prunebench.quantization.int8.Int8DynamicLinear``."""
    return _step(x.detach().abs().float().amax(dim=-1, keepdim=True), bits)


def quantize(x: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes ``clamp(round(x / s), -Q, Q)`` as a float tensor (no gradient)."""
    q = qmax(bits)
    return torch.clamp(torch.round(x.detach().float() / scale), -q, q)


class _FakeQuantSTE(torch.autograd.Function):
    """``x^ = clamp(round(x / s), -Q, Q) * s``; backward: the identity (or 0 outside the range)."""

    @staticmethod
    def forward(ctx, x, scale, bits, clip_grad):
        codes = quantize(x, scale, bits)
        if clip_grad:
            limit = qmax(bits) * scale
            ctx.save_for_backward(x.detach().float().abs() <= limit)
        ctx.clip_grad = clip_grad
        return (codes * scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        if ctx.clip_grad:
            (inside,) = ctx.saved_tensors
            grad = grad * inside.to(grad.dtype)
        return grad, None, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, bits: int, clip_grad: bool = False) -> torch.Tensor:
    """Fake-quantize ``x`` with step ``scale`` (broadcast) to ``bits`` bits, straight-through gradient.

    The result lies exactly on the grid (integer multiples of ``scale`` in ``[-Q s, Q s]``) and has
    ``x``'s dtype; ``clip_grad`` zeroes the gradient where ``|x| > Q s`` (Q8BERT: off).
    """
    return _FakeQuantSTE.apply(x, scale, bits, clip_grad)


def fake_quantize_tensor(x: torch.Tensor, bits: int, axis: int | None = None, clip_grad: bool = False) -> torch.Tensor:
    """Fake quantization with the threshold ``max|x|`` of ``x`` itself (per tensor or per channel)."""
    return fake_quantize(x, symmetric_scale(x, bits, axis), bits, clip_grad)


class _NoiseSTE(torch.autograd.Function):
    """``where(mask, phi(w), w)``; the gradient passes unchanged to ``w`` (straight-through)."""

    @staticmethod
    def forward(ctx, w, quantized, mask):
        return torch.where(mask, quantized.to(w.dtype), w)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def noise_mask(shape, p: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Boolean mask, each entry True with probability ``p`` (the blocks J that get quantized)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"quantization-noise rate p={p} must be in [0, 1]")
    if p == 1.0:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if p == 0.0:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    return torch.rand(shape, generator=generator, device=device) < p


def quant_noise(w: torch.Tensor, quantized: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fan et al.'s quantization noise for scalar blocks: the entries of ``w`` where ``mask`` is True
    are replaced by ``quantized`` (their fake-quantized values), the others are kept; the gradient
    flows to every entry of ``w`` unchanged (straight-through)."""
    return _NoiseSTE.apply(w, quantized.detach(), mask)


class EMARangeObserver:
    """Running threshold ``T`` of activations: an exponential moving average of ``max|x|``.

    Q8BERT (the authors' ``QuantizedLinear._update_ema``, EMA mode): the first training batch sets
    ``T_1 = max|x_1|``, then every training forward pass updates

        T_t = T_{t-1} - (1 - decay) (T_{t-1} - max|x_t|) = decay T_{t-1} + (1 - decay) max|x_t|,

    with decay 0.9999; inference uses the last ``T``. ``update`` includes the current batch before
    its scale is used, as in the authors' code.
    """

    def __init__(self, decay: float = 0.9999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay {decay} must be in [0, 1)")
        self.decay = float(decay)
        self.threshold: torch.Tensor | None = None
        self.updates = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> torch.Tensor:
        current = x.detach().abs().amax().float()
        if self.threshold is None:
            self.threshold = current.clone()
        else:
            self.threshold.sub_((1.0 - self.decay) * (self.threshold - current))
        self.updates += 1
        return self.threshold

    def scale(self, bits: int) -> torch.Tensor:
        if self.threshold is None:
            raise RuntimeError("EMARangeObserver has seen no data: no threshold to quantize with")
        return _step(self.threshold, bits)

    def state(self) -> dict:
        return {
            "threshold": None if self.threshold is None else float(self.threshold),
            "updates": self.updates,
            "decay": self.decay,
        }


# ----- modules that install fake quantization on a model --------------------------------------


class WeightFakeQuant(torch.nn.Module):
    """Parametrization (``torch.nn.utils.parametrize``) of a weight: ``W -> W^``.

    The threshold is recomputed from the weight at every forward pass (Q8BERT: ``T = max|W|``
    each step): per tensor (``axis=None``) or per channel (``axis=0``: per output row). In
    training mode a share ``p`` of the entries is quantized (quantization noise, ``p = 1``: all);
    in eval mode every entry is. ``noised`` / ``seen`` count the entries quantized in training.
    """

    def __init__(self, bits: int, axis: int | None = None, p: float = 1.0, clip_grad: bool = False, seed: int = 0):
        super().__init__()
        qmax(bits)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"quantization-noise rate p={p} must be in [0, 1]")
        self.bits, self.axis, self.p, self.clip_grad, self.seed = bits, axis, float(p), clip_grad, seed
        self._generator: torch.Generator | None = None
        self.noised = self.seen = 0

    def generator(self, device) -> torch.Generator:
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = symmetric_scale(w, self.bits, self.axis)
        p = self.p if self.training else 1.0
        if self.training:
            self.seen += w.numel()
        if p >= 1.0:
            if self.training:
                self.noised += w.numel()
            return fake_quantize(w, scale, self.bits, self.clip_grad)
        mask = noise_mask(w.shape, p, self.generator(w.device), w.device)
        self.noised += int(mask.sum())
        return quant_noise(w, quantize(w, scale, self.bits) * scale, mask)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, axis={self.axis}, p={self.p}"


INPUT_MODES = ("ema", "per_token")


class InputFakeQuant:
    """Forward pre-hook that fake-quantizes the input of a layer (``install`` registers it).

    ``mode="ema"`` (Q8BERT): one threshold per layer, ``EMARangeObserver`` updated in training mode;
    in eval mode the learned threshold is used (before any training batch: the batch's own max).
    ``mode="per_token"``: symmetric, one step per token, computed at run time (the ``int_mm`` kernel of
    ``prunebench.quantization.int8.Int8DynamicLinear``).
    ``p < 1`` quantizes only a random share ``p`` of the entries in training mode (quantization
    noise); eval mode quantizes all.
    """

    def __init__(
        self,
        bits: int = 8,
        mode: str = "ema",
        decay: float = 0.9999,
        p: float = 1.0,
        clip_grad: bool = False,
        seed: int = 0,
    ):
        if mode not in INPUT_MODES:
            raise ValueError(f"input quantization mode must be one of {list(INPUT_MODES)}, got {mode!r}")
        qmax(bits)
        self.bits, self.mode, self.p, self.clip_grad, self.seed = bits, mode, float(p), clip_grad, seed
        self.observer = EMARangeObserver(decay) if mode == "ema" else None
        self._generator: torch.Generator | None = None
        self.handle = None
        self.noised = self.seen = 0

    def install(self, module: torch.nn.Module) -> InputFakeQuant:
        self.handle = module.register_forward_pre_hook(self)
        return self

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def scale(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if self.mode == "per_token":
            return per_token_scale(x, self.bits)
        if training:
            self.observer.update(x)
        elif self.observer.threshold is None:
            return _step(x.detach().abs().amax(), self.bits)
        return self.observer.scale(self.bits).to(x.device)

    def quantized(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        """Fake-quantized ``x`` (straight-through gradient)."""
        return fake_quantize(x, self.scale(x, training), self.bits, self.clip_grad)

    def __call__(self, module: torch.nn.Module, args: tuple):
        x = args[0]
        p = self.p if module.training else 1.0
        if module.training:
            self.seen += x.numel()
        if p >= 1.0:
            if module.training:
                self.noised += x.numel()
            xq = self.quantized(x, module.training)
        else:
            if self._generator is None or self._generator.device != x.device:
                self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
            mask = noise_mask(x.shape, p, self._generator, x.device)
            self.noised += int(mask.sum())
            xq = quant_noise(x, self.quantized(x, module.training), mask)
        return (xq,) + tuple(args[1:])


def fake_quantize_embeddings(model: torch.nn.Module, names, bits: int) -> dict[str, str]:
    """Fake-quantize the named embedding tables of ``model.base_model.embeddings`` per tensor to
    ``bits`` (Q8BERT's and Q-BERT's embeddings): a trainable table gets a ``WeightFakeQuant``
    parametrization (quantized at every forward pass, straight-through gradient); a frozen table's
    quantized value never changes, so it is written into the weights once. Returns what was done per table."""
    from torch.nn.utils import parametrize

    done: dict[str, str] = {}
    embeddings = model.base_model.embeddings
    for name in names:
        emb = getattr(embeddings, name, None)
        if emb is None:
            continue
        if emb.weight.requires_grad:
            parametrize.register_parametrization(emb, "weight", WeightFakeQuant(bits, axis=None))
            done[name] = f"fake-quantized at every forward pass (trainable), {bits}-bit per tensor"
        else:
            with torch.no_grad():
                emb.weight.copy_(fake_quantize_tensor(emb.weight, bits))
            done[name] = f"frozen: set to its {bits}-bit (per tensor) fake-quantized value once, in prepare"
    return done
