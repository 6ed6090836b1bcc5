"""L0 head gates (Voita et al. 2019): head target from the budget, gating, control, removal, reload."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

import methods
from methods.head_l0 import head_weights, target_heads
from prunebench.checkpoints.store import load_model, save_model
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import count_encoder_weights, dense_encoder_size
from prunebench.structure.surgery import head_counts, mask_heads, recorded_ops


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def _logits(model):
    return model.eval()(**_batch()).logits


def test_head_target_follows_the_budget_and_stops_at_the_floor():
    minilm = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    assert head_weights(minilm) == 4 * 384 * 32
    dense = dense_encoder_size(minilm)
    # 0.9 remaining: remove ceil(0.1 dense / per_head) heads -> 72 - 22 = 50 heads kept
    k = target_heads(minilm, 0.9, 0.2)
    assert 1 - (72 - k) * head_weights(minilm) / dense <= 0.9 < 1 - (72 - k - 1) * head_weights(minilm) / dense
    assert k == 50
    # budgets below 2/3 cannot be reached by removing heads: the floor (20% of 72 -> 15 heads)
    assert target_heads(minilm, 0.5, 0.2) == 15
    assert target_heads(minilm, 0.1, 0.0) == 0
    assert target_heads(minilm, 1.0, 0.2) == 72


def test_gates_scale_heads_and_penalty_is_lambda_times_expected_l0(tiny_model):
    dense_logits = _logits(tiny_model)
    method = methods.build("head_l0", 0.9, {"control": "fixed", "lambda_init": 0.5})
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    with torch.no_grad():
        for g in method.gates:
            g.log_alpha.fill_(20.0)  # deterministic gate 1 everywhere ...
        method.gates[0].log_alpha[1] = -20.0  # ... except layer 0, head 1: gate 0
    gated = _logits(tiny_model)
    assert not torch.allclose(gated, dense_logits, atol=1e-4)
    for h in method.handles:
        h.remove()
    handles = mask_heads(tiny_model, {0: [1]})
    assert torch.allclose(gated, _logits(tiny_model), atol=1e-6)
    for h in handles:
        h.remove()
    expected = sum(float(g.prob_open().sum().detach()) for g in method.gates)
    assert float(method.penalty(tiny_model, 1).detach()) == pytest.approx(0.5 * expected)
    params = [p for grp in method.parameter_groups(tiny_model) for p in grp["params"]]
    assert len(params) == 2 and not any(p is q for p in params for q in tiny_model.parameters())


def test_lagrangian_raises_lambda_while_too_many_heads_are_open(tiny_model):
    method = methods.build("head_l0", 0.5, {"ramp_fraction": 0.01})
    method.prepare(tiny_model, TrainingPlan(total_steps=100, seed=0))
    opt = torch.optim.Adam([p for grp in method.parameter_groups(tiny_model) for p in grp["params"]], lr=0.1)
    start = float(method.expected_open().detach())
    lambdas = []
    for step in range(1, 41):
        opt.zero_grad()
        method.penalty(tiny_model, step).backward()
        opt.step()
        method.after_step(tiny_model, step)
        lambdas.append(method.lam)
    assert lambdas[0] > 0 and lambdas[10] > lambdas[0]
    assert float(method.expected_open().detach()) < start - 2  # the target is 2 of 8 heads


def test_finalize_removes_closed_heads_reports_fraction_and_reloads(tiny_model, tmp_path):
    method = methods.build("head_l0", 0.8)  # tiny: a head is 4*64*16 = 1/16 of 2*(4*64^2+2*64*128) weights
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    with torch.no_grad():
        for g in method.gates:
            g.log_alpha.copy_(torch.tensor([3.0, -20.0, 0.3, 2.0]))  # head 1 closed, others open
    model = method.finalize(tiny_model)
    # target: the most heads with remaining <= 0.8 -> 4 of 8; heads 1 are closed, then the open
    # heads with the lowest log_alpha (heads 2, 0.3) are closed too, in both layers
    assert method.k == 4
    assert head_counts(model) == [2, 2]
    assert recorded_ops(model)[-1] == {"op": "remove_heads", "args": {"heads": {"0": [1, 2], "1": [1, 2]}}}
    per_head = 4 * 64 * 16
    dense = 2 * (4 * 64 * 64 + 2 * 64 * 128)
    count = count_encoder_weights(model)
    assert count.remaining_fraction == pytest.approx(1 - 4 * per_head / dense)
    result = method.describe()["result"]
    assert result["reached_remaining"] == pytest.approx(count.remaining_fraction)
    assert result["kept_heads"] == 4 and result["budget_met"]
    save_model(model, None, tmp_path / "h")
    reloaded = load_model(tmp_path / "h")
    assert head_counts(reloaded) == [2, 2]
    assert torch.allclose(_logits(reloaded), _logits(model), atol=1e-6)


def test_untrimmed_finalize_equals_gated_eval_model(tiny_model):
    """Gate values strictly between 0 and 1 are folded into the output projection exactly."""
    method = methods.build("head_l0", 0.9)  # k = floor(8 - 0.1 x 16) = 6: the 6 open heads, none reopened
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    with torch.no_grad():
        for g in method.gates:
            g.log_alpha.copy_(torch.tensor([0.2, -20.0, -0.5, 1.0]))
    gated = _logits(tiny_model)
    model = method.finalize(tiny_model)
    assert head_counts(model) == [3, 3]
    assert torch.allclose(_logits(model), gated, atol=1e-5)


def test_budget_below_reach_is_reported_honestly(tiny_model):
    method = methods.build("head_l0", 0.1, {"min_head_fraction": 0.25})
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    model = method.finalize(tiny_model)
    result = method.describe()["result"]
    assert result["target_heads"] == 2 and result["kept_heads"] <= 2
    assert not result["budget_met"] and result["reached_remaining"] > 0.1
    assert result["reachable_min_remaining"] == pytest.approx(0.5)
    assert count_encoder_weights(model).remaining_fraction == pytest.approx(result["reached_remaining"])


def test_unknown_control_is_refused():
    with pytest.raises(ValueError, match="control"):
        methods.build("head_l0", 0.5, {"control": "magic"})


def test_heads_shut_by_the_deterministic_gate_are_reopened_up_to_k(tiny_model):
    """Expected open count 1.28 of k = 2 but every deterministic gate 0 -> still k heads kept."""
    method = methods.build("head_l0", 0.1)  # out of reach: k = ceil(0.2 x 8) = 2
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    with torch.no_grad():
        for g in method.gates:
            g.log_alpha.fill_(-2.45)
        method.gates[1].log_alpha[3] = -2.40  # the highest log_alpha ...
        method.gates[0].log_alpha[2] = -2.42  # ... and the next: these two are reopened
    assert float(method.expected_open().detach()) == pytest.approx(1.28, abs=0.02)
    assert all(float(g.eval_gate().detach().max()) == 0.0 for g in method.gates)
    gates = method.final_gates()
    assert [torch.nonzero(g).flatten().tolist() for g in gates] == [[2], [3]]
    # a reopened head carries its mean training gate, between 0 and P(open)
    assert 0.0 < float(gates[1][3]) < float(method.gates[1].prob_open().detach()[3])
    model = method.finalize(tiny_model)
    result = method.describe()["result"]
    assert method.k == 2 and result["kept_heads"] == 2 and head_counts(model) == [1, 1]
    assert result["deterministic_open_heads"] == 0
    assert method.describe()["remaining_before_finalize"] == pytest.approx(0.5)  # all 8 heads shut: 1 - 8/16


def test_reachable_budget_keeps_exactly_k_heads(tiny_model):
    method = methods.build("head_l0", 0.8)  # k = 4 of 8
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    with torch.no_grad():
        for g in method.gates:
            g.log_alpha.copy_(torch.tensor([3.0, -20.0, -5.0, -3.0]))  # 1 head open per layer
    model = method.finalize(tiny_model)
    assert head_counts(model) == [2, 2]  # heads 0 and 3 (the highest log_alpha of the shut ones)
    assert recorded_ops(model)[-1] == {"op": "remove_heads", "args": {"heads": {"0": [1, 2], "1": [1, 2]}}}
    assert method.describe()["result"]["deterministic_open_heads"] == 2
