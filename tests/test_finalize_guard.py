"""The finalize guard (``prunebench.method.base``): every method whose ``finalize`` can prune reports the
remaining fraction its own rule reached before the final enforcement of the budget, and a
method with calibrated constants says whether the run matches its calibration."""

from __future__ import annotations

import pytest

import methods
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import per_matrix_remaining, remaining_fraction
from prunebench.training.trainer import FinetuneBudget, train
from tests.conftest import SMALL_SETTINGS

#: Registered methods whose finalize prunes nothing by design (int8 quantization changes the
#: storage, not the number of weights; so do the rows that quantize a pruned checkpoint); every other
#: registered method must report the guard.
NOT_PRUNING = {"int8_dynamic"} | {n for n in methods.available() if methods.get(n).starts_from == "pruned"}
BUDGET = 0.5


def pruning_methods() -> list[str]:
    return [name for name in methods.available() if name not in NOT_PRUNING]


def _reference_record(model) -> dict:
    """A plausible element-wise reference (uneven per-matrix fractions) for random_matched."""
    fractions = per_matrix_remaining(model)
    names = sorted(fractions)
    return {
        "method": "movement_soft",
        "budget": BUDGET,
        "details": {
            "method": {"granularity": "element"},
            "per_matrix_remaining": {n: (0.3 if i % 2 else 0.7) for i, n in enumerate(names)},
        },
    }


@pytest.mark.parametrize("name", pruning_methods())
def test_every_pruning_method_reports_remaining_before_finalize(name, tiny_model, tokenizer, sst2_small):
    method = methods.build(name, BUDGET, SMALL_SETTINGS.get(name))  # Q-BERT's Hessian on a few examples
    if method.needs_reference:
        method.use_reference(_reference_record(tiny_model))
    method.note_run({"model": "tiny-random", "task": "sst2", "steps": 4, "batch_size": 8})
    budget = FinetuneBudget(steps=4, batch_size=8, learning_rate=1e-4, max_seq_len=64)
    train(tiny_model, sst2_small["train"], tokenizer, budget, method, seed=0, log_every=1000)
    model = method.finalize(tiny_model)
    info = method.describe()
    assert "remaining_before_finalize" in info, f"{name}: describe() lacks remaining_before_finalize"
    before = info["remaining_before_finalize"]
    assert isinstance(before, float) and 0.0 <= before <= 1.0 + 1e-9, f"{name}: {before!r}"
    # the rule cannot have kept less than what finalize left, except where finalize fills back up
    if name not in ("flop", "head_l0"):
        assert remaining_fraction(model) <= before + 1e-6, name
    if method.calibrated_on is None:
        assert info["calibration"] is None
    else:
        assert info["calibration"]["matches"] is False  # a tiny 4-step run is not any calibration profile


@pytest.mark.parametrize("name", pruning_methods())
def test_every_pruning_method_says_what_finalize_enforces(name):
    cls = methods.get(name)
    assert isinstance(cls.finalize_enforcement, str) and cls.finalize_enforcement.strip(), (
        f"{name}: set the class attribute finalize_enforcement (prunebench.method.base)"
    )
    assert methods.build(name, BUDGET).describe()["finalize_enforcement"] == cls.finalize_enforcement


def test_truncation_by_finalize_is_visible(tiny_model):
    """Without training, gradual magnitude pruning's schedule prunes nothing: finalize does it all."""
    method = methods.build("magnitude_global", 0.3)
    method.prepare(tiny_model, TrainingPlan(total_steps=100, seed=0))
    model = method.finalize(tiny_model)
    assert method.describe()["remaining_before_finalize"] == pytest.approx(1.0)
    assert remaining_fraction(model) == pytest.approx(0.3, abs=1e-3)


def test_rule_that_is_the_final_selection_reports_what_it_chose(tiny_model):
    method = methods.build("layer_prune", 0.5)  # keep 1 of the 2 tiny layers
    method.prepare(tiny_model, TrainingPlan(total_steps=1, seed=0))
    model = method.finalize(tiny_model)
    assert method.describe()["remaining_before_finalize"] == pytest.approx(remaining_fraction(model))


def test_describe_before_finalize_has_no_guard_value_and_calibration_needs_a_run():
    method = methods.build("magnitude_global", 0.5)
    info = method.describe()
    assert "remaining_before_finalize" not in info and "calibration" not in info
    assert method.calibration_check({"steps": 200}) is None  # no calibrated constants


def test_calibration_check_lists_the_keys_that_differ():
    method = methods.build("flop", 0.5)
    run = dict(method.calibrated_on, task="mnli", batch_size=16)
    check = method.calibration_check(run)
    assert check["matches"] is False and check["differs"] == ["batch_size", "task"]
    assert check["run"] == run
    with pytest.raises(TypeError, match="note_run"):
        method.note_run([("steps", 200)])
