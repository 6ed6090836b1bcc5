"""Model surgery: removing heads / layers / FFN units equals masking / skipping them; compacted
checkpoints reload exactly; the budget is counted against the dense origin."""

import json

import pytest
import torch

from prunebench.checkpoints.store import SPARSE, WEIGHTS, CheckpointError, load_model, load_sparse, save_model
from prunebench.measure.flops import flops_per_example
from prunebench.structure import surgery
from prunebench.structure.budget import count_encoder_weights, remaining_fraction
from tests.conftest import logits, sample_batch

ATOL = 1e-5
# tiny model: hidden 64, 2 layers, 4 heads of 16, FFN 128 -> per layer 4*64*64 + 2*64*128 = 32768
DENSE = 65536
PER_HEAD = 4 * 64 * 16
PER_UNIT = 2 * 64


_batch, _logits = sample_batch, logits


@pytest.fixture
def batch(tokenizer):
    return _batch(tokenizer)


@pytest.fixture
def model(wide_tiny_model):
    return wide_tiny_model


def test_remove_heads_equals_masking(model, batch):
    heads = {0: [1, 3], 1: [0]}
    dense = _logits(model, batch)
    handles = surgery.mask_heads(model, heads)
    masked = _logits(model, batch)
    for h in handles:
        h.remove()
    assert not torch.allclose(masked, dense, atol=1e-3)  # the mask does something
    surgery.remove_heads(model, heads)
    torch.testing.assert_close(_logits(model, batch), masked, atol=ATOL, rtol=0)
    assert surgery.head_counts(model) == [2, 3]
    att = model.base_model.encoder.layer[0].attention.self
    assert (att.num_attention_heads, att.all_head_size, att.query.out_features) == (2, 32, 32)
    assert model.base_model.encoder.layer[0].attention.output.dense.in_features == 32


def test_remove_all_heads_of_a_layer_equals_masking(model, batch):
    heads = {1: [0, 1, 2, 3]}
    handles = surgery.mask_heads(model, heads)
    masked = _logits(model, batch)
    for h in handles:
        h.remove()
    surgery.remove_heads(model, heads)
    torch.testing.assert_close(_logits(model, batch), masked, atol=ATOL, rtol=0)
    assert surgery.head_counts(model) == [4, 0]
    # a layer without heads costs no attention FLOPs and no attention weights
    assert count_encoder_weights(model).nonzero == DENSE - 4 * PER_HEAD


def test_head_gates_scale_context_and_carry_gradients(model, batch):
    gates = {0: torch.tensor([1.0, 0.5, 1.0, 1.0], requires_grad=True)}
    handles = surgery.head_gate_hooks(model, gates)
    model.eval()(**batch).logits.sum().backward()
    assert gates[0].grad is not None and gates[0].grad.abs().sum() > 0
    # gates are read at call time: replacing the tensor changes the next forward
    gates[0] = torch.ones(4)
    with_ones = _logits(model, batch)
    for h in handles:
        h.remove()
    torch.testing.assert_close(with_ones, _logits(model, batch), atol=ATOL, rtol=0)


def _skip_layers(model, layers):
    """Skip layers by making them the identity (the reference for removing them)."""
    for i in layers:
        layer = model.base_model.encoder.layer[i]
        layer.forward = lambda hidden_states, *a, **k: hidden_states


def test_remove_layers_equals_skipping(model, batch, tiny_model):
    import copy

    skipped = copy.deepcopy(model)
    _skip_layers(skipped, [0])
    expected = _logits(skipped, batch)
    assert not torch.allclose(expected, _logits(model, batch), atol=1e-3)
    surgery.remove_layers(model, [0])
    torch.testing.assert_close(_logits(model, batch), expected, atol=ATOL, rtol=0)
    assert len(model.base_model.encoder.layer) == 1
    with pytest.raises(surgery.SurgeryError, match="no encoder"):
        surgery.remove_layers(model, [0])


def test_remove_ffn_units_equals_masking(model, batch):
    units = {0: list(range(0, 128, 3)), 1: list(range(128))}  # layer 1 loses every unit
    handles = surgery.mask_ffn_units(model, units)
    masked = _logits(model, batch)
    for h in handles:
        h.remove()
    assert not torch.allclose(masked, _logits(model, batch), atol=1e-3)
    surgery.remove_ffn_units(model, units)
    torch.testing.assert_close(_logits(model, batch), masked, atol=ATOL, rtol=0)
    assert model.base_model.encoder.layer[0].intermediate.dense.out_features == 128 - len(units[0])


