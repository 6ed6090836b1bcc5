"""Quant-Noise (methods/quant_noise.py): scalar int8 / int4 quantization noise during fine-tuning,
full quantization at evaluation, finalized to int8 layers or packed int4 matrices (prunebench/quantization/int4.py)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from torch.nn.utils import parametrize

import methods
from prunebench.checkpoints import store as checkpoints
from prunebench.checkpoints.quantized import load_int4_model
from prunebench.measure.flops import flops_per_example
from prunebench.method.base import TrainingPlan
from prunebench.quantization.fake_quant import InputFakeQuant, WeightFakeQuant, fake_quantize_tensor
from prunebench.quantization.int4 import (
    Int4WeightLinear,
    is_int4_model,
    pack_int4,
    quantize_encoder_linears_int4,
    quantize_weight_int4,
    unpack_int4,
)
from prunebench.quantization.int8 import Int8DynamicLinear, is_quantized_model
from prunebench.structure.budget import count_encoder_weights, prunable_linears
from prunebench.training.trainer import FinetuneBudget, train
from tests.conftest import logits, sample_batch


def _budget(steps):
    return FinetuneBudget(
        steps=steps, batch_size=16, learning_rate=1e-4, max_seq_len=64, freeze_embeddings=True, warmup_ratio=0.0
    )


def test_registered_rows():
    for name, bits, granularity in (("quant_noise", 8, "int8-weights"), ("quant_noise_int4", 4, "int4-weights")):
        cls = methods.get(name)
        assert cls.budget_free and cls.starts_from == "pretrained" and "2004.07320" in cls.paper
        assert cls.bits == bits and cls.granularity == granularity
    assert methods.build("quant_noise", 1.0).settings.p == 0.5
    with pytest.raises(ValueError):
        methods.build("quant_noise", 1.0, {"p": 1.5})
    with pytest.raises(ValueError):
        methods.build("quant_noise_int4", 1.0, {"activation_noise": True})  # int4 inference keeps fp32 activations


def _simulated(lin, p=0.5):
    sim = copy.deepcopy(lin)
    parametrize.register_parametrization(sim, "weight", WeightFakeQuant(8, axis=0, p=p))
    InputFakeQuant(8, mode="per_token", p=p).install(sim)
    return sim.eval()  # p = 1


def test_noise_quantizer_is_the_int_mm_kernels_quantizer():
    """At p = 1 the simulated layer computes what Int8DynamicLinear's int_mm kernel computes."""
    torch.manual_seed(0)
    lin = nn.Linear(48, 24)
    layer = Int8DynamicLinear.from_float(lin, kernel="int_mm")
    x = torch.randn(2, 5, 48) * 3 + 0.5
    sim = _simulated(lin)
    torch.testing.assert_close(sim.weight.detach(), layer.dequantized_weight(), rtol=0, atol=0)
    with torch.no_grad():
        out, ref, fp32 = sim(x), layer(x), lin(x)
    assert (out - ref).abs().max() < 1e-5 * ref.abs().max()  # the kernel's result, up to float rounding
    assert (fp32 - ref).abs().max() > 100 * (out - ref).abs().max()  # ... while fp32 differs by the quantization


def test_noise_quantizer_and_the_default_kernel_share_the_weights():
    """The default kernel: identical int8 weights; activations rounded a little differently (docstring)."""
    torch.manual_seed(0)
    lin = nn.Linear(384, 96)
    layer = Int8DynamicLinear.from_float(lin)
    x = torch.randn(4, 9, 384)
    sim = _simulated(lin)
    torch.testing.assert_close(sim.weight.detach(), layer.dequantized_weight(), rtol=0, atol=0)
    with torch.no_grad():
        out, ref, fp32 = sim(x), layer(x), lin(x)
    # both are within the quantization error of fp32, and closer to each other than to a 4-bit model
    quant_error = (fp32 - ref).abs().max()
    assert (out - ref).abs().max() <= 2 * quant_error
    four_bit = F.linear(x, fake_quantize_tensor(lin.weight, 4, axis=0), lin.bias)
    assert (out - ref).abs().max() < 0.25 * (four_bit - ref).abs().max()


