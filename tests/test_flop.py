"""FLOP (factorized low-rank pruning): SVD start, Lagrangian control, exact budget, save/reload."""

from __future__ import annotations

import pytest
import torch

import methods
from methods.flop import flop_eval_mask
from prunebench.checkpoints.store import load_model, save_model
from prunebench.measure.flops import flops_per_example
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import count_encoder_weights, dense_encoder_size, prunable_linears
from prunebench.structure.factorized import FactorizedLinear, factorize_svd, factorized_layers, set_submodule
from prunebench.structure.hard_concrete import HardConcrete
from prunebench.structure.surgery import recorded_ops, registered_ops


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def _logits(model):
    return model.eval()(**_batch()).logits


def test_svd_factorization_reproduces_every_matrix_and_the_model(tiny_model):
    before = _logits(tiny_model)
    for name, linear in prunable_linears(tiny_model).items():
        fl = factorize_svd(linear)
        assert fl.rank == min(linear.in_features, linear.out_features)
        assert torch.allclose(fl.merged_weight(), linear.weight, atol=1e-4)
        x = torch.randn(5, linear.in_features)
        assert torch.allclose(fl(x), linear(x), atol=1e-4)
        set_submodule(tiny_model, name, fl)
    assert len(factorized_layers(tiny_model)) == 12
    assert torch.allclose(_logits(tiny_model), before, atol=1e-4)


def test_lagrangian_moves_expected_size_to_target_and_lambda_grows(tiny_model):
    method = methods.build("flop", 0.3, {"lagrangian_lr": 5.0, "gate_lr": 0.1, "ramp_fraction": 0.01})
    method.prepare(tiny_model, TrainingPlan(total_steps=100, seed=0))
    # the multipliers are plain floats owned by the method, never trainable model parameters
    assert isinstance(method.lambda1, float) and isinstance(method.lambda2, float)
    gate_params = method.gate_parameters()
    model_params = {id(p) for p in tiny_model.parameters()}
    assert gate_params and not any(id(p) in model_params for p in gate_params)
    assert method.parameter_groups(tiny_model) == []  # the gates have their own optimiser
    s_start = float(method.expected_size().detach())
    assert s_start > 0.3
    lambdas = []
    for step in range(1, 31):
        method.penalty(tiny_model, step).backward()
        method.after_step(tiny_model, step)  # steps the gates' own optimiser
        lambdas.append(method.lambda1)
    s_end = float(method.expected_size().detach())
    assert abs(s_end - 0.3) < abs(s_start - 0.3) - 0.2
    assert lambdas[0] > 0 and lambdas[5] > lambdas[0]  # s > t at the start: lambda1 increases
    assert method.lambda2 > 0


def test_finalize_meets_budget_exactly_and_reloads(tiny_model, tmp_path):
    dense_flops = flops_per_example(tiny_model, 32)["dense_kernels"]
    method = methods.build("flop", 0.4)
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    tiny_model.train()
    tiny_model(**_batch(), labels=torch.tensor([0, 1, 0])).loss.backward()  # gates are sampled in training
    model = method.finalize(tiny_model)
    layers = factorized_layers(model)
    assert layers, "every matrix kept too large a rank to be factorized"
    count = count_encoder_weights(model)
    dense = dense_encoder_size(model.config)
    assert count.dense_reference == dense == 2 * (4 * 64 * 64 + 2 * 64 * 128)
    # within one component (in + out <= 64 + 128 weights) under the budget
    assert 0.4 - (64 + 128) / dense < count.remaining_fraction <= 0.4
    result = method.describe()["result"]
    assert result["reached_remaining"] == pytest.approx(count.remaining_fraction)
    for name, fl in layers.items():
        assert (
            fl.rank == result["kept_rank"][name]
            and fl.rank * (fl.in_features + fl.out_features) < fl.in_features * fl.out_features
        )
    assert recorded_ops(model)[-1] == {"op": "factorize", "args": {"ranks": {n: fl.rank for n, fl in layers.items()}}}
    assert "factorize" in registered_ops()
    assert flops_per_example(model, 32)["dense_kernels"] < 0.6 * dense_flops
    save_model(model, None, tmp_path / "flop")
    reloaded = load_model(tmp_path / "flop")
    assert set(factorized_layers(reloaded)) == set(layers)
    assert torch.allclose(_logits(reloaded), _logits(model), atol=1e-6)
    assert count_encoder_weights(reloaded).remaining_fraction == pytest.approx(count.remaining_fraction)


