"""Head-importance pruning (Michel et al. 2019) and its controls on the tiny model."""

import pytest
import torch

import methods
from methods.head_importance import head_weight_norms, heads_for_budget
from prunebench.checkpoints.store import load_model, save_model
from prunebench.method.base import TrainingPlan
from prunebench.structure import surgery
from prunebench.structure.budget import remaining_fraction
from prunebench.training.trainer import FinetuneBudget, train

# tiny model: 2 layers x 4 heads; a head holds 4*64*16 = 4096 of 65536 encoder weights (1/16)
DEAD = (1, 3)  # a head with zero value and output weights: it cannot matter
STRONG = (0, 2)  # a head whose value/output weights are scaled up: it dominates its layer


def _rig(model):
    """Make one head dead and one head dominant."""
    torch.manual_seed(3)
    with torch.no_grad():
        layers = model.base_model.encoder.layer
        l, h = DEAD  # zero value rows and output columns: no signal and no gradient ever reach it
        layers[l].attention.self.value.weight[h * 16 : (h + 1) * 16] = 0.0
        layers[l].attention.self.value.bias[h * 16 : (h + 1) * 16] = 0.0
        layers[l].attention.output.dense.weight[:, h * 16 : (h + 1) * 16] = 0.0
        l, h = STRONG
        layers[l].attention.self.value.weight[h * 16 : (h + 1) * 16] *= 8.0
        layers[l].attention.output.dense.weight[:, h * 16 : (h + 1) * 16] *= 8.0
    return model


def _budget(steps):
    return FinetuneBudget(
        steps=steps, batch_size=16, learning_rate=1e-4, max_seq_len=64, freeze_embeddings=True, warmup_ratio=0.0
    )


def test_heads_for_budget_from_above_and_floor(tiny_model):
    assert heads_for_budget(tiny_model, 0.75, 1) == (4, 0.75, True)
    assert heads_for_budget(tiny_model, 0.74, 1) == (4, 0.75, True)  # never below the budget
    n, reached, ok = heads_for_budget(tiny_model, 0.5, 1)  # heads alone cannot reach 0.5
    assert (n, reached, ok) == (6, 0.625, False)
    assert heads_for_budget(tiny_model, 0.5, 0) == (8, 0.5, True)
    assert heads_for_budget(tiny_model, 1.0, 1) == (0, 1.0, True)


def test_importance_ranks_dead_head_last_and_dominant_head_first(tiny_model, sst2_small, tokenizer):
    model = _rig(tiny_model)
    method = methods.build("head_importance", 1.0)  # nothing to prune: importance only
    train(model, sst2_small["train"], tokenizer, _budget(6), method, seed=0)
    scores = method.scores(model)
    assert method.batches_seen == 6
    assert float(scores[DEAD[0]][DEAD[1]]) == 0.0
    assert all(float(scores[l][h]) > 0 for l in range(2) for h in range(4) if (l, h) != DEAD)
    assert int(torch.argmax(scores[STRONG[0]])) == STRONG[1]
    # normalised per layer: each layer's importance vector has unit L2 norm
    for l in range(2):
        assert float(scores[l].norm()) == pytest.approx(1.0)


def test_pruning_removes_dead_head_first_and_keeps_dominant_head(tiny_model, sst2_small, tokenizer):
    model = _rig(tiny_model)
    method = methods.build("head_importance", 0.75, {"step_fraction": 0.25})  # 2 heads per pruning step
    train(model, sst2_small["train"], tokenizer, _budget(10), method, seed=0)
    # the dead head already has zeros, so 3 (dense-sized) heads fit the budget: steps of 2, then 1
    assert sorted(method.schedule.values()) == [2, 3]
    assert DEAD in [tuple(x) for x in method.history[0]["heads"]]
    removed = [tuple(x) for event in method.history for x in event["heads"]]
    assert STRONG not in removed and len(removed) == 3
    model = method.finalize(model)
    assert sum(surgery.head_counts(model)) == 5
    assert remaining_fraction(model) >= 0.75


def test_head_importance_prunes_to_budget_and_removes_heads(tiny_model, sst2_small, tokenizer, tmp_path):
    model = tiny_model
    method = methods.build("head_importance", 0.75, {"step_fraction": 0.25})
    train(model, sst2_small["train"], tokenizer, _budget(10), method, seed=0)
    assert sorted(method.schedule.values()) == [2, 4]
    assert method.pruned == 4
    model = method.finalize(model)
    assert sum(surgery.head_counts(model)) == 4
    assert remaining_fraction(model) == pytest.approx(0.75)
    assert method.describe()["heads"]["reached"] == pytest.approx(0.75)
    assert sum(len(v) for v in method.describe()["heads"]["removed"].values()) == 4
    # the model is plain again: no gate hooks left, and it round-trips through a checkpoint
    assert not any(layer.attention.output.dense._forward_pre_hooks for layer in model.base_model.encoder.layer)
    batch = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    save_model(model, tokenizer, tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "m")(**batch).logits, model.eval()(**batch).logits)


def test_unreachable_budget_prunes_to_the_minimum(tiny_model, sst2_small, tokenizer):
    method = methods.build("head_importance", 0.3, {"step_fraction": 0.5, "reestimate": False})
    train(tiny_model, sst2_small["train"], tokenizer, _budget(4), method, seed=0)
    model = method.finalize(tiny_model)
    assert surgery.head_counts(model) == [1, 1]
    assert remaining_fraction(model) == pytest.approx(0.625)
    assert method.describe()["heads"]["budget_reachable"] is False
    # with reestimate off, importance comes from the warm-up only
    assert method.accumulating is False


