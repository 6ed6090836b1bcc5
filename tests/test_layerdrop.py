"""LayerDrop (Fan et al. 2019): layer skipping in training only, the "every other" rule,
depth chosen for the budget, layers physically removed; the layer_prune control."""

import copy

import pytest
import torch

import methods
from methods.layerdrop import (
    every_other_drop,
    install_layerdrop,
    layers_for_budget,
    layers_to_drop,
    uninstall_layerdrop,
)
from prunebench.checkpoints.pretrained import load_pretrained
from prunebench.checkpoints.store import load_model, save_model
from prunebench.method.base import TrainingPlan
from prunebench.structure import surgery
from prunebench.structure.budget import remaining_fraction
from prunebench.training.trainer import FinetuneBudget, train


@pytest.mark.parametrize(
    "n, p, dropped_depths",
    [
        (6, 0.5, [2, 4, 6]),  # every other layer, the first kept
        (12, 0.5, [2, 4, 6, 8, 10, 12]),
        (12, 0.25, [4, 8, 12]),
        (12, 0.2, [5, 10]),  # floor(1/0.2) = 5
        (24, 0.2, [5, 10, 15, 20]),
        (6, 1 / 3, [3, 6]),
        (16, 0.5, [2, 4, 6, 8, 10, 12, 14, 16]),  # fairseq's example keeps 0,2,...,14 (0-based)
    ],
)
def test_every_other_rule_matches_the_paper(n, p, dropped_depths):
    assert every_other_drop(n, p) == [d - 1 for d in dropped_depths]


@pytest.mark.parametrize(
    "n, keep, dropped",
    [
        (6, 3, [1, 3, 5]),  # the paper's rule at p = 1/2
        (6, 4, [2, 5]),  # the paper's rule at p = 1/3
        (6, 5, [5]),  # p = 1/6
        (6, 2, [1, 2, 4, 5]),  # p = 2/3 > 1/2: evenly spaced fallback keeps 0 and 3
        (6, 1, [1, 2, 3, 4, 5]),
        (6, 6, []),
        (12, 9, [3, 7, 11]),  # p = 1/4
    ],
)
def test_layers_to_drop_for_a_depth(n, keep, dropped):
    assert layers_to_drop(n, keep) == dropped
    assert len(layers_to_drop(n, keep)) == n - keep


def test_depth_nearest_the_budget(tiny_model):
    # 2 layers of 1/2 each
    assert layers_for_budget(tiny_model, 0.5)[:2] == (1, [1])
    assert layers_for_budget(tiny_model, 0.8)[:2] == (2, [])
    assert layers_for_budget(tiny_model, 0.75)[0] == 2  # a tie keeps more layers
    assert layers_for_budget(tiny_model, 0.1)[:3] == (1, [1], 0.5)  # never fewer than one layer


def test_six_layer_depths():
    from transformers import AutoModelForSequenceClassification, BertConfig

    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=6,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    model = AutoModelForSequenceClassification.from_config(config)
    assert layers_for_budget(model, 0.5)[:2] == (3, [1, 3, 5])
    assert layers_for_budget(model, 0.3)[0] == 2  # 1.8 layers -> 2 (0.333)
    assert layers_for_budget(model, 0.1)[0] == 1  # 0.6 layers -> 1 (0.167)
    assert layers_for_budget(model, 0.7)[0] == 4  # 4.2 layers -> 4 (0.667)


def test_layers_skipped_at_rate_in_training_never_in_eval(tiny_model, tokenizer):
    batch = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    skips = install_layerdrop(tiny_model, 0.3, seed=0)
    tiny_model.train()
    with torch.no_grad():
        for _ in range(100):
            tiny_model(**batch)
    skipped = sum(s.skipped for s in skips)
    total = skipped + sum(s.run for s in skips)
    assert total == 200
    assert 0.3 - 0.1 < skipped / total < 0.3 + 0.1  # binomial sd ~0.032 (and the seed is fixed)
    tiny_model.eval()
    before = skipped
    with torch.no_grad():
        first = tiny_model(**batch).logits
        for _ in range(20):
            torch.testing.assert_close(tiny_model(**batch).logits, first)
    assert sum(s.skipped for s in skips) == before
    uninstall_layerdrop(tiny_model)
    assert "forward" not in tiny_model.base_model.encoder.layer[0].__dict__


def test_skipped_layer_is_the_identity(tiny_model, tokenizer):
    batch = tokenizer(["a fine film"], return_tensors="pt")
    reference = copy.deepcopy(tiny_model)
    surgery.remove_layers(reference, [0])
    install_layerdrop(tiny_model, 0.0, seed=0)
    tiny_model.base_model.encoder.layer[0].forward.rate = 1.0  # always skip layer 0 in training mode
    for m in tiny_model.modules():  # training mode without dropout, for an exact comparison
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    tiny_model.train()
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(**batch).logits, reference.eval()(**batch).logits, atol=1e-5, rtol=0)


def _budget(steps):
    return FinetuneBudget(
        steps=steps, batch_size=16, learning_rate=1e-4, max_seq_len=64, freeze_embeddings=True, warmup_ratio=0.0
    )


def test_layerdrop_trains_and_removes_layers(tiny_model, sst2_small, tokenizer, tmp_path):
    method = methods.build("layerdrop", 0.5, {"rate": 0.5})
    train(tiny_model, sst2_small["train"], tokenizer, _budget(10), method, seed=0)
    described = method.describe()["layers"]
    assert 0.2 < described["skipped_fraction"] < 0.8
    model = method.finalize(tiny_model)
    assert len(model.base_model.encoder.layer) == 1
    assert remaining_fraction(model) == pytest.approx(0.5)
    assert described["removed"] == [1]
    assert "forward" not in model.base_model.encoder.layer[0].__dict__
    save_model(model, tokenizer, tmp_path / "m")
    batch = tokenizer(["a fine film"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "m")(**batch).logits, model.eval()(**batch).logits)


def test_match_rate_uses_p_star():
    method = methods.build("layerdrop", 0.5, {"match_rate": True})
    model = load_pretrained("tiny-random", 2, 0)
    method.prepare(model, TrainingPlan(total_steps=1, seed=0))
    assert method.rate == pytest.approx(0.5)  # p* = 1 - 1/2


def test_layer_prune_control_removes_the_same_layers_without_skipping(tiny_model, sst2_small, tokenizer):
    method = methods.build("layer_prune", 0.5)
    train(tiny_model, sst2_small["train"], tokenizer, _budget(4), method, seed=0)
    assert method.skips == []
    assert "forward" not in tiny_model.base_model.encoder.layer[0].__dict__
    model = method.finalize(tiny_model)
    assert len(model.base_model.encoder.layer) == 1 and method.describe()["layers"]["removed"] == [1]


def test_layer_prune_before_finetuning(sst2_small, tokenizer):
    model = load_pretrained("tiny-random", 2, 0)
    method = methods.build("layer_prune", 0.5, {"prune_before_finetuning": True})
    method.prepare(model, TrainingPlan(total_steps=1, seed=0))
    assert len(model.base_model.encoder.layer) == 1
    assert len(method.finalize(model).base_model.encoder.layer) == 1
    assert method.describe()["layers"]["removed"] == [1]
