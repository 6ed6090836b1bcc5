"""Q-BERT (methods/qbert.py): top Hessian eigenvalue per encoder layer by power iteration
(prunebench/quantization/hessian.py), bits by that sensitivity, group-wise fake quantization during fine-tuning,
finalized to a mixed int8 / packed-int4 model (prunebench/quantization/mixed.py) that saves and reloads exactly."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import methods
from methods.qbert import allocate_bits
from prunebench.checkpoints import store as checkpoints
from prunebench.measure.disk import encoder_bytes_on_disk
from prunebench.method.base import TrainingPlan
from prunebench.quantization.hessian import layer_eigenvalues, loss_hvp, top_eigenvalue
from prunebench.quantization.int4 import Int4WeightLinear
from prunebench.quantization.int8 import Int8DynamicLinear
from prunebench.quantization.mixed import GroupWeightFakeQuant, group_scale, quantize_encoder_mixed, weight_bytes
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.training.calibration import CalibrationSource
from prunebench.training.trainer import FinetuneBudget, _collator, train
from tests.conftest import logits, sample_batch

#: small Hessian settings: the tiny model, a few seconds
FAST = {"hessian_batches": 2, "hessian_batch_size": 8, "hessian_iters": 8}


def _budget(steps):
    return FinetuneBudget(
        steps=steps, batch_size=16, learning_rate=1e-4, max_seq_len=64, freeze_embeddings=True, warmup_ratio=0.0
    )


def _plan(data, tokenizer, seed=0):
    return TrainingPlan(
        total_steps=1, seed=seed, calibration=CalibrationSource(len(data), _collator(data, tokenizer), seed)
    )


def _symmetric(eigenvalues, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


# ----- power iteration -----------------------------------------------------------------------------


@pytest.mark.parametrize("eigenvalues", [[5.0, 3.0, 1.0, 0.5, -0.2, 0.1], [-4.0, 2.5, 1.0, 0.3]])
def test_power_iteration_finds_the_top_eigenvalue_of_a_known_matrix(eigenvalues):
    """Loss 0.5 x^T A x has Hessian A: the double-backprop products give A v, and power iteration
    returns A's eigenvalue of largest magnitude (not the second one, not the trace, not a random quotient)."""
    a = _symmetric(eigenvalues)
    x = torch.randn(len(eigenvalues), dtype=torch.float64, requires_grad=True)
    loss = 0.5 * x @ a @ x
    hvp = loss_hvp(loss, [x])
    v = torch.randn(len(eigenvalues), dtype=torch.float64)
    torch.testing.assert_close(hvp([v])[0], a @ v)  # the Hessian-vector product is A v
    result = top_eigenvalue(hvp, [x], max_iter=200, tol=1e-9, seed=0)
    top = max(eigenvalues, key=abs)
    assert result.converged and result.iterations < 200
    assert result.eigenvalue == pytest.approx(top, rel=1e-6)
    assert top == pytest.approx(float(max(torch.linalg.eigvalsh(a), key=abs)), rel=1e-9)
    second = sorted(eigenvalues, key=abs)[-2]
    assert abs(result.eigenvalue - second) > 0.5  # a method returning the runner-up would fail the check above
    assert abs(result.eigenvalue - sum(eigenvalues)) > 0.5


def test_power_iteration_over_a_block_of_several_tensors_and_its_stopping_rule():
    """The block is one vector made of several tensors (a layer's matrices); tol stops it early, max_iter caps it."""
    a = _symmetric([7.0, 2.0, 1.0, 1.0, 0.5, 0.1], seed=3)
    x1 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, dtype=torch.float64, requires_grad=True)
    x = torch.cat([x1.reshape(-1), x2])
    hvp = loss_hvp(0.5 * x @ a @ x, [x1, x2])
    exact = top_eigenvalue(hvp, [x1, x2], max_iter=500, tol=0.0, seed=1)
    assert exact.eigenvalue == pytest.approx(7.0, rel=1e-9)  # tol 0: until the estimate stops changing at all
    loose = top_eigenvalue(hvp, [x1, x2], max_iter=500, tol=1e-3, seed=1)
    assert loose.converged and loose.iterations < 50 and loose.eigenvalue == pytest.approx(7.0, rel=1e-2)
    capped = top_eigenvalue(hvp, [x1, x2], max_iter=3, tol=1e-3, seed=1)
    assert capped.iterations == 3 and not capped.converged and len(capped.history) == 3
    assert (
        top_eigenvalue(hvp, [x1, x2], max_iter=20, seed=5).history
        == top_eigenvalue(hvp, [x1, x2], max_iter=20, seed=5).history
    )  # seeded
    with pytest.raises(ValueError):
        top_eigenvalue(hvp, [x1, x2], max_iter=0)


