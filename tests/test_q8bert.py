"""Q8BERT (methods/q8bert.py): 8-bit fake quantization of encoder weights (per tensor), of their
inputs (EMA ranges) and of the embeddings during fine-tuning; finalized into real int8 layers."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.nn.utils import parametrize

import methods
from prunebench.checkpoints import store as checkpoints
from prunebench.method.base import TrainingPlan
from prunebench.quantization.fake_quant import symmetric_scale
from prunebench.quantization.int8 import Int8DynamicLinear, is_quantized_model
from prunebench.structure.budget import prunable_linears
from prunebench.training.trainer import FinetuneBudget, train
from tests.conftest import logits, sample_batch


def _budget(steps, freeze=True):
    return FinetuneBudget(
        steps=steps, batch_size=16, learning_rate=1e-4, max_seq_len=64, freeze_embeddings=freeze, warmup_ratio=0.0
    )


def _on_grid(w, scale, bits=8):
    steps = w / scale
    on_grid = torch.allclose(steps, torch.round(steps), atol=1e-3)
    return bool(on_grid) and float(steps.abs().max()) <= 2 ** (bits - 1) - 1 + 1e-3


def test_registered_as_a_budget_free_row_from_pretrained():
    cls = methods.get("q8bert")
    assert cls.budget_free and cls.starts_from == "pretrained" and "1910.06188" in cls.paper
    assert cls.granularity == "int8-weights"
    with pytest.raises(ValueError):
        methods.build("q8bert", 1.0, {"weight_scale": "row"})


def test_prepare_fake_quantizes_weights_inputs_and_embeddings(wide_tiny_model, tokenizer):
    model = wide_tiny_model
    for p in model.base_model.embeddings.parameters():
        p.requires_grad_(False)  # as the trainer does with freeze_embeddings
    raw_embeddings = model.base_model.embeddings.word_embeddings.weight.detach().clone()
    raw_tt = model.base_model.embeddings.token_type_embeddings.weight.detach().clone()
    captured = {}
    first = model.base_model.encoder.layer[0].attention.self.query
    first.register_forward_pre_hook(lambda m, a: captured.setdefault("raw", []).append(a[0].detach().clone()))
    method = methods.build("q8bert", 1.0)
    method.prepare(model, TrainingPlan(total_steps=2, seed=0))
    linears = prunable_linears(model)
    assert len(linears) == 6 * model.config.num_hidden_layers
    for module in linears.values():
        assert parametrize.is_parametrized(module, "weight")
        original = module.parametrizations.weight.original
        assert _on_grid(module.weight.detach(), symmetric_scale(original, 8))  # one step for the whole matrix
        assert not torch.equal(module.weight.detach(), original.detach())
    emb = model.base_model.embeddings
    assert _on_grid(emb.word_embeddings.weight, symmetric_scale(raw_embeddings, 8))
    assert (emb.word_embeddings.weight - raw_embeddings).abs().max() <= symmetric_scale(raw_embeddings, 8) / 2 + 1e-7
    assert torch.equal(emb.token_type_embeddings.weight, raw_tt)  # the authors keep token types fp32
    # EMA of max|input| over two training batches (decay 0.9999), the raw input captured before the quantizer
    model.train()
    batch = sample_batch(tokenizer)
    model(**batch)
    model(**batch)
    raw = [x.abs().max().item() for x in captured["raw"]]
    hook = method.inputs["bert.encoder.layer.0.attention.self.query"]
    assert hook.observer.updates == 2
    assert hook.observer.threshold.item() == pytest.approx(0.9999 * raw[0] + 0.0001 * raw[1], rel=1e-6)


def test_gradient_reaches_the_float_weights(tiny_model, tokenizer):
    method = methods.build("q8bert", 1.0)
    method.prepare(tiny_model, TrainingPlan(total_steps=1, seed=0))
    tiny_model.train()
    batch = sample_batch(tokenizer)
    batch["labels"] = torch.tensor([1, 0, 1])
    tiny_model(**batch).loss.backward()
    for module in prunable_linears(tiny_model).values():
        grad = module.parametrizations.weight.original.grad
        assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("weight_scale", ["tensor", "channel"])
def test_trains_finalizes_to_int8_and_reloads(tiny_model, sst2_small, tokenizer, tmp_path, weight_scale):
    method = methods.build("q8bert", 1.0, {"weight_scale": weight_scale})
    train(tiny_model, sst2_small["train"], tokenizer, _budget(4), method, seed=0)
    trained = {n: m.weight.detach().clone() for n, m in prunable_linears(tiny_model).items()}  # W^, on the grid
    batch = sample_batch(tokenizer)
    model = method.finalize(tiny_model)
    assert is_quantized_model(model)
    assert all(isinstance(model.get_submodule(n), Int8DynamicLinear) for n in trained)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())
    # the int8 weights are the trained fake-quantized weights, re-quantized per row by the kernel
    axis = None if weight_scale == "tensor" else 0
    for name, w in trained.items():
        deq = model.get_submodule(name).dequantized_weight()
        step = symmetric_scale(w, 8, axis)
        assert ((deq - w).abs() <= step / 2 + 1e-6).all()
        if weight_scale == "channel":
            torch.testing.assert_close(deq, w, rtol=1e-6, atol=1e-9)
    info = method.describe()
    json.dumps(info, allow_nan=False)  # goes into the training summary as it is
    q = info["quantization"]
    assert q["weight_bits"] == 8 and q["activation_bits"] == 8 and q["ema_decay"] == 0.9999
    assert q["activation_updates"] == 4 and len(q["activation_thresholds"]) == len(trained)
    assert all(t > 0 for t in q["activation_thresholds"].values())
    assert q["inference"]["scheme"] == "int8-dynamic" and "kernel" in q["inference"]
    assert q["fake_quantized"]["encoder_linear_weights"] == len(trained)
    assert set(q["fake_quantized"]["embeddings"]) == {"word_embeddings", "position_embeddings"}
    req = q["finalize_requantization"]
    assert req["max_error_in_trained_steps"] <= 0.5 + 1e-4
    if weight_scale == "channel":
        assert req["share_reproduced_exactly"] == 1.0
    else:
        assert 0 < req["share_reproduced_exactly"] < 1.0
    checkpoints.save_model(model, tokenizer, tmp_path / "q")
    reloaded = checkpoints.load_model(tmp_path / "q")
    assert is_quantized_model(reloaded)
    assert torch.equal(logits(reloaded, batch), logits(model, batch))


def test_trainable_embeddings_are_parametrized_and_left_on_the_grid(tiny_model, sst2_small, tokenizer):
    method = methods.build("q8bert", 1.0)
    train(tiny_model, sst2_small["train"], tokenizer, _budget(2, freeze=False), method, seed=0)
    emb = tiny_model.base_model.embeddings.word_embeddings
    assert parametrize.is_parametrized(emb, "weight")
    model = method.finalize(tiny_model)
    w = model.base_model.embeddings.word_embeddings.weight.detach()
    assert not parametrize.is_parametrized(model.base_model.embeddings.word_embeddings)
    assert _on_grid(w, symmetric_scale(w, 8))


def test_quantize_embeddings_off_keeps_them(tiny_model):
    before = copy.deepcopy(tiny_model.base_model.embeddings.word_embeddings.weight.detach())
    method = methods.build("q8bert", 1.0, {"quantize_embeddings": False})
    method.prepare(tiny_model, TrainingPlan(total_steps=1, seed=0))
    assert torch.equal(tiny_model.base_model.embeddings.word_embeddings.weight.detach(), before)
    assert "word_embeddings" in method.describe()["quantization"]["kept_fp32"]


def test_guard_remaining_before_finalize_equals_the_int8_model(wide_tiny_model):
    from prunebench.structure.budget import remaining_fraction

    method = methods.build("q8bert", 1.0)
    method.prepare(wide_tiny_model, TrainingPlan(total_steps=1, seed=0))
    model = method.finalize(wide_tiny_model)
    # per-row re-quantization of the per-tensor grid keeps its zeros and its non-zeros
    assert method.describe()["remaining_before_finalize"] == pytest.approx(remaining_fraction(model), abs=1e-12)
    assert method.remaining_before_finalize < 1.0