def test_schedule_spreads_or_bunches_pruning_steps(tiny_model):
    plan = TrainingPlan(total_steps=100, seed=0)
    gradual = methods.build("head_importance", 0.5, {"step_fraction": 0.125, "min_heads_per_layer": 0})
    gradual.prepare(tiny_model, plan)
    # 8 heads, one per step, from the end of warm-up (10%) to the start of cool-down (70%)
    assert sorted(gradual.schedule.values()) == list(range(1, 9))
    assert min(gradual.schedule) == 10 and max(gradual.schedule) == 70
    gaps = [b - a for a, b in zip(sorted(gradual.schedule), sorted(gradual.schedule)[1:])]
    assert set(gaps) <= {8, 9}
    for h in gradual.handles:
        h.remove()
    bunched = methods.build(
        "head_importance",
        0.5,
        {"step_fraction": 0.125, "min_heads_per_layer": 0, "finetune_between": False, "reestimate": False},
    )
    bunched.prepare(tiny_model, plan)
    assert bunched.schedule == {10: 8}


def test_reestimate_without_finetuning_is_refused():
    with pytest.raises(ValueError, match="reestimate"):
        methods.build("head_importance", 0.5, {"finetune_between": False})


def test_magnitude_control_prunes_zero_norm_head_first(tiny_model, sst2_small, tokenizer):
    model = tiny_model
    with torch.no_grad():
        att = model.base_model.encoder.layer[1].attention
        for lin in (att.self.query, att.self.key, att.self.value):
            lin.weight[16:32] = 0.0
        att.output.dense.weight[:, 16:32] = 0.0
    assert float(head_weight_norms(model.base_model.encoder.layer[1])[1]) == 0.0
    method = methods.build("head_magnitude", 1 - 2 / 16)  # one more (dense) head than the zeroed one
    train(model, sst2_small["train"], tokenizer, _budget(3), method, seed=0)
    assert method.history[0]["heads"] == [[1, 1]]
    model = method.finalize(model)
    assert surgery.head_counts(model) == [4, 3]


def test_random_control_is_seeded(tiny_model):
    def order(seed):
        m = methods.build("head_random", 0.5, {"min_heads_per_layer": 0})
        m.prepare(tiny_model, TrainingPlan(total_steps=10, seed=seed))
        for h in m.handles:
            h.remove()
        return [s.tolist() for s in m.scores(tiny_model).values()]

    assert order(0) == order(0)
    assert order(0) != order(1)


def _gate_gradients_one_by_one(model, batch):
    """d loss_b / d gate per example b, by a separate backward per example (the reference)."""
    from prunebench.structure.surgery import head_counts, head_gate_hooks

    grads = []
    for b in range(batch["input_ids"].shape[0]):
        gates = {l: torch.ones(n, requires_grad=True) for l, n in enumerate(head_counts(model))}
        handles = head_gate_hooks(model, gates)
        model(**{k: v[b : b + 1] for k, v in batch.items()}).loss.backward()
        for h in handles:
            h.remove()
        grads.append({l: g.grad.detach().clone() for l, g in gates.items()})
    model.zero_grad(set_to_none=True)
    return grads


def _importance_of_one_batch(model, batch, settings):
    method = methods.build("head_importance", 0.9, settings)
    method.prepare(model, TrainingPlan(total_steps=100, seed=0))
    model(**batch).loss.backward()  # the batch-mean loss, as the trainer's
    method.after_step(model, 1)
    model.zero_grad(set_to_none=True)
    return method.importance


def test_per_example_importance_is_the_mean_of_per_example_abs_gradients(tiny_model, tokenizer):
    # Michel et al.'s estimator takes |dL/dgate| per example: with abs_over 'example' one backward
    # of the batch-mean loss must give (1/B) sum_b |d loss_b / d gate|.
    batch = tokenizer(
        ["a fine and moving film", "dull , long and empty", "it works"], padding=True, return_tensors="pt"
    )
    batch["labels"] = torch.tensor([1, 0, 1])
    per_example = _gate_gradients_one_by_one(tiny_model, batch)
    importance = _importance_of_one_batch(tiny_model, batch, {"abs_over": "example"})
    for l, imp in importance.items():
        expected = sum(g[l].abs() for g in per_example) / len(per_example)
        torch.testing.assert_close(imp, expected, rtol=1e-4, atol=1e-7)


def test_signs_do_not_cancel_inside_a_batch(tiny_model, tokenizer):
    # The same sentence twice with opposite labels: the two examples' gate gradients nearly cancel
    # (the tiny model predicts ~0.5), so a per-batch |sum| is tiny while the per-token default
    # (and per-example) importance is not.
    batch = tokenizer(["a fine and moving film"] * 2, return_tensors="pt")
    batch["labels"] = torch.tensor([0, 1])
    per_batch = _importance_of_one_batch(tiny_model, batch, {"abs_over": "batch"})
    default = _importance_of_one_batch(tiny_model, batch, {})
    per_example = _gate_gradients_one_by_one(tiny_model, batch)
    for l in per_batch:
        reference = (per_example[0][l] + per_example[1][l]).abs() / 2
        torch.testing.assert_close(per_batch[l], reference, rtol=1e-4, atol=1e-8)
        assert bool((default[l] > 5 * per_batch[l]).all()), (l, default[l], per_batch[l])