def test_layer_eigenvalues_of_the_tiny_model_per_batch(tiny_model, sst2_small, tokenizer):
    data = _plan(sst2_small["train"], tokenizer).calibration(3 * 8, 8)
    method = methods.build("qbert", 1.0, FAST)
    eig = method.sensitivity(tiny_model, data.batches, seed=0)
    assert list(eig) == ["0", "1"]  # one entry per encoder layer
    for info in eig.values():
        assert len(info["per_batch"]) == 3 == len(info["iterations"]) == len(info["converged"])
        values = torch.tensor(info["per_batch"])
        assert torch.isfinite(values).all() and (values != 0).all()
        assert info["mean"] == pytest.approx(float(values.double().mean()))
        assert info["std"] == pytest.approx(float(values.double().std(unbiased=False)))
        assert info["omega"] == pytest.approx(abs(info["mean"]) + info["std"]) and info["omega"] > 0
        assert all(1 <= k <= FAST["hessian_iters"] for k in info["iterations"])
    # the model is left as it was: eval mode, default attention, gradients untouched
    assert tiny_model.config._attn_implementation == "sdpa"
    assert all(p.grad is None for p in tiny_model.parameters())


def test_layer_eigenvalues_measure_curvature_of_a_fitted_quadratic():
    """On a model whose loss is an explicit quadratic per block, the per-block eigenvalues are the known ones."""

    class Quad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.zeros(3, dtype=torch.float64))
            self.b = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    model = Quad()
    A, B = _symmetric([3.0, 1.0, 0.5]), _symmetric([0.2, 0.1], seed=1)

    def loss_fn(m, batch):
        s = batch["scale"]
        return 0.5 * s * (m.a @ A @ m.a) + 0.5 * s * (m.b @ B @ m.b) + (m.a.sum() * m.b.sum()) * 0.0

    out = layer_eigenvalues(
        model,
        {"a": [model.a], "b": [model.b]},
        [{"scale": 1.0}, {"scale": 2.0}],
        max_iter=300,
        tol=1e-10,
        loss_fn=loss_fn,
    )
    assert out["a"]["per_batch"] == pytest.approx([3.0, 6.0], rel=1e-6)
    assert out["b"]["per_batch"] == pytest.approx([0.2, 0.4], rel=1e-6)
    assert out["a"]["omega"] == pytest.approx(4.5 + 1.5, rel=1e-6)


# ----- bit allocation ------------------------------------------------------------------------------


def test_bits_follow_the_sensitivity_ranking():
    omega = {"0": 1.0, "1": 3.0, "2": 2.0, "3": 0.5}
    assert allocate_bits(omega, 8, 4, 0.5) == {"0": 4, "1": 8, "2": 8, "3": 4}
    assert allocate_bits(omega, 3, 2, 0.25) == {"0": 2, "1": 3, "2": 2, "3": 2}
    assert allocate_bits(omega, 8, 4, 0.0) == dict.fromkeys(omega, 4)
    assert allocate_bits(omega, 8, 4, 1.0) == dict.fromkeys(omega, 8)
    assert allocate_bits({"0": 1.0, "1": 1.0}, 8, 4, 0.5) == {"0": 8, "1": 4}  # tie: the earlier layer


def _sharpen(model, layer: int, k: float):
    """The same function, a sharper layer: the FFN's hidden activations x k, its output matrix / k
    (the Hessian w.r.t. that matrix grows by k^2, the others stay)."""
    block = model.base_model.encoder.layer[layer]
    with torch.no_grad():
        block.output.dense.weight.div_(k)
    return block.intermediate.register_forward_hook(lambda mod, args, out: out * k)


