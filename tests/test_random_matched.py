"""Random pruning with matched per-matrix proportions: reproduces the reference's allocation
with different (random) weights, and refuses a reference it cannot match."""

import pytest
import torch

import methods
from methods.random_matched import ReferenceRecordError
from prunebench.checkpoints.pretrained import load_pretrained
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import per_matrix_remaining, prunable_linears, remaining_fraction
from prunebench.training.trainer import FinetuneBudget, train


def _reference_record(budget: float = 0.3) -> tuple[dict, dict]:
    """A record of global magnitude pruning (uneven per-matrix fractions) and its masks."""
    model = load_pretrained("tiny-random", num_labels=2, seed=5, label_names=("negative", "positive"))
    with torch.no_grad():  # rescale matrices so one global threshold keeps very different shares
        for i, linear in enumerate(prunable_linears(model).values()):
            linear.weight.mul_(0.5 + 0.25 * i)
    method = methods.build("magnitude_oneshot", budget)
    method.prepare(model, TrainingPlan(total_steps=1, seed=0))
    model = method.finalize(model)
    kept = {f"{n}.weight": m.weight != 0 for n, m in prunable_linears(model).items()}
    record = {
        "method": "magnitude_oneshot",
        "budget": budget,
        "details": {"method": method.describe(), "per_matrix_remaining": per_matrix_remaining(model)},
    }
    return record, kept


def test_reproduces_reference_proportions(tiny_model, tokenizer, sst2_small):
    record, reference_kept = _reference_record(0.3)
    fractions = record["details"]["per_matrix_remaining"]
    assert max(fractions.values()) - min(fractions.values()) > 0.05, "reference allocation should be uneven"
    method = methods.build("random_matched", 0.3, {"reference": "magnitude_oneshot", "update_every": 2})
    method.use_reference(record)
    budget = FinetuneBudget(steps=12, batch_size=8, learning_rate=1e-3, freeze_embeddings=False)
    train(tiny_model, sst2_small["train"], tokenizer, budget, method, seed=0)
    model = method.finalize(tiny_model)
    got = per_matrix_remaining(model)
    for name, weight in ((f"{n}.weight", m.weight) for n, m in prunable_linears(model).items()):
        assert got[name] == pytest.approx(fractions[name], abs=1.0 / weight.numel() + 1e-9)
        # Random, not the reference's weights: overlap near chance (fraction kept), not 1.
        ours = weight != 0
        overlap = float((ours & reference_kept[name]).sum()) / max(1, int(ours.sum()))
        assert overlap < fractions[name] + 0.2
    assert remaining_fraction(model) == pytest.approx(0.3, abs=0.005)


def test_schedule_is_gradual_per_matrix(tiny_model):
    record, _ = _reference_record(0.3)
    method = methods.build(
        "random_matched",
        0.3,
        {"reference": "magnitude_oneshot", "warmup_fraction": 0.0, "cooldown_fraction": 0.2, "update_every": 1},
    )
    method.use_reference(record)
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    method.after_step(tiny_model, 2)
    mid = per_matrix_remaining(tiny_model)
    fractions = record["details"]["per_matrix_remaining"]
    assert all(fractions[n] < mid[n] < 1.0 for n in mid if fractions[n] < 0.99)
    for step in range(3, 11):
        method.after_step(tiny_model, step)
    end = per_matrix_remaining(tiny_model)
    assert all(end[n] == pytest.approx(fractions[n], abs=1e-3) for n in end)


def test_registry_declares_the_reference():
    cls = methods.get("random_matched")
    assert cls.needs_reference is True
    assert cls.make_settings({}).reference == "movement_soft"


def test_refuses_records_it_cannot_match(tiny_model):
    record, _ = _reference_record(0.3)
    with pytest.raises(ReferenceRecordError, match="'reference' setting is 'movement_soft'"):
        methods.build("random_matched", 0.3).use_reference(record)
    method = methods.build("random_matched", 0.5, {"reference": "magnitude_oneshot"})
    with pytest.raises(ReferenceRecordError, match="budget"):
        method.use_reference(record)
    broken = {**record, "details": {"method": record["details"]["method"]}}
    with pytest.raises(ReferenceRecordError, match="per_matrix_remaining"):
        methods.build("random_matched", 0.3, {"reference": "magnitude_oneshot"}).use_reference(broken)
    with pytest.raises(ReferenceRecordError, match="use_reference"):
        methods.build("random_matched", 0.3).prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    renamed = {**record, "details": {**record["details"], "per_matrix_remaining": {"x.weight": 0.5}}}
    method = methods.build("random_matched", 0.3, {"reference": "magnitude_oneshot"})
    method.use_reference(renamed)
    with pytest.raises(ReferenceRecordError, match="do not match"):
        method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
