"""Hard-concrete gates (Louizos et al. 2018): sample range, exact 0/1, expected L0, eval gate."""

from __future__ import annotations

import math

import pytest
import torch

from prunebench.structure.hard_concrete import HardConcrete, logit


def test_samples_lie_in_unit_interval_with_exact_zeros_and_ones():
    torch.manual_seed(0)
    gate = HardConcrete(20000, beta=2 / 3, l=-0.1, r=1.1, init_keep=0.5)
    z = gate.sample().detach()
    assert z.shape == (20000,)
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0
    assert int((z == 0).sum()) > 100 and int((z == 1).sum()) > 100
    assert int(((z > 0) & (z < 1)).sum()) > 100


def test_expected_l0_matches_closed_formula():
    log_alpha = torch.tensor([-3.0, -0.5, 0.0, 1.2, 4.0])
    gate = HardConcrete(5, beta=0.33, l=-0.1, r=1.1, log_alpha=log_alpha)
    expected = sum(1.0 / (1.0 + math.exp(-(a - 0.33 * math.log(0.1 / 1.1)))) for a in log_alpha.tolist())
    assert float(gate.expected_l0().detach()) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("beta", [1.0, 0.33])
def test_prob_open_matches_monte_carlo(beta):
    torch.manual_seed(1)
    values = torch.tensor([-2.0, 0.0, 1.5])
    samples = 20000
    gate = HardConcrete(values.numel() * samples, beta=beta, log_alpha=values.repeat_interleave(samples))
    z = gate.sample().detach().view(values.numel(), samples)
    mc = (z > 0).float().mean(dim=1)
    closed = HardConcrete(3, beta=beta, log_alpha=values).prob_open().detach()
    assert torch.allclose(mc, closed, atol=0.015), (mc, closed)


def test_eval_gate_is_deterministic_stretched_sigmoid():
    gate = HardConcrete(4, beta=1.0, l=-0.1, r=1.1, log_alpha=torch.tensor([-10.0, 0.0, 0.5, 10.0]))
    g = gate.eval_gate().detach()
    assert g[0] == 0.0 and g[3] == 1.0
    assert float(g[1]) == pytest.approx(0.5)
    assert float(g[2]) == pytest.approx(1.2 / (1 + math.exp(-0.5)) - 0.1)
    gate.eval()
    assert torch.equal(gate(), gate.eval_gate())


def test_sample_is_differentiable_in_log_alpha():
    torch.manual_seed(2)
    gate = HardConcrete(1000, beta=1.0, init_keep=0.5)
    gate.sample().sum().backward()
    assert gate.log_alpha.grad is not None and float(gate.log_alpha.grad.abs().sum()) > 0


def test_initial_keep_probability_and_bad_arguments():
    gate = HardConcrete(3, init_keep=0.9, init_std=0.0)
    assert torch.allclose(gate.log_alpha.detach(), torch.full((3,), logit(0.9)))
    with pytest.raises(ValueError, match="stretch"):
        HardConcrete(3, l=0.1, r=1.1)
    with pytest.raises(ValueError, match="keep probability"):
        HardConcrete(3, init_keep=1.0)
