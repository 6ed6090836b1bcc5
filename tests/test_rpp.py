"""Reweighted proximal pruning: the proximal step is exactly the formula, the sparsity floor
holds, the calibrated gamma reaches the budget, and trained models meet it exactly."""

import pytest
import torch
from safetensors.torch import load_file

import methods
from methods.base import TrainingPlan
from methods.rpp import proximal_step, reweight
from prunebench.budget import prunable_linears, remaining_fraction
from prunebench.checkpoints import WEIGHTS, load_model, save_model
from prunebench.modeling import load_pretrained
from prunebench.trainer import FinetuneBudget, train


def test_proximal_step_matches_hand_computation():
    w = torch.tensor([[0.5, -0.02], [0.001, -0.3]])
    alpha = reweight(w, eps=0.01)  # 1 / (|w| + 0.01)
    torch.testing.assert_close(alpha, torch.tensor([[1 / 0.51, 1 / 0.03], [1 / 0.011, 1 / 0.31]]))
    # eta * gamma = 1e-3: thresholds 0.00196, 0.0333, 0.0909, 0.00323
    out = proximal_step(w, 1e-3 * alpha)
    expected = torch.tensor([[0.5 - 1e-3 / 0.51, 0.0], [0.0, -(0.3 - 1e-3 / 0.31)]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)


def test_after_step_applies_the_formula_to_every_encoder_matrix(tiny_model):
    settings = {"gamma": 0.5, "eps": 1e-3, "step_size": 1e-4, "warmup_fraction": 0.0, "reweight_every": 1000}
    method = methods.build("rpp", 0.3, settings)
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    before = {n: m.weight.detach().clone() for n, m in prunable_linears(tiny_model).items()}
    method.after_step(tiny_model, 1)
    assert method.limited_steps == 0, "the floor must not bind in this test"
    for name, module in prunable_linears(tiny_model).items():
        w = before[name]
        threshold = 1e-4 * 0.5 / (w.abs() + 1e-3)
        expected = torch.sign(w) * torch.clamp(w.abs() - threshold, min=0)
        torch.testing.assert_close(module.weight.detach(), expected, rtol=0, atol=1e-8)
    assert remaining_fraction(tiny_model) < 0.95  # small weights did reach exactly zero


def test_floor_stops_a_strong_penalty_at_the_schedule(tiny_model):
    method = methods.build("rpp", 0.3, {"gamma": 1e3, "warmup_fraction": 0.0, "cooldown_fraction": 0.3})
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    method.after_step(tiny_model, 1)
    assert method.limited_steps == 1
    assert remaining_fraction(tiny_model) == pytest.approx(method.floor_at(1), abs=1e-4)


def test_no_proximal_step_during_warmup(tiny_model):
    method = methods.build("rpp", 0.3, {"gamma": 1e3, "warmup_fraction": 0.2})
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    before = [m.weight.detach().clone() for m in prunable_linears(tiny_model).values()]
    method.after_step(tiny_model, 2)
    assert all(torch.equal(b, m.weight) for b, m in zip(before, prunable_linears(tiny_model).values()))


def test_calibrated_gamma_reaches_the_budget_by_the_end_of_pruning(tiny_model):
    # Proximal steps alone (no loss gradient): the calibrated gamma should bring the model close
    # to the budget by the end of the pruning phase, never below the floor.
    method = methods.build("rpp", 0.3, {"reweight_every": 1, "warmup_fraction": 0.1, "cooldown_fraction": 0.3})
    method.prepare(tiny_model, TrainingPlan(total_steps=100, seed=0))
    assert method.gamma > 0
    for step in range(1, 71):
        method.after_step(tiny_model, step)
        assert remaining_fraction(tiny_model) >= method.floor_at(step) - 1e-4
    assert remaining_fraction(tiny_model) == pytest.approx(0.3, abs=0.03)


def test_budget_met_and_saved_model_is_plain(tiny_model, tokenizer, sst2_small, tmp_path):
    method = methods.build("rpp", 0.2, {"reweight_every": 2})
    budget = FinetuneBudget(steps=12, batch_size=8, learning_rate=1e-3, freeze_embeddings=False)
    train(tiny_model, sst2_small["train"], tokenizer, budget, method, seed=0)
    model = method.finalize(tiny_model)
    assert remaining_fraction(model) == pytest.approx(0.2, abs=0.005)
    info = method.describe()
    assert info["remaining_before_finalize"] < 1.0, "the proximal steps pruned nothing"
    save_model(model, tokenizer, tmp_path / "m")
    fresh = load_pretrained("tiny-random", num_labels=2, seed=1, label_names=("negative", "positive"))
    assert set(load_file(str(tmp_path / "m" / WEIGHTS))) <= set(fresh.state_dict())
    again = load_model(tmp_path / "m").eval()
    batch = tokenizer(["a fine film", "dull and long"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, model.eval()(**batch).logits, rtol=0, atol=1e-6)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="gamma"):
        methods.build("rpp", 0.5, {"gamma": -1.0})
    with pytest.raises(ValueError, match="reweight_every"):
        methods.build("rpp", 0.5, {"reweight_every": 0})