def _compact(model):
    surgery.remove_heads(model, {0: [2], 1: [0, 1, 2, 3]})
    surgery.remove_ffn_units(model, {0: [5, 6, 7]})
    surgery.remove_layers(model, [1])
    surgery.remove_heads(model, {0: [0]})  # indices of the model as it is now
    return model


def test_remaining_fraction_counts_against_the_dense_origin(model):
    _compact(model)
    # left: layer 0 with 2 heads and 125 FFN units
    expected = (2 * PER_HEAD + 125 * PER_UNIT) / DENSE
    assert remaining_fraction(model) == pytest.approx(expected)
    assert model.config.prunebench_dense_encoder_weights == DENSE
    ops = model.config.prunebench_surgery
    assert [o["op"] for o in ops] == ["remove_heads", "remove_ffn_units", "remove_layers", "remove_heads"]
    assert ops[0]["args"] == {"heads": {"0": [2], "1": [0, 1, 2, 3]}}
    assert json.loads(json.dumps(ops)) == ops


def test_compacted_checkpoint_reloads_identically_and_is_smaller(model, tokenizer, batch, tmp_path):
    dense_dir = save_model(model, tokenizer, tmp_path / "dense")
    _compact(model)
    out = save_model(model, tokenizer, tmp_path / "compact")
    again = load_model(out)
    torch.testing.assert_close(_logits(again, batch), _logits(model, batch), atol=ATOL, rtol=0)
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())
    assert remaining_fraction(again) == pytest.approx(remaining_fraction(model))
    assert (out / WEIGHTS).stat().st_size < (dense_dir / WEIGHTS).stat().st_size
    # shapes the FLOPs counter reads survive the reload
    assert flops_per_example(again, 16) == flops_per_example(model, 16)
    # the sparse encoding round-trips the compacted (and zero-size) tensors
    state = load_sparse(out / SPARSE)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_zero_head_layer_checkpoint_reloads(model, tokenizer, batch, tmp_path):
    surgery.remove_heads(model, {0: [0, 1, 2, 3]})
    surgery.remove_ffn_units(model, {1: list(range(128))})
    out = save_model(model, tokenizer, tmp_path / "m")
    again = load_model(out)
    torch.testing.assert_close(_logits(again, batch), _logits(model, batch), atol=ATOL, rtol=0)
    assert surgery.head_counts(again) == [0, 4]


def test_flops_shrink_with_removed_heads(model):
    before = flops_per_example(model, 32)["dense_kernels"]
    surgery.remove_heads(model, {0: [0, 1]})
    after = flops_per_example(model, 32)["dense_kernels"]
    removed_linear = 2 * 2 * PER_HEAD * 32  # 2 heads' Q,K,V,O weights, every token
    removed_attention = 2 * 2 * 32 * 32 * 2 * 16
    assert before - after == pytest.approx(removed_linear + removed_attention)


def test_reload_refuses_unknown_op_and_mismatched_weights(model, tokenizer, tmp_path):
    surgery.remove_heads(model, {0: [1]})
    out = save_model(model, tokenizer, tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    config["prunebench_surgery"].append({"op": "no_such_op", "args": {}})
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no_such_op"):
        load_model(out)
    config["prunebench_surgery"] = [{"op": "remove_heads", "args": {"heads": {"0": [2, 3]}}}]
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape differs|does not match"):
        load_model(out)


def test_bad_indices_and_ops_are_refused(model):
    with pytest.raises(surgery.SurgeryError, match="out of range"):
        surgery.remove_heads(model, {0: [4]})
    with pytest.raises(surgery.SurgeryError, match="out of range"):
        surgery.remove_layers(model, [2])
    with pytest.raises(surgery.SurgeryError, match="not registered"):
        surgery.record_op(model, "nope", {})
    with pytest.raises(surgery.SurgeryError, match="JSON"):
        surgery.record_op(model, "remove_layers", {"layers": {1: [0]}})  # int keys do not survive JSON
    with pytest.raises(ValueError, match="already registered"):
        surgery.surgery_op("remove_heads")(lambda m, a: None)


def test_replay_reproduces_shapes_on_a_fresh_model(model, tiny_model):
    from prunebench.checkpoints.pretrained import load_pretrained

    _compact(model)
    fresh = load_pretrained("tiny-random", 2, 0)
    surgery.replay(fresh, model.config.prunebench_surgery)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
