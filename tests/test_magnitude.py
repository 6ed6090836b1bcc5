"""Magnitude and random pruning: exact budgets, the right weights removed, nested masks."""

import pytest
import torch

import methods
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import per_matrix_remaining, prunable_linears, remaining_fraction
from prunebench.structure.masks import topk_masks
from prunebench.training.trainer import FinetuneBudget, train


def test_global_topk_keeps_largest_scores():
    scores = {"a": torch.tensor([[1.0, 5.0], [3.0, 0.5]]), "b": torch.tensor([[4.0, 2.0]])}
    masks = topk_masks(scores, 0.5, "global")
    kept = sorted(float(v) for n in scores for v in scores[n][masks[n]])
    assert kept == [3.0, 4.0, 5.0]


def test_local_topk_is_per_matrix():
    scores = {"a": torch.tensor([[1.0, 5.0], [3.0, 0.5]]), "b": torch.tensor([[4.0, 2.0]])}
    masks = topk_masks(scores, 0.5, "local")
    assert masks["a"].tolist() == [[False, True], [True, False]]
    assert masks["b"].tolist() == [[True, False]]


def test_oneshot_magnitude_removes_smallest_weights(tiny_model):
    before = {n: m.weight.detach().abs().clone() for n, m in prunable_linears(tiny_model).items()}
    method = methods.build("magnitude_oneshot", 0.3)
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    assert remaining_fraction(tiny_model) == pytest.approx(0.3, abs=1e-4)
    everything = torch.cat([b.flatten() for b in before.values()])
    threshold = torch.kthvalue(everything, int(0.7 * everything.numel())).values
    for name, module in prunable_linears(tiny_model).items():
        kept = module.weight != 0
        assert before[name][kept].min() >= threshold - 1e-7
        assert before[name][~kept].max() <= threshold + 1e-7


@pytest.mark.parametrize("name", ["magnitude_global", "magnitude_local", "magnitude_oneshot", "random"])
def test_methods_meet_budget_after_training(name, tiny_model, tokenizer, sst2_small):
    method = methods.build(name, 0.2, {"update_every": 2} if name != "magnitude_oneshot" else {})
    budget = FinetuneBudget(steps=12, batch_size=8, learning_rate=1e-3, freeze_embeddings=False)
    train(tiny_model, sst2_small["train"], tokenizer, budget, method, seed=0)
    model = method.finalize(tiny_model)
    assert remaining_fraction(model) == pytest.approx(0.2, abs=0.005)
    per_matrix = per_matrix_remaining(model)
    if name in ("magnitude_local", "random"):
        assert all(v == pytest.approx(0.2, abs=0.01) for v in per_matrix.values())


def test_gradual_schedule_prunes_progressively(tiny_model, tokenizer, sst2_small):
    method = methods.build(
        "magnitude_global", 0.1, {"update_every": 1, "warmup_fraction": 0.0, "cooldown_fraction": 0.25}
    )
    seen = []
    original = method.after_step

    def spy(model, step):
        original(model, step)
        seen.append(remaining_fraction(model))

    method.after_step = spy
    budget = FinetuneBudget(steps=8, batch_size=8, learning_rate=1e-3, freeze_embeddings=False)
    train(tiny_model, sst2_small["train"], tokenizer, budget, method, seed=0)
    assert seen[0] < 1.0 and seen[0] > 0.1
    assert all(a >= b - 1e-9 for a, b in zip(seen, seen[1:]))
    assert seen[-1] == pytest.approx(0.1, abs=1e-3)


def test_random_masks_are_nested_and_seeded(tiny_model):
    a = methods.build("random", 0.5)
    a.prepare(tiny_model, TrainingPlan(total_steps=10, seed=3))
    a._update_masks(0.5)
    half = {n: m.clone() for n, m in a.masks.items()}
    a._update_masks(0.25)
    assert all(bool((a.masks[n] <= half[n]).all()) for n in half), "masks only shrink"


def test_unknown_method_and_setting_are_clear_errors():
    with pytest.raises(KeyError, match="unknown method 'nope'.*magnitude_global"):
        methods.build("nope", 0.5)
    with pytest.raises(ValueError, match="unknown setting"):
        methods.build("magnitude_global", 0.5, {"warmup": 3})


def test_registry_refuses_duplicate_names():
    with pytest.raises(ValueError, match="already registered"):
        methods.register("random")(type("Dup", (methods.PruningMethod,), {"finalize": lambda s, m: m}))
