"""Movement pruning (hard and soft): straight-through score gradients, masks driven by the
scores, the soft penalty moving the remaining fraction, exact budgets and plain saved models."""

import pytest
import torch
from safetensors.torch import load_file

import methods
from prunebench.checkpoints.pretrained import load_pretrained
from prunebench.checkpoints.store import WEIGHTS, load_model, save_model
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.training.trainer import FinetuneBudget, train

BUDGET = FinetuneBudget(steps=12, batch_size=8, learning_rate=1e-3, freeze_embeddings=False)


def _batch(tokenizer):
    batch = tokenizer(["a fine film", "dull and long", "it is what it is"], padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor([1, 0, 1])
    return batch


def test_scores_get_the_straight_through_gradient(tiny_model, tokenizer):
    method = methods.build("movement_hard", 0.5)
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    tiny_model.train()
    tiny_model(**_batch(tokenizer)).loss.backward()
    for name, module in prunable_linears(tiny_model).items():
        weight = module.parametrizations.weight.original
        scores = method.scores[name]
        assert scores.grad is not None and scores.grad.abs().sum() > 0
        # Mask is all ones during warm-up, so dL/dW' = dL/dW and dL/dS = dL/dW' * W.
        torch.testing.assert_close(scores.grad, weight.grad * weight.detach(), rtol=1e-5, atol=1e-8)


def test_hard_mask_follows_the_moving_scores(tiny_model, tokenizer, sst2_small):
    method = methods.build("movement_hard", 0.3, {"warmup_fraction": 0.25, "cooldown_fraction": 0.5})
    seen = []
    original = method.after_step

    def spy(model, step):
        original(model, step)
        seen.append({n: p.mask.clone() for n, p in method.parametrizations.items()})

    method.after_step = spy
    budget = FinetuneBudget(steps=8, batch_size=8, learning_rate=1e-3, freeze_embeddings=False)
    train(tiny_model, sst2_small["train"], tokenizer, budget, method, seed=0)
    # Cool-down (steps 4..8): the kept fraction is fixed at 0.3, yet the mask changes with the scores.
    assert method.current_remaining() == pytest.approx(0.3, abs=1e-3)
    changed = [any(not torch.equal(a[n], b[n]) for n in a) for a, b in zip(seen[4:], seen[5:])]
    assert any(changed), "scores kept moving but the top-k mask never changed"
    for name, mask in seen[-1].items():  # the mask is the top-k of the scores
        kept, dropped = method.scores[name][mask], method.scores[name][~mask]
        assert kept.min() >= dropped.max()


def test_soft_penalty_value_follows_the_schedule(tiny_model):
    method = methods.build("movement_soft", 0.3, {"final_lambda": 400.0, "final_threshold": 0.1})
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    assert method.penalty(tiny_model, 1) is None  # tau = 0 during warm-up: no penalty
    # Cool-down: lambda = final_lambda, and sigmoid(0) = 0.5 for every score.
    assert float(method.penalty(tiny_model, 10).detach()) == pytest.approx(400.0 * 0.5)
    mid = 5
    expected = 400.0 * method.threshold(mid) / 0.1 * 0.5
    assert float(method.penalty(tiny_model, mid).detach()) == pytest.approx(expected)


def _soft_remaining(lam, tokenizer, sst2_small):
    model = load_pretrained("tiny-random", num_labels=2, seed=0, label_names=("negative", "positive"))
    method = methods.build(
        "movement_soft",
        0.3,
        {"final_lambda": lam, "score_learning_rate": 0.5, "warmup_fraction": 0.0, "cooldown_fraction": 0.25},
    )
    train(model, sst2_small["train"], tokenizer, BUDGET, method, seed=0)
    return method.current_remaining()


def test_larger_lambda_leaves_fewer_weights_above_threshold(tokenizer, sst2_small):
    # Same seed and data; only the penalty differs. (Tiny model: lambda 0 keeps ~97%, lambda 1 ~10%.)
    without, with_penalty = _soft_remaining(0.0, tokenizer, sst2_small), _soft_remaining(1.0, tokenizer, sst2_small)
    assert with_penalty < 0.5 * without


@pytest.mark.parametrize("name", ["movement_hard", "movement_soft", "movement_hard_pretrained"])
def test_budget_met_and_saved_model_is_plain(name, tiny_model, tokenizer, sst2_small, tmp_path):
    method = methods.build(name, 0.2)
    train(tiny_model, sst2_small["train"], tokenizer, BUDGET, method, seed=0)
    model = method.finalize(tiny_model)
    assert remaining_fraction(model) == pytest.approx(0.2, abs=0.005)
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    save_model(model, tokenizer, tmp_path / "m")
    fresh = load_pretrained("tiny-random", num_labels=2, seed=1, label_names=("negative", "positive"))
    assert set(load_file(str(tmp_path / "m" / WEIGHTS))) <= set(fresh.state_dict())
    again = load_model(tmp_path / "m").eval()
    batch = {k: v for k, v in _batch(tokenizer).items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, model.eval()(**batch).logits, rtol=0, atol=1e-6)
    info = method.describe()
    assert 0.0 < info["remaining_before_finalize"] <= 1.0
    assert "mask_remaining_before_finalize" not in info, "the guard's key is remaining_before_finalize (base describe)"
    assert info["finalize_enforcement"]
    if name.startswith("movement_hard"):  # the cool-down holds the budget: finalize prunes nothing extra
        assert info["remaining_before_finalize"] == pytest.approx(0.2, abs=0.005)


def test_soft_declares_its_calibration_profile():
    from methods.movement import HardMovement, SoftMovement

    assert SoftMovement.calibrated_on == {"model": "embedded", "task": "sst2", "steps": 200, "batch_size": 32}
    assert HardMovement.calibrated_on is None, "hard movement keeps the paper's constants: nothing calibrated"
    method = methods.build("movement_soft", 0.1)
    assert method.calibration_check({"model": "embedded", "task": "sst2", "steps": 200, "batch_size": 32})["matches"]
    moved = method.calibration_check({"model": "embedded", "task": "sst2", "steps": 800, "batch_size": 32})
    assert not moved["matches"] and moved["differs"] == ["steps"]


def test_paper_setting_rows_start_from_the_pretrained_weights_with_the_same_pruning():
    """The _pretrained rows are the paper's setting: same settings and masks, another starting point; soft's
    calibration (measured from the dense checkpoint) is flagged for them."""
    from methods.movement import HardMovement, SoftMovement

    for name, parent in (("movement_hard_pretrained", HardMovement), ("movement_soft_pretrained", SoftMovement)):
        cls = methods.get(name)
        assert issubclass(cls, parent) and cls.starts_from == "pretrained" and parent.starts_from == "dense"
        assert cls.Settings is parent.Settings
    run = {"model": "embedded", "task": "sst2", "steps": 200, "batch_size": 32}
    assert methods.build("movement_soft", 0.1).calibration_check({**run, "starts_from": "dense"})["matches"]
    check = methods.build("movement_soft_pretrained", 0.1).calibration_check({**run, "starts_from": "pretrained"})
    assert not check["matches"] and check["differs"] == ["starts_from"]


def test_paper_setting_rows_need_no_dense_checkpoint(tmp_path):
    """The workflow plans the pretrained rows' prune jobs without the dense model as input."""
    from tests.conftest import snakemake_dry_run

    out = snakemake_dry_run(
        "--cores", "2", "--printshellcmds", "--config", "profile=movement_paper", f"results_dir={tmp_path}"
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    prunes = [line for line in text.splitlines() if "python -m prunebench prune" in line]
    assert len(prunes) == 4 and all("--dense-dir" not in line for line in prunes), prunes
    assert {"--method movement_hard_pretrained", "--method movement_soft_pretrained"} <= {
        f"--method {w}" for line in prunes for w in line.split("--method ")[1].split()[:1]
    }


def test_score_group_has_its_own_lr_and_no_weight_decay(tiny_model):
    method = methods.build("movement_hard", 0.5)
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    (group,) = method.parameter_groups(tiny_model)
    assert group["lr"] == 1e-2 and group["weight_decay"] == 0.0
    assert len(group["params"]) == len(prunable_linears(tiny_model)) == 12
    model_params = {id(p) for p in tiny_model.parameters()}
    assert not any(id(p) in model_params for p in group["params"]), "scores must not be model parameters"


def test_settings_are_checked():
    with pytest.raises(ValueError, match="scope"):
        methods.build("movement_hard", 0.5, {"scope": "row"})
    with pytest.raises(ValueError, match="threshold"):
        methods.build("movement_soft", 0.5, {"final_threshold": 1.5})


def test_calibrated_lambda_interpolates_the_measured_points():
    from methods.movement import LAMBDA_CALIBRATION, calibrated_lambda

    for lam, remaining in LAMBDA_CALIBRATION:
        assert calibrated_lambda(remaining) == pytest.approx(lam)
    values = [calibrated_lambda(r) for r in (0.9, 0.5, 0.3, 0.1, 0.03)]
    assert values == sorted(values), "a smaller budget needs a larger penalty"
    method = methods.build("movement_soft", 0.3)
    assert method.final_lambda == pytest.approx(calibrated_lambda(0.3))
    assert methods.build("movement_soft", 0.3, {"final_lambda": 400.0}).final_lambda == 400.0