def test_unconstrained_finalize_equals_gated_eval_model_and_handles_rank_zero(tiny_model, tmp_path):
    """Budget 1: nothing trimmed, so the compact model computes what the gated model computed."""
    method = methods.build("flop", 1.0, {"fill_to_budget": False})
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    names, gates = list(method.gates), dict(method.gates)
    with torch.no_grad():
        for gate in method.gates.values():  # a spread of gate values, well under the budget in total
            gate.log_alpha.copy_(torch.linspace(-6.0, 1.0, gate.n))
        method.gates[names[0]].log_alpha.fill_(-20.0)  # every component of one matrix closed: rank 0
        method.gates[names[1]].log_alpha.fill_(20.0)  # every component open: factors larger than W
    gated = _logits(tiny_model)
    model = method.finalize(tiny_model)
    assert sum(method.describe()["result"]["kept_rank"].values()) == sum(
        int((flop_eval_mask(g) > 0).sum()) for g in gates.values()
    )  # nothing trimmed
    assert torch.allclose(_logits(model), gated, atol=1e-5)
    assert model.get_submodule(names[0]).rank == 0
    assert isinstance(model.get_submodule(names[1]), torch.nn.Linear)  # stored as the dense product
    assert names[1] in method.describe()["result"]["stored_dense"]
    save_model(model, None, tmp_path / "m")
    assert torch.allclose(_logits(load_model(tmp_path / "m")), gated, atol=1e-5)


def test_overshoot_below_budget_is_filled_back_by_gate_value(tiny_model):
    method = methods.build("flop", 0.25)
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))
    with torch.no_grad():
        for gate in method.gates.values():  # FLOP's own rule keeps nothing ...
            gate.log_alpha.fill_(-12.0)
        best = method.gates["bert.encoder.layer.1.output.dense"]
        best.log_alpha[:5] = -11.0  # ... and these five components have the highest gate values
    model = method.finalize(tiny_model)
    result = method.describe()["result"]
    assert result["paper_rule_remaining"] == 0.0
    assert 0.25 - (64 + 128) / 65536 < result["reached_remaining"] <= 0.25
    assert result["kept_rank"]["bert.encoder.layer.1.output.dense"] >= 5
    assert count_encoder_weights(model).remaining_fraction == pytest.approx(result["reached_remaining"])


def test_flop_eval_mask_zeroes_the_expected_number():
    gate = HardConcrete(10, beta=1.0, log_alpha=torch.linspace(-6, 6, 10))
    mask = flop_eval_mask(gate)
    zeros = round(10 - float(gate.expected_l0().detach()))
    assert int((mask == 0).sum()) == zeros
    kept = mask > 0
    assert torch.allclose(mask[kept], torch.sigmoid(0.8 * gate.log_alpha.detach()[kept]))
    assert bool((mask[:zeros] == 0).all())  # the smallest log_alpha are the ones zeroed


def test_factorize_op_rejects_non_linear(tiny_model):
    from prunebench.structure.surgery import replay

    with pytest.raises(TypeError, match="nn.Linear"):
        replay(tiny_model, [{"op": "factorize", "args": {"ranks": {"bert.encoder.layer.0.attention": 3}}}])
    assert isinstance(FactorizedLinear(4, 3, 2), torch.nn.Module)


def test_gates_reach_the_target_although_the_task_lr_decays_to_zero(tiny_model, tokenizer, sst2_small):
    """The trainer's lr decays linearly to 0; the gates' own constant-lr optimiser still
    brings the expected size within ``target_tolerance`` of the budget before finalize."""
    from prunebench.training.trainer import FinetuneBudget, train

    budget = FinetuneBudget(steps=60, batch_size=8, learning_rate=1e-4, max_seq_len=64)
    method = methods.build("flop", 0.2)
    train(tiny_model, sst2_small["train"], tokenizer, budget, method, seed=0, log_every=1000)
    size = float(method.expected_size().detach())
    assert abs(size - 0.2) <= 0.05  # the stated tolerance (the default target_tolerance)
    assert method.settings.target_tolerance == 0.05
    method.finalize(tiny_model)
    result = method.describe()["result"]
    assert result["gates_reached_target"] and result["expected_size_before_finalize"] == pytest.approx(size)
    assert method.describe()["remaining_before_finalize"] == pytest.approx(result["paper_rule_stored_remaining"])
    assert result["paper_rule_stored_remaining"] <= result["paper_rule_remaining"] + 1e-9


def test_gates_that_miss_the_target_are_reported_loudly(tiny_model, caplog):
    method = methods.build("flop", 0.2)
    method.prepare(tiny_model, TrainingPlan(total_steps=10, seed=0))  # no training: s stays at s0 >> 0.2
    with caplog.at_level("WARNING", logger="prunebench.methods.flop"):
        method.finalize(tiny_model)
    result = method.describe()["result"]
    assert not result["gates_reached_target"] and result["target_gap"] > 0.05
    assert "finalize's truncation" in caplog.text


def test_flop_declares_its_calibration_and_flags_another_profile():
    method = methods.build("flop", 0.5)
    method.note_run({"model": "embedded", "task": "sst2", "steps": 800, "batch_size": 32})
    calibration = method.describe()["calibration"]
    assert calibration["calibrated_on"]["steps"] == 200
    assert calibration["matches"] is False and calibration["differs"] == ["steps"]
    assert method.calibration_check(dict(method.calibrated_on))["matches"] is True
