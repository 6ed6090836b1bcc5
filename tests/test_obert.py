"""oBERT: Woodbury block inverse, saliency, OBS updates, gradual pruning through the trainer."""

import pytest
import torch

import methods
from methods.obert import block_fisher_inverse, obs_saliency, obs_update
from prunebench.structure.budget import remaining_fraction
from prunebench.training.trainer import FinetuneBudget, train


def test_woodbury_block_inverse_equals_linalg_inv():
    g = torch.randn(8, 23, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    damp, B = 1e-2, 5
    finv = block_fisher_inverse(g, B, damp)
    padded = torch.nn.functional.pad(g, (0, 2))  # 23 -> 25 = 5 blocks
    for b in range(5):
        gb = padded[:, b * B : (b + 1) * B]
        fisher = damp * torch.eye(B, dtype=torch.float64) + gb.t() @ gb / g.shape[0]
        assert torch.allclose(finv[b], torch.linalg.inv(fisher), rtol=1e-8, atol=1e-8)


def test_saliency_and_exact_update_match_obs_formulas():
    g = torch.randn(30, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = torch.randn(6, dtype=torch.float64)
    finv = block_fisher_inverse(g, 6, 1e-3)
    Finv = finv[0]
    assert torch.allclose(obs_saliency(w, finv), w**2 / (2 * torch.diag(Finv)))
    prune = torch.tensor([True, False, True, False, False, False])
    Q = prune.nonzero().flatten()
    E = torch.eye(6, dtype=torch.float64)[:, Q]
    expected = w - Finv @ E @ torch.linalg.solve(E.t() @ Finv @ E, E.t() @ w)
    assert torch.allclose(obs_update(w, finv, prune, exact=True), expected, atol=1e-8)
    summed = w - Finv @ (E @ (w[Q] / torch.diag(Finv)[Q]))
    summed[prune] = 0
    assert torch.allclose(obs_update(w, finv, prune, exact=False), summed, atol=1e-8)


def test_obs_update_lowers_quadratic_loss_vs_plain_zeroing():
    g = torch.randn(200, 50, generator=torch.Generator().manual_seed(2), dtype=torch.float64) @ torch.randn(
        50, 50, dtype=torch.float64
    )
    w = torch.randn(50, dtype=torch.float64)
    finv = block_fisher_inverse(g, 50, 1e-4)
    F = torch.linalg.inv(finv[0])
    prune = obs_saliency(w, finv) <= obs_saliency(w, finv).median()

    def loss(v):
        return float((v - w) @ F @ (v - w))

    assert loss(obs_update(w, finv, prune, exact=True)) < loss(w.masked_fill(prune, 0))


@pytest.mark.parametrize("update", ["summed", "exact"])
def test_obert_through_trainer_meets_budget(update, tiny_model, tokenizer, sst2_small):
    settings = {"num_grads": 4, "grad_batch_size": 4, "block_size": 4, "update_every": 2, "update": update}
    method = methods.build("obert", 0.2, settings)
    seen, modes, sampling, after = [], [], [], []  # modes: model.training at each forward pass of gradient sampling
    tiny_model.register_forward_pre_hook(lambda module, args: modes.append(module.training) if sampling else None)
    original_gradients = method.gradients

    def gradients(model):
        sampling.append(True)
        try:
            return original_gradients(model)
        finally:
            sampling.clear()
            after.append(model.training)

    method.gradients = gradients
    original = method.after_step
    method.after_step = lambda model, step: (original(model, step), seen.append(remaining_fraction(model)))
    train(
        tiny_model,
        sst2_small["train"],
        tokenizer,
        FinetuneBudget(steps=10, batch_size=8, learning_rate=1e-3),
        method,
        seed=0,
    )
    model = method.finalize(tiny_model)
    assert remaining_fraction(model) == pytest.approx(0.2, abs=1e-3)
    assert modes and not any(modes), "oBERT's gradients were sampled with dropout on"
    assert after and all(after), "the model was left in eval mode after sampling the gradients"
    assert seen[0] == 1.0 and 0.2 < seen[3] < 1.0 and all(a >= b - 1e-9 for a, b in zip(seen, seen[1:]))
    d = method.describe()
    assert len(d["pruning_steps"]) >= 2 and d["calibration_data"]["count"] == 16 * len(d["pruning_steps"])
    assert d["fisher"] == {"num_grads": 4, "block_size": 4, "rank_per_block": 4, "gradient_mode": "eval"}


def test_obert_defaults_give_a_full_rank_block_fisher():
    s = methods.build("obert", 0.5, {}).settings
    assert s.num_grads >= 2 * s.block_size


def test_obert_refuses_fewer_gradients_than_block_weights():
    from prunebench.method.base import TrainingPlan

    method = methods.build("obert", 0.5, {"num_grads": 32, "block_size": 50})
    with pytest.raises(ValueError, match=r"num_grads \(32\) < block_size \(50\).*rank 32 of 50"):
        method.prepare(torch.nn.Linear(2, 2), TrainingPlan(1, 0, calibration=lambda *a, **k: None))


def test_obert_bad_settings_are_named():
    with pytest.raises(ValueError, match="update one of"):
        from prunebench.method.base import TrainingPlan

        methods.build("obert", 0.5, {"update": "approx"}).prepare(
            torch.nn.Linear(2, 2), TrainingPlan(1, 0, calibration=lambda *a, **k: None)
        )
