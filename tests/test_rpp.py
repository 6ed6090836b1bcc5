"""Reweighted proximal pruning: the proximal step is exactly the formula and scales with the lr,
the sparsity floor holds, the calibrated gamma reaches the budget (uncapped) or keeps survivors' size
(capped), the loss gradient can change the survivors, and trained models meet the budget exactly."""

import pytest
import torch
from safetensors.torch import load_file

import methods
from methods.rpp import proximal_step, reweight
from prunebench.checkpoints.pretrained import load_pretrained
from prunebench.checkpoints.store import WEIGHTS, load_model, save_model
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.training.trainer import FinetuneBudget, train


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
    method.current_lr = 1e-4
    method.after_step(tiny_model, 1)
    assert method.limited_steps == 1
    assert remaining_fraction(tiny_model) == pytest.approx(method.floor_at(1), abs=1e-4)


def test_no_proximal_step_during_warmup(tiny_model):
    method = methods.build("rpp", 0.3, {"gamma": 1e3, "warmup_fraction": 0.2})
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    before = [m.weight.detach().clone() for m in prunable_linears(tiny_model).values()]
    method.after_step(tiny_model, 2)
    assert all(torch.equal(b, m.weight) for b, m in zip(before, prunable_linears(tiny_model).values()))


def trainer_lr(step: int, total: int, peak: float = 1e-4, warmup_ratio: float = 0.1) -> float:
    """The lr the trainer uses in ``step`` (1-based): linear warm-up, then linear decay to 0."""
    warmup = int(warmup_ratio * total)
    s = step - 1
    return peak * ((s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))


def proximal_only(method, model, total: int, last: int) -> None:
    """Run ``after_step`` alone (no loss gradient) with the trainer's lr for steps 1..last."""
    for step in range(1, last + 1):
        method.current_lr = trainer_lr(step, total)
        method.after_step(model, step)
        assert remaining_fraction(model) >= method.floor_at(step) - 1e-4


def test_uncapped_calibration_reaches_the_budget_by_the_end_of_pruning(tiny_model):
    # min_survivor_scale 0: the proximal steps alone, with the lr-scaled step of a linearly decaying
    # lr, bring the model close to the budget by the end of the pruning phase, never below the floor.
    method = methods.build("rpp", 0.3, {"reweight_every": 1, "min_survivor_scale": 0.0})
    method.prepare(tiny_model, TrainingPlan(total_steps=100, seed=0))
    proximal_only(method, tiny_model, 100, 70)
    assert method.gamma > 0 and method.lr_integral == pytest.approx(sum(trainer_lr(s, 100) for s in range(11, 71)))
    assert remaining_fraction(tiny_model) == pytest.approx(0.3, abs=0.03)


def test_proximal_step_scales_with_the_lr_of_the_step(tiny_model):
    # Guo et al.: the proximal operator is taken with the optimiser's step size. Same gamma and
    # alpha, lr 10x smaller -> threshold 10x smaller.
    settings = {"gamma": 0.05, "warmup_fraction": 0.0, "reweight_every": 1000}
    shrink = []
    for lr in (1e-4, 1e-5):
        model = load_pretrained("tiny-random", num_labels=2, seed=0, label_names=("negative", "positive"))
        method = methods.build("rpp", 0.3, settings)
        method.prepare(model, TrainingPlan(total_steps=10, seed=0))
        w = next(iter(prunable_linears(model).values())).weight
        big = w.detach().abs() > 0.05  # shrunk, not zeroed, at both lrs
        before = w.detach().clone()
        method.current_lr = lr
        method.after_step(model, 1)
        shrink.append(float((before.abs() - w.detach().abs())[big].mean()))
    assert shrink[0] == pytest.approx(10 * shrink[1], rel=1e-3)


def test_kept_weights_are_not_shrunk_beyond_the_stated_factor(tiny_model):
    # Proximal steps only, through the whole budget and finalize: the median survivor keeps at
    # least min_survivor_scale (0.9) of its start size, minus a small tolerance for the discrete
    # steps; the proximal steps still do most of the pruning (remaining well below 1).
    start = {n: m.weight.detach().clone() for n, m in prunable_linears(tiny_model).items()}
    method = methods.build("rpp", 0.3, {"reweight_every": 1})
    method.prepare(tiny_model, TrainingPlan(total_steps=100, seed=0))
    proximal_only(method, tiny_model, 100, 100)
    model = method.finalize(tiny_model)
    ratios = torch.cat(
        [(m.weight.detach().abs() / start[n].abs())[m.weight != 0] for n, m in prunable_linears(model).items()]
    )
    assert float(ratios.median()) >= 0.88
    assert method.remaining_before_finalize < 0.65


def test_loss_gradient_changes_which_weights_survive(tiny_model):
    # Weights ranked just below the budget's cut-off are needed by the loss (its gradient pushes
    # them outward), weights just above are not (pushed to zero). AdamW on that loss with the
    # trainer's lr schedule, then RPP's proximal step: the needed ones survive, so the surviving
    # set is not the magnitude top-k of the start weights. Peak lr 5e-5: with a constant proximal
    # step (old code) 16% of the needed weights die and 16% of the unneeded ones survive.
    linears = prunable_linears(tiny_model)
    flat = torch.cat([m.weight.detach().abs().flatten() for m in linears.values()])
    order = flat.argsort(descending=True)
    keep, band = round(0.3 * flat.numel()), round(0.05 * flat.numel())
    needed, unneeded = order[keep : keep + band], order[keep - band : keep]  # ranks 30-35% / 25-30%
    sign = torch.cat([m.weight.detach().sign().flatten() for m in linears.values()])
    push = torch.zeros_like(flat)
    push[needed], push[unneeded] = -sign[needed], sign[unneeded]  # d loss / d w
    total = 100
    method = methods.build("rpp", 0.3, {})
    method.prepare(tiny_model, TrainingPlan(total_steps=total, seed=0))
    params = [m.weight for m in linears.values()]
    optimizer = torch.optim.AdamW(params, lr=1.0, weight_decay=0.0)
    for step in range(1, total + 1):
        lr = trainer_lr(step, total, peak=5e-5)
        for g in optimizer.param_groups:
            g["lr"] = lr
        loss = (torch.cat([p.flatten() for p in params]) * push).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.current_lr = lr
        method.after_step(tiny_model, step)
    method.finalize(tiny_model)
    alive = torch.cat([m.weight.detach().flatten() != 0 for m in linears.values()])
    assert float(alive[needed].float().mean()) > 0.95
    assert float(alive[unneeded].float().mean()) < 0.05
    assert float(alive[order[:keep]].float().mean()) < 0.95  # not the magnitude top-k


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
    with pytest.raises(ValueError, match="min_survivor_scale"):
        methods.build("rpp", 0.5, {"min_survivor_scale": 1.0})


def test_missing_lr_is_a_clear_error(tiny_model):
    method = methods.build("rpp", 0.3, {"warmup_fraction": 0.0})
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    with pytest.raises(RuntimeError, match="current_lr"):
        method.after_step(tiny_model, 1)