@pytest.mark.parametrize("name,p", [("quant_noise", 0.3), ("quant_noise_int4", 0.7)])
def test_share_of_noised_weights_is_p(tiny_model, tokenizer, name, p):
    method = methods.build(name, 1.0, {"p": p})
    method.prepare(tiny_model, TrainingPlan(total_steps=1, seed=0))
    tiny_model.train()
    for _ in range(3):
        tiny_model(**sample_batch(tokenizer))
    q = method.describe()["quantization"]
    assert abs(q["noised_share_weights"] - p) < 0.01
    if name == "quant_noise":
        assert abs(q["noised_share_activations"] - p) < 0.05
    else:
        assert q["noised_share_activations"] is None


def test_p0_trains_on_float_weights_and_p1_on_quantized_ones(tiny_model, tokenizer):
    model0, model1 = tiny_model, copy.deepcopy(tiny_model)
    methods.build("quant_noise_int4", 1.0, {"p": 0.0}).prepare(model0, TrainingPlan(total_steps=1, seed=0))
    methods.build("quant_noise_int4", 1.0, {"p": 1.0}).prepare(model1, TrainingPlan(total_steps=1, seed=0))
    model0.train(), model1.train()
    for name, module in prunable_linears(model0).items():
        w = module.parametrizations.weight.original.detach()
        assert torch.equal(module.weight.detach(), w)
        assert torch.equal(model1.get_submodule(name).weight.detach(), fake_quantize_tensor(w, 4, axis=0))
    model0.eval()  # evaluation quantizes everything, whatever p
    for module in prunable_linears(model0).values():
        original = module.parametrizations.weight.original
        assert torch.equal(module.weight.detach(), fake_quantize_tensor(original, 4, axis=0))


@pytest.mark.parametrize("name", ["quant_noise", "quant_noise_int4"])
def test_trains_finalizes_and_reloads(tiny_model, sst2_small, tokenizer, tmp_path, name):
    method = methods.build(name, 1.0)
    train(tiny_model, sst2_small["train"], tokenizer, _budget(4), method, seed=0)
    batch = sample_batch(tokenizer)
    simulated = logits(tiny_model, batch)  # eval mode before finalize: the whole model quantized (p = 1)
    names = list(prunable_linears(tiny_model))
    eval_weights = {n: tiny_model.get_submodule(n).weight.detach().clone() for n in names}  # p = 1 in eval mode
    model = method.finalize(tiny_model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())
    final = logits(model, batch)
    json.dumps(method.describe(), allow_nan=False)  # goes into the training summary as it is
    q = method.describe()["quantization"]
    assert q["p"] == 0.5 and 0.45 < q["noised_share_weights"] < 0.55
    if name == "quant_noise":
        assert is_quantized_model(model) and all(isinstance(model.get_submodule(n), Int8DynamicLinear) for n in names)
        assert q["bits"] == 8 and q["inference"]["scheme"] == "int8-dynamic"
        for n in names:  # the int8 weights are the grid the noise used, exactly
            torch.testing.assert_close(model.get_submodule(n).dequantized_weight(), eval_weights[n], rtol=0, atol=0)
        # activations: rounded per token in training, by the kernel at inference: close, not equal
        assert (final - simulated).abs().max() < 0.02 * simulated.abs().max() + 1e-4
    else:
        assert is_int4_model(model) and all(isinstance(model.get_submodule(n), Int4WeightLinear) for n in names)
        assert q["bits"] == 4 and q["inference"]["scheme"] == "int4-weight-only" and "fp32" in q["inference"]["kernel"]
        torch.testing.assert_close(final, simulated, rtol=1e-6, atol=1e-7)
        assert all(int(model.get_submodule(n).weight.abs().max()) == 7 for n in names)
    checkpoints.save_model(model, tokenizer, tmp_path / "m")
    reloaded = checkpoints.load_model(tmp_path / "m")
    assert type(reloaded.get_submodule(names[0])) is type(model.get_submodule(names[0]))
    assert torch.equal(logits(reloaded, batch), final)
    for n in names:
        assert torch.equal(reloaded.get_submodule(n).weight, model.get_submodule(n).weight)