def test_a_layer_made_sharper_gets_the_high_bits(tiny_model, sst2_small, tokenizer):
    batch = sample_batch(tokenizer)
    plan = _plan(sst2_small["train"], tokenizer)
    first = methods.build("qbert", 1.0, FAST)
    first.prepare(copy.deepcopy(tiny_model), plan)
    low = min(first.layer_bits, key=lambda k: first.eigen[k]["omega"])  # the flatter layer
    assert first.layer_bits[low] == 4
    before = logits(tiny_model, batch)
    hook = _sharpen(tiny_model, int(low), 30.0)
    torch.testing.assert_close(logits(tiny_model, batch), before, rtol=1e-4, atol=1e-5)  # same function
    method = methods.build("qbert", 1.0, FAST)
    method.prepare(tiny_model, plan)
    hook.remove()
    assert method.eigen[low]["omega"] > 10 * first.eigen[low]["omega"]
    assert method.layer_bits[low] == 8 and sorted(method.layer_bits.values()) == [4, 8]
    for name, module in prunable_linears(tiny_model).items():  # installed with the allocated bits
        quant = module.parametrizations.weight[0]
        assert isinstance(quant, GroupWeightFakeQuant)
        assert quant.bits == method.layer_bits[name.split("encoder.layer.")[1].split(".")[0]]


# ----- group-wise fake quantization ----------------------------------------------------------------


