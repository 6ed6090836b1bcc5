"""Wanda: hand-computed mask, real-token norms, exact budget, calibration record, one-shot variant."""

import pytest
import torch

import methods
from methods.wanda import rowwise_mask, wanda_scores
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.training.calibration import CalibrationSource, collect_layer_inputs, linears_by_layer
from prunebench.training.trainer import FinetuneBudget, _collate, train


def test_wanda_mask_matches_hand_computation():
    W = torch.tensor([[1.0, -2.0, 3.0, 0.5], [-4.0, 1.0, 0.1, 2.0]])
    X = torch.tensor([[3.0, 0.0, 1.0, 4.0], [4.0, 1.0, 0.0, 3.0]])  # 2 tokens x 4 features
    # ||X_j|| = [5, 1, 1, 5]; |W| * norms = [[5, 2, 3, 2.5], [20, 1, 0.1, 10]]; keep 2 per row
    scores = wanda_scores(W, X.pow(2).sum(0))
    assert torch.allclose(scores, torch.tensor([[5.0, 2.0, 3.0, 2.5], [20.0, 1.0, 0.1, 10.0]]))
    assert rowwise_mask(scores, 0.5).tolist() == [[True, False, True, False], [True, False, False, True]]


def test_rowwise_mask_exact_total_extra_to_best_next():
    scores = torch.tensor([[4.0, 3.0, 1.0], [9.0, 0.5, 0.2]])
    mask = rowwise_mask(scores, 0.5)  # 3 of 6: one per row, the extra to row 0 (next 3.0 > 0.5)
    assert mask.tolist() == [[True, True, False], [True, False, False]]


def _source(dataset, tokenizer, seed=0):
    return CalibrationSource(len(dataset), lambda idx: _collate(dataset, idx, tokenizer), seed)


def test_calibration_draws_are_seeded_and_distinct(sst2_small, tokenizer):
    a, b = _source(sst2_small["train"], tokenizer), _source(sst2_small["train"], tokenizer)
    assert a.indices(20) == b.indices(20) and len(set(a.indices(20))) == 20
    assert a.indices(20, draw=1) != a.indices(20)
    assert _source(sst2_small["train"], tokenizer, seed=1).indices(20) != a.indices(20)
    data = a(10, batch_size=4)
    assert len(data) == 3 and data.describe()["count"] == 10 and data.describe()["indices"] == sorted(data.indices)


def test_layer_inputs_exclude_padding(tiny_model, sst2_small, tokenizer):
    data = _source(sst2_small["train"], tokenizer)(8, batch_size=8)
    layer = linears_by_layer(prunable_linears(tiny_model))[0]
    counts = {}
    collect_layer_inputs(tiny_model, layer, data, lambda n, x: counts.__setitem__(n, counts.get(n, 0) + x.shape[0]))
    real = int(data.batches[0]["attention_mask"].sum())
    assert real < data.batches[0]["attention_mask"].numel(), "the batch should contain padding"
    assert set(counts) == set(layer) and all(c == real for c in counts.values())


def test_wanda_prepare_needs_calibration(tiny_model):
    with pytest.raises(ValueError, match="'wanda' needs calibration data"):
        methods.build("wanda", 0.5).prepare(tiny_model, TrainingPlan(total_steps=1, seed=0))


@pytest.mark.parametrize("name", ["wanda", "wanda_oneshot"])
def test_wanda_through_trainer_meets_budget(name, tiny_model, tokenizer, sst2_small):
    method = methods.build(name, 0.3, {"calibration_examples": 32})
    budget = FinetuneBudget(steps=4, batch_size=8, learning_rate=1e-3)
    prepared = {}
    original = method.prepare

    def spy(model, plan):
        original(model, plan)
        prepared.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    method.prepare = spy
    train(tiny_model, sst2_small["train"], tokenizer, budget, method, seed=0)
    model = method.finalize(tiny_model)
    assert remaining_fraction(model) == pytest.approx(0.3, abs=1e-3)
    for name_, module in prunable_linears(model).items():  # per-row share: every row keeps floor or ceil
        kept = (module.weight != 0).sum(1)
        assert int(kept.max() - kept.min()) <= 1, name_
    d = method.describe()
    assert d["calibration_data"]["count"] == 32 and d["remaining_before_finalize"] == pytest.approx(0.3, abs=1e-3)
    same = all(torch.equal(prepared[k], v) for k, v in model.state_dict().items())
    assert same is (name == "wanda_oneshot")


def test_wanda_2to4_pattern(tiny_model, tokenizer, sst2_small):
    method = methods.build("wanda", 0.5, {"calibration_examples": 16, "pattern": "2:4"})
    train(tiny_model, sst2_small["train"], tokenizer, FinetuneBudget(steps=2, batch_size=8), method, seed=0)
    model = method.finalize(tiny_model)
    for module in prunable_linears(model).values():
        assert bool(((module.weight != 0).reshape(module.out_features, -1, 4).sum(-1) == 2).all())