@pytest.mark.parametrize("cols", [1, 6, 7, 64])
def test_int4_packing_round_trips_exactly(cols):
    codes = torch.randint(-8, 8, (5, cols), generator=torch.Generator().manual_seed(cols), dtype=torch.int8)
    codes[0, : min(cols, 16)] = torch.arange(-8, 8, dtype=torch.int8)[: min(cols, 16)]  # every code
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (5, (cols + 1) // 2)
    assert torch.equal(unpack_int4(packed, cols), codes)
    with pytest.raises(ValueError):
        pack_int4(torch.tensor([[9]]))


def test_int4_weight_quantization_per_row():
    w = torch.tensor([[0.0, 0.62, -1.4, 0.05], [0.0, 0.0, 0.0, 0.0], [7.0, -3.4, 1.0, 0.2]])
    codes, scale = quantize_weight_int4(w)
    assert codes.dtype == torch.int8
    assert codes.tolist() == [[0, 3, -7, 0], [0, 0, 0, 0], [7, -3, 1, 0]]  # step max|row|/7; a zero row: step 1
    assert scale.tolist() == pytest.approx([0.2, 1.0, 1.0])


def test_int4_file_is_an_eighth_of_fp32_for_the_encoder_matrices(wide_tiny_model, tokenizer, tmp_path):
    dense = copy.deepcopy(wide_tiny_model)
    model = quantize_encoder_linears_int4(wide_tiny_model)
    checkpoints.save_model(dense, tokenizer, tmp_path / "d", sparse=False)
    checkpoints.save_model(model, tokenizer, tmp_path / "q")
    names = list(prunable_linears(dense))

    def encoder_bytes(folder):
        out = {}
        with safe_open(str(folder / checkpoints.WEIGHTS), framework="pt") as fh:
            for key in fh.keys():
                if any(key.startswith(n + ".") for n in names) and not key.endswith(".bias"):
                    t = fh.get_tensor(key)
                    out[key] = t.numel() * t.element_size()
        return out

    fp32, int4 = encoder_bytes(tmp_path / "d"), encoder_bytes(tmp_path / "q")
    assert set(fp32) == {n + ".weight" for n in names}
    assert set(int4) == {n + ".weight_packed" for n in names} | {n + ".weight_scale" for n in names}
    packed = sum(v for k, v in int4.items() if k.endswith("weight_packed"))
    assert packed * 8 == sum(fp32.values())  # two codes per byte: exactly 1/8 of fp32
    min_in = min(dense.get_submodule(n).in_features for n in names)
    assert sum(int4.values()) / sum(fp32.values()) <= 1 / 8 + 1 / min_in  # + one fp32 scale per row
    # the whole file shrinks by the encoder matrices' 7/8 (embeddings stay fp32)
    size = lambda f: (f / checkpoints.WEIGHTS).stat().st_size  # noqa: E731
    assert size(tmp_path / "d") - size(tmp_path / "q") >= 0.85 * (sum(fp32.values()) - sum(int4.values()))
    # reload: same codes, same outputs; the shared ruler and FLOP counter see the dense shapes
    reloaded = load_int4_model(checkpoints.verify(tmp_path / "q"))
    batch = sample_batch(tokenizer)
    assert torch.equal(logits(reloaded, batch), logits(model, batch))
    count = count_encoder_weights(reloaded)
    assert count.stored == count.dense_reference
    assert flops_per_example(reloaded, 16)["dense_kernels"] == flops_per_example(dense, 16)["dense_kernels"]
    sparse = checkpoints.load_sparse(tmp_path / "q" / checkpoints.SPARSE)
    state = reloaded.state_dict()
    assert set(sparse) == set(state) and all(torch.equal(sparse[k], state[k]) for k in state)


def test_int4_loader_refuses_a_mismatched_checkpoint(tiny_model, tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    checkpoints.save_model(quantize_encoder_linears_int4(tiny_model), tokenizer, tmp_path / "q", sparse=False)
    state = load_file(str(tmp_path / "q" / checkpoints.WEIGHTS))
    state.pop(next(k for k in state if k.endswith("weight_packed")))
    save_file(state, str(tmp_path / "q" / checkpoints.WEIGHTS), metadata={"format": "pt"})
    with pytest.raises(checkpoints.CheckpointError, match="does not match its architecture"):
        load_int4_model(tmp_path / "q")


@pytest.mark.parametrize("name", ["quant_noise", "quant_noise_int4"])
def test_guard_counts_the_quantizers_zeros_as_the_methods_own(name, wide_tiny_model, tokenizer):
    from prunebench.structure.budget import remaining_fraction

    method = methods.build(name, 1.0)
    method.prepare(wide_tiny_model, TrainingPlan(total_steps=1, seed=0))
    model = method.finalize(wide_tiny_model)
    info = method.describe()
    assert info["remaining_before_finalize"] == pytest.approx(remaining_fraction(model), abs=1e-12)
    if name == "quant_noise_int4":  # 4 bits round a sizeable share of N(0, 0.2) weights to zero
        assert 0.5 < info["remaining_before_finalize"] < 0.95
    assert info["finalize_enforcement"].startswith("none")
