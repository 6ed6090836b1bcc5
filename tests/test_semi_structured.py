"""2:4 semi-structured pruning: exactly 2 of every 4 inputs kept, budget 0.5, unreachable budgets reported."""

import pytest
import torch

import methods
from methods.semi_structured import nm_mask, parse_pattern
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.training.trainer import FinetuneBudget, train


def test_nm_mask_keeps_two_largest_of_every_four():
    scores = torch.tensor([[1.0, 4.0, 3.0, 2.0, 9.0, 0.0, 8.0, 7.0]])
    assert nm_mask(scores, 2, 4).tolist() == [[False, True, True, False, True, False, True, False]]


def test_nm_mask_refuses_sizes_not_multiple_of_m():
    with pytest.raises(ValueError, match="multiple of M=4"):
        nm_mask(torch.rand(3, 6), 2, 4)
    with pytest.raises(ValueError, match="unknown sparsity pattern"):
        parse_pattern("two-four")


def _assert_two_of_four(model):
    for name, module in prunable_linears(model).items():
        groups = (module.weight != 0).reshape(module.out_features, -1, 4).sum(-1)
        assert bool((groups == 2).all()), name


@pytest.mark.parametrize("budget", [0.5, 0.3])
def test_magnitude_2to4_through_trainer(budget, tiny_model, tokenizer, sst2_small):
    method = methods.build("magnitude_2to4", budget)
    train(
        tiny_model,
        sst2_small["train"],
        tokenizer,
        FinetuneBudget(steps=4, batch_size=8, learning_rate=1e-3),
        method,
        seed=0,
    )
    model = method.finalize(tiny_model)
    _assert_two_of_four(model)
    assert remaining_fraction(model) == pytest.approx(0.5)
    pattern = method.describe()["pattern"]
    assert pattern["reached"] == 0.5 and pattern["budget_reachable"] is (budget >= 0.5)
    assert method.remaining_before_finalize == pytest.approx(0.5)


def test_magnitude_2to4_keeps_largest(tiny_model):
    before = {n: m.weight.detach().clone() for n, m in prunable_linears(tiny_model).items()}
    methods.build("magnitude_2to4", 0.5).prepare(tiny_model, TrainingPlan(total_steps=1, seed=0))
    for name, module in prunable_linears(tiny_model).items():
        groups = before[name].abs().reshape(module.out_features, -1, 4)
        kept = (module.weight != 0).reshape(groups.shape)
        assert bool((groups.masked_fill(~kept, -1).amax(-1) >= 0).all())
        assert bool(
            (groups.masked_fill(kept, float("inf")).amin(-1) <= groups.masked_fill(~kept, float("inf")).amin(-1)).all()
        )
