"""prunebench.quantization.fake_quant: symmetric fake quantization on the grid, idempotence, the straight-through
estimator, the EMA range observer (Q8BERT) and quantization noise (Quant-Noise)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from prunebench.quantization.fake_quant import (
    EMARangeObserver,
    InputFakeQuant,
    WeightFakeQuant,
    fake_quantize,
    fake_quantize_tensor,
    noise_mask,
    per_token_scale,
    qmax,
    quant_noise,
    quantize,
    symmetric_scale,
)


def _x(*shape, seed=0, std=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * std


def test_qmax():
    assert qmax(8) == 127 and qmax(4) == 7 and qmax(2) == 1
    with pytest.raises(ValueError):
        qmax(1)


@pytest.mark.parametrize("bits", [8, 4, 3])
@pytest.mark.parametrize("axis", [None, 0])
def test_fake_quantization_lands_on_the_grid(bits, axis):
    x = _x(6, 40, seed=bits)
    x[2] = 0.0  # an all-zero row: step 1, stays zero
    scale = symmetric_scale(x, bits, axis)
    assert scale.shape == (() if axis is None else (6, 1))
    y = fake_quantize(x, scale, bits)
    steps = y / scale
    torch.testing.assert_close(steps, torch.round(steps), rtol=0, atol=1e-4)  # integer multiples of the step
    assert steps.abs().max() <= qmax(bits) + 1e-4
    # the largest |x| (per tensor or per row) maps to exactly +-Q steps, and the error is at most half a step
    if axis is None:
        assert steps.abs().max().round() == qmax(bits)
    else:
        assert torch.equal(steps.abs().amax(dim=1).round()[[0, 1, 3, 4, 5]], torch.full((5,), float(qmax(bits))))
        assert torch.equal(y[2], torch.zeros(40))
    assert ((y - x).abs() <= scale / 2 + 1e-6).all()
    assert y.dtype == x.dtype and (quantize(x, scale, bits) == steps.round()).all()


def test_values_beyond_the_threshold_are_clamped():
    x = torch.tensor([-3.0, -1.0, 0.2, 1.0, 3.0])
    y = fake_quantize(x, torch.tensor(1.0 / 127), 8)
    assert y.tolist()[0] == pytest.approx(-1.0) and y.tolist()[-1] == pytest.approx(1.0)
    assert y[1].item() == pytest.approx(-1.0) and y[2].item() == pytest.approx(round(0.2 * 127) / 127)


@pytest.mark.parametrize("bits", [8, 4])
def test_fake_quantization_is_idempotent(bits):
    x = _x(5, 33, seed=1)
    scale = symmetric_scale(x, bits, 0)
    once = fake_quantize(x, scale, bits)
    assert torch.equal(fake_quantize(once, scale, bits), once)  # same step: exactly the same values
    # with the threshold recomputed from the quantized tensor (max|x^| = Q s): the same grid again
    again = fake_quantize_tensor(once, bits, axis=0)
    torch.testing.assert_close(again, once, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        fake_quantize_tensor(fake_quantize_tensor(x, bits), bits), fake_quantize_tensor(x, bits), rtol=1e-6, atol=0
    )


def test_ste_passes_gradient_one_inside_the_range():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 0.99, 2.0], requires_grad=True)
    scale = torch.tensor(1.0 / 127)  # range [-1, 1]
    fake_quantize(x, scale, 8).sum().backward()
    assert torch.equal(x.grad, torch.ones(6))  # Q8BERT: identity everywhere, clamped values included
    x.grad = None
    fake_quantize(x, scale, 8, clip_grad=True).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # saturating variant: 1 inside, 0 outside
    # the gradient is the upstream gradient unchanged, not 1 times something else
    x.grad = None
    upstream = torch.arange(6.0)
    (fake_quantize(x, scale, 8) * upstream).sum().backward()
    assert torch.equal(x.grad, upstream)


def test_weight_parametrization_gradient_is_straight_through():
    torch.manual_seed(0)
    lin = nn.Linear(7, 3)
    parametrize.register_parametrization(lin, "weight", WeightFakeQuant(8))
    x = _x(4, 7, seed=2)
    lin(x).sum().backward()
    grad = lin.parametrizations.weight.original.grad
    # d/dW sum(x W^T) = sum_b x_b in every row, passed through the rounding unchanged
    torch.testing.assert_close(grad, x.sum(0).expand(3, 7), rtol=1e-6, atol=1e-6)
    w = lin.weight.detach()
    s = symmetric_scale(lin.parametrizations.weight.original, 8)
    torch.testing.assert_close(w / s, torch.round(w / s), rtol=0, atol=1e-4)


def test_ema_observer_follows_the_papers_update():
    obs = EMARangeObserver(decay=0.9)
    assert obs.update(torch.tensor([1.0, -4.0])).item() == pytest.approx(4.0)  # first batch sets T
    assert obs.update(torch.tensor([2.0])).item() == pytest.approx(0.9 * 4.0 + 0.1 * 2.0)
    assert obs.scale(8).item() == pytest.approx((0.9 * 4 + 0.2) / 127)
    # constant max|x|: T stays there; a new constant max: T converges to it geometrically
    obs = EMARangeObserver(decay=0.5)
    for _ in range(5):
        obs.update(torch.tensor([3.0, -1.0]))
    assert obs.threshold.item() == pytest.approx(3.0)
    for n in range(1, 41):
        obs.update(torch.tensor([-7.0]))
        assert obs.threshold.item() == pytest.approx(7.0 + (3.0 - 7.0) * 0.5**n)
    assert obs.threshold.item() == pytest.approx(7.0, abs=1e-6) and obs.updates == 45
    # the paper's decay: after 200 batches T has moved only 2% of the way from the first batch's max
    obs = EMARangeObserver()
    obs.update(torch.tensor([10.0]))
    for _ in range(200):
        obs.update(torch.tensor([5.0]))
    assert obs.threshold.item() == pytest.approx(5.0 + 5.0 * 0.9999**200, rel=1e-5)
    with pytest.raises(RuntimeError):
        EMARangeObserver().scale(8)


def test_quant_noise_p0_is_identity_and_p1_is_full_fake_quantization():
    w = _x(64, 48, seed=3)
    scale = symmetric_scale(w, 4, 0)
    q = quantize(w, scale, 4) * scale
    assert torch.equal(quant_noise(w, q, noise_mask(w.shape, 0.0)), w)
    assert torch.equal(quant_noise(w, q, noise_mask(w.shape, 1.0)), fake_quantize(w, scale, 4))


def test_quant_noise_replaces_a_share_p_and_passes_gradient_through():
    w = _x(200, 500, seed=4).requires_grad_(True)
    scale = symmetric_scale(w, 4, 0)
    q = quantize(w, scale, 4) * scale
    mask = noise_mask(w.shape, 0.3, torch.Generator().manual_seed(0))
    out = quant_noise(w, q, mask)
    assert abs(mask.float().mean().item() - 0.3) < 0.01
    assert torch.equal(out[mask], q[mask]) and torch.equal(out[~mask], w.detach()[~mask])
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_weight_noise_in_training_full_quantization_in_eval():
    torch.manual_seed(0)
    lin = nn.Linear(300, 200)
    noise = WeightFakeQuant(4, axis=0, p=0.25, seed=1)
    parametrize.register_parametrization(lin, "weight", noise)
    w = lin.parametrizations.weight.original.detach()
    full = fake_quantize_tensor(w, 4, axis=0)
    lin.train()
    noisy = lin.weight.detach()
    quantized = noisy == full
    kept = noisy == w
    assert (quantized | kept).all()
    share = (quantized & ~kept).float().mean().item()  # entries that really changed
    assert 0.2 < share < 0.26 and abs(noise.noised / noise.seen - 0.25) < 0.01
    lin.eval()
    assert torch.equal(lin.weight.detach(), full)


def test_input_quantizer_ema_and_per_token():
    lin = nn.Linear(5, 2)
    hook = InputFakeQuant(8, mode="ema", decay=0.9).install(lin)
    seen = []
    lin.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))  # runs after ours
    lin.train()
    x1, x2 = _x(3, 5, seed=5), _x(3, 5, seed=6) * 3
    lin(x1)
    lin(x2)
    t = 0.9 * x1.abs().max() + 0.1 * x2.abs().max()
    assert hook.observer.threshold.item() == pytest.approx(t.item(), rel=1e-6)
    torch.testing.assert_close(seen[1], fake_quantize(x2, t / 127, 8))
    lin.eval()
    lin(x1)  # eval: the learned threshold, no update
    assert hook.observer.updates == 2
    hook.remove()
    lin(x1)
    assert torch.equal(seen[-1], x1)
    # per token: one step per row of the flattened input
    x = _x(2, 3, 5, seed=7)
    s = per_token_scale(x, 8)
    assert s.shape == (2, 3, 1)
    torch.testing.assert_close(s, x.abs().amax(-1, keepdim=True) / 127)
