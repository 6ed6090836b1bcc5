"""SparseGPT: OBS reconstruction beats magnitude pruning; exact per-layer budget; runs through the trainer."""

import pytest
import torch

import methods
from methods.sparsegpt import sparsegpt_prune
from prunebench.structure.budget import per_matrix_remaining, remaining_fraction
from prunebench.training.trainer import FinetuneBudget, train


def _correlated_inputs(n=2000, d=64, seed=0):
    """Inputs driven by 8 shared latent factors plus small independent noise: strongly correlated features."""
    g = torch.Generator().manual_seed(seed)
    factors = torch.randn(8, d, generator=g)
    return torch.randn(n, 8, generator=g) @ factors + 0.3 * torch.randn(n, d, generator=g)


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_reconstructs_better_than_magnitude(nm):
    X = _correlated_inputs()
    W = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    H = 2 * X.t() @ X / X.shape[0]
    new, keep = sparsegpt_prune(W, H, 0.5, block_size=16, nm=nm)
    assert int(keep.sum()) == W.numel() // 2 and bool((new[~keep] == 0).all())
    if nm is None:
        magnitude = W * (W.abs() >= W.abs().flatten().kthvalue(W.numel() // 2 + 1).values)
    else:
        groups = W.abs().reshape(32, -1, 4)
        magnitude = W * torch.zeros_like(groups, dtype=torch.bool).scatter_(
            2, groups.topk(2, dim=2).indices, True
        ).reshape(W.shape)
    err_sparsegpt = torch.linalg.norm(X @ W.t() - X @ new.t())
    err_magnitude = torch.linalg.norm(X @ W.t() - X @ magnitude.t())
    err_same_mask_no_update = torch.linalg.norm(X @ W.t() - X @ (W * keep).t())
    assert err_sparsegpt < 0.8 * err_magnitude
    assert err_sparsegpt < 0.8 * err_same_mask_no_update  # the OBS update, not only the mask, helps


def test_sparsegpt_block_budget_is_exact_and_shape_checked():
    X = _correlated_inputs(d=40)
    _, keep = sparsegpt_prune(torch.randn(7, 40), 2 * X.t() @ X / len(X), 0.3, block_size=16)
    assert int(keep.sum()) == round(0.3 * 7 * 40)
    with pytest.raises(ValueError, match="does not match a weight with 40 input features"):
        sparsegpt_prune(torch.randn(7, 40), torch.eye(8), 0.3)


def test_sparsegpt_through_trainer_meets_budget(tiny_model, tokenizer, sst2_small):
    method = methods.build("sparsegpt", 0.2, {"calibration_examples": 32})
    train(
        tiny_model,
        sst2_small["train"],
        tokenizer,
        FinetuneBudget(steps=4, batch_size=8, learning_rate=1e-3),
        method,
        seed=0,
    )
    model = method.finalize(tiny_model)
    assert remaining_fraction(model) == pytest.approx(0.2, abs=1e-3)
    assert all(v == pytest.approx(0.2, abs=0.01) for v in per_matrix_remaining(model).values())
    assert method.describe()["calibration_data"]["count"] == 32