@pytest.mark.parametrize("bits,group_rows", [(4, 1), (4, 2), (8, 4), (2, 3)])
def test_fake_quantization_lands_on_the_group_grid(bits, group_rows):
    torch.manual_seed(bits + group_rows)
    w = torch.randn(12, 10) * torch.linspace(0.1, 3, 12)[:, None]
    w[group_rows : 2 * group_rows] = 0.0  # an all-zero group stays zero
    quant = GroupWeightFakeQuant(bits, group_rows)
    wq = quant(w)
    step = group_scale(w, bits, group_rows)
    q = 2 ** (bits - 1) - 1
    codes = wq / step
    torch.testing.assert_close(codes, torch.round(codes), rtol=0, atol=1e-4)  # integer multiples of the step
    assert float(codes.abs().max()) <= q + 1e-4
    for g in range(12 // group_rows):  # one step per group: the group's max|w| / Q
        rows = slice(g * group_rows, (g + 1) * group_rows)
        assert torch.unique(step[rows]).numel() == 1
        amax = float(w[rows].abs().max())
        assert float(step[rows][0]) == pytest.approx(amax / q if amax > 0 else 1.0)
        if amax > 0:
            assert float(wq[rows].abs().max()) == pytest.approx(amax)  # the group's largest weight is exact
    assert torch.equal(wq[group_rows : 2 * group_rows], torch.zeros(group_rows, 10))
    torch.testing.assert_close(quant(wq), wq, rtol=0, atol=1e-6)  # idempotent: already on the grid
    assert (w - wq).abs().max() <= step.max() / 2 + 1e-6  # rounding error at most half a step
    w.requires_grad_(True)
    quant(w).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight-through


def test_group_rows_must_divide_the_rows():
    with pytest.raises(ValueError, match="divide"):
        group_scale(torch.randn(10, 4), 4, 3)
    with pytest.raises(ValueError):
        methods.build("qbert", 1.0, {"low_bits": 5})
    with pytest.raises(ValueError):
        methods.build("qbert", 1.0, {"low_bits": 8, "high_bits": 4})


def test_mixed_layers_store_the_fake_quantized_weights_exactly(wide_tiny_model):
    names = list(prunable_linears(wide_tiny_model))
    bits = {n: (8 if "layer.0." in n else 4) for n in names}
    expected = {n: GroupWeightFakeQuant(bits[n], 2)(wide_tiny_model.get_submodule(n).weight.detach()) for n in names}
    model = quantize_encoder_mixed(wide_tiny_model, bits, group_rows=2)
    for n in names:
        layer = model.get_submodule(n)
        assert isinstance(layer, Int8DynamicLinear if bits[n] == 8 else Int4WeightLinear)
        assert torch.equal(layer.dequantized_weight(), expected[n])


# ----- the method end to end -------------------------------------------------------------------------


def test_registered_row():
    cls = methods.get("qbert")
    assert cls.budget_free and cls.starts_from == "dense" and "1909.05840" in cls.paper
    s = methods.build("qbert", 1.0).settings
    assert (s.high_bits, s.low_bits, s.high_share, s.group_rows) == (8, 4, 0.5, 1)


def test_trains_finalizes_saves_and_reloads_to_the_same_outputs(tiny_model, sst2_small, tokenizer, tmp_path):
    dense = copy.deepcopy(tiny_model)
    method = methods.build("qbert", 1.0, {**FAST, "kernel": "int_mm"})
    train(tiny_model, sst2_small["train"], tokenizer, _budget(3), method, seed=0)
    batch = sample_batch(tokenizer)
    simulated = logits(tiny_model, batch)  # the fake-quantized model
    names = list(prunable_linears(tiny_model))
    model = method.finalize(tiny_model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())
    info = json.loads(json.dumps(method.describe(), allow_nan=False))  # goes into the record as it is
    q = info["quantization"]
    assert sorted(q["bits_per_layer"].values()) == [4, 8]
    for n in names:
        layer_bits = q["bits_per_layer"][n.split("encoder.layer.")[1].split(".")[0]]
        assert q["bits_per_matrix"][n] == layer_bits
        assert isinstance(model.get_submodule(n), Int8DynamicLinear if layer_bits == 8 else Int4WeightLinear)
    for e in q["sensitivity"]["per_layer"].values():
        assert len(e["per_batch"]) == FAST["hessian_batches"] and math.isfinite(e["omega"])
    assert q["calibration_data"]["count"] == FAST["hessian_batches"] * FAST["hessian_batch_size"]
    assert q["finalize_check"]["stored_equals_trained"]
    assert info["remaining_before_finalize"] == pytest.approx(remaining_fraction(model), abs=1e-12)
    final = logits(model, batch)
    # int4 layers: the same arithmetic as training; int8 layers: int_mm's exact integer product
    torch.testing.assert_close(final, simulated, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(final, logits(dense, batch), rtol=1e-4, atol=1e-5)

    checkpoints.save_model(dense, tokenizer, tmp_path / "d", sparse=False)
    checkpoints.save_model(model, tokenizer, tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["model_type"].startswith("prunebench-int8-int4-")  # the portable label says both
    reloaded = checkpoints.load_model(tmp_path / "q")
    for n in names:
        assert type(reloaded.get_submodule(n)) is type(model.get_submodule(n))
        assert torch.equal(reloaded.get_submodule(n).weight, model.get_submodule(n).weight)
        assert torch.equal(reloaded.get_submodule(n).weight_scale, model.get_submodule(n).weight_scale)
    assert torch.equal(logits(reloaded, batch), final)

    # bytes on disk: 1 byte per 8-bit weight, half a byte per 4-bit weight, + one fp32 step per row
    qb, db = encoder_bytes_on_disk(tmp_path / "q"), encoder_bytes_on_disk(tmp_path / "d")
    expected_codes = sum(
        m.out_features * (m.in_features if isinstance(m, Int8DynamicLinear) else (m.in_features + 1) // 2)
        for m in (model.get_submodule(n) for n in names)
    )
    assert (
        qb["encoder_weights"]
        == expected_codes
        == weight_bytes(model)["int8_code_bytes"] + weight_bytes(model)["int4_packed_code_bytes"]
    )
    assert qb["encoder_weight_scales"] == 4 * sum(model.get_submodule(n).out_features for n in names)
    fp32 = db["encoder_weights"]
    assert fp32 == weight_bytes(model)["fp32_bytes"]
    assert qb["encoder_weights"] / fp32 == pytest.approx((1 + 0.5) / 2 / 4)  # one layer 8-bit, one 4-bit
    assert q["encoder_bytes_vs_fp32"] == pytest.approx((qb["encoder_weights"] + qb["encoder_weight_scales"]) / fp32)
    assert (tmp_path / "q" / checkpoints.WEIGHTS).stat().st_size < (tmp_path / "d" / checkpoints.WEIGHTS).stat().st_size


def test_mixed_loader_refuses_a_mismatched_checkpoint(tiny_model, tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    names = list(prunable_linears(tiny_model))
    model = quantize_encoder_mixed(tiny_model, {n: (8 if "layer.1." in n else 2) for n in names})
    checkpoints.save_model(model, tokenizer, tmp_path / "q", sparse=False)
    state = load_file(str(tmp_path / "q" / checkpoints.WEIGHTS))
    state.pop(next(k for k in state if k.endswith("weight_packed")))
    save_file(state, str(tmp_path / "q" / checkpoints.WEIGHTS), metadata={"format": "pt"})
    from prunebench.checkpoints.quantized import load_mixed_model

    with pytest.raises(checkpoints.CheckpointError, match="does not match its architecture"):
        load_mixed_model(tmp_path / "q")
