"""Fixed position-only attention patterns (Raganato et al. 2020): definitions, module, method, reload."""

from __future__ import annotations

import pytest
import torch

import methods
from prunebench.checkpoints.store import load_model, save_model
from prunebench.measure.flops import flops_per_example
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import count_encoder_weights
from prunebench.structure.fixed_attention import (
    LEARNABLE,
    PATTERNS,
    FixedPatternSelfAttention,
    _fixed_context,
    assign_patterns,
    fix_heads,
    key_padding,
    pattern_matrix,
)
from prunebench.structure.surgery import encoder_layers, recorded_ops

# Hand-checked 4-token example (rows: queries 0..3, columns: keys 0..3), no padding.
EXPECTED_4 = {
    "current": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
    "previous": [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]],
    "next": [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]],
    "left": [[1, 0, 0, 0], [1, 0, 0, 0], [1 / 2, 1 / 2, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0]],
    "right": [[0, 1 / 3, 1 / 3, 1 / 3], [0, 0, 1 / 2, 1 / 2], [0, 0, 0, 1], [0, 0, 0, 1]],
}
# The same with the last position padding (3 real tokens): rows of the real queries 0..2.
EXPECTED_3_OF_4 = {
    "current": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]],
    "previous": [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]],
    "next": [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]],
    "left": [[1, 0, 0, 0], [1, 0, 0, 0], [1 / 2, 1 / 2, 0, 0]],
    "right": [[0, 1 / 2, 1 / 2, 0], [0, 0, 1, 0], [0, 0, 1, 0]],
}


@pytest.mark.parametrize("pattern", PATTERNS)
def test_patterns_match_hand_checked_definitions(pattern):
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    a = pattern_matrix(pattern, valid)
    assert torch.allclose(a[0], torch.tensor(EXPECTED_4[pattern], dtype=torch.float32), atol=1e-6)
    assert torch.allclose(a[1, :3], torch.tensor(EXPECTED_3_OF_4[pattern], dtype=torch.float32), atol=1e-6)
    # row-stochastic over the non-padding keys, nothing on padding, for every real query
    assert torch.allclose(a[1, :3].sum(-1), torch.ones(3))
    assert torch.all(a[1, :3, 3] == 0)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_fast_patterns_equal_explicit_matrices_with_padding(pattern):
    torch.manual_seed(0)
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 5:] = False
    valid[2, 2:] = False
    v = torch.randn(3, 2, 7, 5)
    fast = _fixed_context(pattern, v, valid)
    explicit = pattern_matrix(pattern, valid)[:, None] @ v
    assert torch.allclose(fast, explicit, atol=1e-5)
    a = pattern_matrix(pattern, valid)
    for b in range(3):
        n = int(valid[b].sum())
        assert torch.allclose(a[b, :n].sum(-1), torch.ones(n))
        assert torch.all(a[b, :n, n:] == 0)


def test_key_padding_reads_boolean_additive_and_missing_masks():
    keep = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    boolean = keep[:, None, None, :].expand(2, 1, 4, 4)
    additive = torch.zeros(2, 1, 4, 4).masked_fill(~boolean, torch.finfo(torch.float32).min)
    assert torch.equal(key_padding(boolean, 2, 4, "cpu"), keep)
    assert torch.equal(key_padding(additive, 2, 4, "cpu"), keep)
    assert key_padding(None, 2, 4, "cpu").all()


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def _logits(model):
    return model.eval()(**_batch()).logits


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_all_learnable_module_equals_bert_attention(tiny_model, impl):
    tiny_model.config._attn_implementation = impl
    before = _logits(tiny_model)
    fix_heads(tiny_model, {0: [LEARNABLE] * 4, 1: [LEARNABLE] * 4})
    assert isinstance(encoder_layers(tiny_model)[0].attention.self, FixedPatternSelfAttention)
    assert torch.allclose(_logits(tiny_model), before, atol=1e-5)


def test_method_removes_qk_of_fixed_heads_and_reloads(tiny_model, tmp_path):
    dense_flops = flops_per_example(tiny_model, 32)
    method = methods.build("fixed_attention", 1.0)
    assert method.budget_free
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    model = method.finalize(tiny_model)
    for layer in encoder_layers(model):
        att = layer.attention.self
        assert att.patterns == ["learnable", "current", "previous", "next"]
        assert (att.num_attention_heads, att.attention_head_size, att.all_head_size) == (4, 16, 64)
        assert att.num_learnable_heads == 1
        assert tuple(att.query.weight.shape) == tuple(att.key.weight.shape) == (16, 64)
        assert tuple(att.value.weight.shape) == (64, 64)
        assert layer.attention.output.dense.in_features == 64
        # QK^T and weighted sum for the learnable head only; shifts cost nothing
        assert att.attention_flops(32) == 2 * 2 * 32 * 32 * 16
    # per layer: Q and K lose 3 of 4 heads' rows, 2 * 48 * 64 of 4*64^2 + 2*64*128 weights
    assert count_encoder_weights(model).remaining_fraction == pytest.approx(1 - 2 * 48 * 64 / 32768)
    assert method.describe()["result"]["reached_remaining"] == pytest.approx(1 - 2 * 48 * 64 / 32768)
    flops = flops_per_example(model, 32)
    linear_saving = 2 * 2 * (2 * 48 * 64) * 32
    attention_saving = 2 * (2 * 2 * 32 * 32 * 16 * 3)
    assert dense_flops["dense_kernels"] - flops["dense_kernels"] == pytest.approx(linear_saving + attention_saving)
    assert recorded_ops(model)[-1]["op"] == "fixed_attention"
    save_model(model, None, tmp_path / "fixed")
    reloaded = load_model(tmp_path / "fixed")
    assert encoder_layers(reloaded)[1].attention.self.patterns == ["learnable", "current", "previous", "next"]
    assert torch.allclose(_logits(reloaded), _logits(model), atol=1e-6)


def test_fixed_heads_ignore_queries_and_keys_and_padding(tiny_model):
    """A fixed head's output depends only on values and positions, never on padded tokens."""
    fix_heads(tiny_model, {0: ["current", "previous", "left", "right"]})
    att = encoder_layers(tiny_model)[0].attention.self
    assert att.num_learnable_heads == 0 and att.query.weight.numel() == 0
    batch = _batch()
    with torch.no_grad():
        base = tiny_model.eval()(**batch).logits
        changed = dict(batch)
        ids = batch["input_ids"].clone()
        ids[2, 5:] = 7  # tokens under padding in example 2
        changed["input_ids"] = ids
        assert torch.allclose(tiny_model(**changed).logits, base, atol=1e-5)


def test_assign_patterns_and_bad_settings():
    assert assign_patterns(12, 1) == ["learnable"] + list(PATTERNS) * 2 + ["current"]
    assert assign_patterns(3, 3) == ["learnable"] * 3
    with pytest.raises(ValueError, match="learnable heads"):
        assign_patterns(4, 5)
    with pytest.raises(ValueError, match="unknown pattern"):
        methods.build("fixed_attention", 1.0, {"patterns": ["diagonal"]})
