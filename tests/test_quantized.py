"""int8 dynamic quantization (prunebench.quantized, methods/quantization.py) and its way
through the shared measurement path: weight count, FLOPs, sparse encoding, save and reload."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import methods
from prunebench import budget, checkpoints
from prunebench.measure.disk import bytes_on_disk
from prunebench.measure.flops import flops_per_example
from prunebench.quantized import load_model as quantized_load_model
from prunebench.quantized import (CONFIG_ATTR, Int8DynamicLinear, int8_matmul, is_quantized_checkpoint,
                                  is_quantized_model, load_quantized_model, quantize_encoder_linears, quantize_weight)


def test_weight_quantization_is_per_row_symmetric_and_keeps_zeros():
    w = torch.tensor([[0.0, 1.0, -2.0, 0.5], [0.0, 0.0, 0.0, 0.0], [3.0, -3.0, 0.01, 0.0]])
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and scale.shape == (3,)
    assert q[0].tolist() == [0, 64, -127, 32] and scale[0] == pytest.approx(2 / 127)
    assert q[1].tolist() == [0, 0, 0, 0] and scale[1] == 1.0  # an all-zero row
    assert (q[w == 0] == 0).all(), "pruned weights stay pruned"
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()


def test_int8_matmul_is_exact_integer_product():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (5, 48), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (7, 48), generator=g, dtype=torch.int8)
    assert torch.equal(int8_matmul(a, b).float(), a.float() @ b.float().t())


def test_int8_linear_matches_float_linear():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    q = Int8DynamicLinear.from_float(lin)
    x = torch.randn(3, 5, 64)
    assert isinstance(q, nn.Linear) and q.weight.dtype == torch.int8 and not q.weight.requires_grad
    ref = lin(x)
    out = q(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.fixture
def quantized(tiny_model):
    return quantize_encoder_linears(copy.deepcopy(tiny_model))


def test_quantize_encoder_linears_replaces_only_encoder_layers(tiny_model, quantized):
    swapped = [n for n, m in quantized.named_modules() if isinstance(m, Int8DynamicLinear)]
    assert len(swapped) == 6 * tiny_model.config.num_hidden_layers
    assert all(".encoder.layer." in f".{n}." for n in swapped)
    assert type(quantized.classifier) is nn.Linear and type(quantized.bert.pooler.dense) is nn.Linear
    assert is_quantized_model(quantized) and getattr(quantized.config, CONFIG_ATTR)["scheme"] == "int8-dynamic"
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, out = tiny_model(input_ids=ids).logits, quantized(input_ids=ids).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_shared_ruler_counts_int8_weights(tiny_model, quantized):
    count = budget.count_encoder_weights(quantized)
    dense = budget.count_encoder_weights(tiny_model)
    assert count.stored == dense.stored == count.dense_reference
    assert 0.9 < count.remaining_fraction <= 1.0  # only weights that round to zero are not counted
    assert set(budget.per_matrix_remaining(quantized)) == set(budget.per_matrix_remaining(tiny_model))
    f, fd = flops_per_example(quantized, 32), flops_per_example(tiny_model, 32)
    assert f["dense_kernels"] == fd["dense_kernels"]


def test_quantized_checkpoint_round_trip(tiny_model, quantized, tokenizer, tmp_path):
    checkpoints.save_model(quantized, tokenizer, tmp_path / "q")
    checkpoints.save_model(tiny_model, tokenizer, tmp_path / "d")
    assert is_quantized_checkpoint(tmp_path / "q") and not is_quantized_checkpoint(tmp_path / "d")
    assert bytes_on_disk(tmp_path / "q")["dense"] < bytes_on_disk(tmp_path / "d")["dense"]
    reloaded = load_quantized_model(checkpoints.verify(tmp_path / "q"))
    assert is_quantized_model(quantized_load_model(tmp_path / "q"))
    assert not is_quantized_model(quantized_load_model(tmp_path / "d"))
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.equal(reloaded(input_ids=ids).logits, quantized(input_ids=ids).logits)
    sparse = checkpoints.load_sparse(tmp_path / "q" / checkpoints.SPARSE)
    state = reloaded.state_dict()
    assert all(torch.equal(sparse[k], state[k]) for k in sparse) and set(sparse) == set(state)


def test_load_refuses_a_mismatched_checkpoint(quantized, tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    checkpoints.save_model(quantized, tokenizer, tmp_path / "q", sparse=False)
    state = load_file(str(tmp_path / "q" / checkpoints.WEIGHTS))
    state.pop(next(k for k in state if k.endswith("weight_scale")))
    save_file(state, str(tmp_path / "q" / checkpoints.WEIGHTS), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="does not match its architecture"):
        load_quantized_model(tmp_path / "q")


def test_int8_dynamic_method_is_a_budget_free_row(tiny_model):
    cls = methods.get("int8_dynamic")
    assert cls.budget_free and cls.starts_from == "pretrained" and "1910.06188" in cls.paper
    method = methods.build("int8_dynamic", 1.0)
    model = method.finalize(copy.deepcopy(tiny_model))
    assert is_quantized_model(model)
    assert method.describe()["granularity"] == "int8-weights"
