"""Torch-Pruning (DepGraph, MagnitudeImportance) as a peer method row, on the tiny model.

Tiny model: 2 layers x 4 heads of 16, hidden 64, FFN 128; a head holds 4*64*16 = 4096 of the
65536 encoder weights, an FFN channel 2*64 = 128.
"""

import json

import pytest
import torch

pytest.importorskip("torch_pruning")

import methods  # noqa: E402
from methods.torch_pruning_peer import TorchPruningError, plan_pruning, run_torch_pruning  # noqa: E402
from prunebench.checkpoints.store import load_model, save_model  # noqa: E402
from prunebench.method.base import TrainingPlan  # noqa: E402
from prunebench.structure import surgery  # noqa: E402
from prunebench.structure.budget import count_encoder_weights, remaining_fraction  # noqa: E402
from prunebench.training.trainer import FinetuneBudget, train  # noqa: E402
from tests.conftest import logits, sample_batch  # noqa: E402

PER_HEAD, PER_UNIT, DENSE = 4096, 128, 65536


_batch, _logits = sample_batch, logits


def _prune(model, target, settings=None):
    method = methods.build("torch_pruning", target, settings)
    method.prepare(model, TrainingPlan(total_steps=1, seed=0))
    return method.finalize(model), method


def _shapes(model):
    layers = surgery.encoder_layers(model)
    return (
        [int(l.attention.self.num_attention_heads) for l in layers],
        [int(l.intermediate.dense.out_features) for l in layers],
    )


@pytest.mark.parametrize("target", [0.9, 0.75, 0.5, 0.3])
def test_reaches_the_budget_from_below_by_the_shared_ruler(tiny_model, tokenizer, target):
    model, method = _prune(tiny_model, target)
    reached = remaining_fraction(model)
    info = method.describe()["torch_pruning"]
    assert reached <= target + 1e-12
    # as close as possible from below: within one FFN channel (global) or one per layer (layer-wise)
    assert target - reached < (PER_UNIT if info["ranking"] == "global" else 2 * PER_UNIT) / DENSE
    assert info["reached"] == pytest.approx(reached) and info["budget_reachable"] is True
    assert method.remaining_before_finalize == pytest.approx(reached)
    # whole heads and FFN channels only: the hidden size and the head size are untouched
    cfg = model.config
    for layer in surgery.encoder_layers(model):
        att = layer.attention.self
        assert att.attention_head_size == cfg.hidden_size // cfg.num_attention_heads
        assert att.query.in_features == att.key.in_features == att.value.in_features == cfg.hidden_size
        assert att.all_head_size == att.query.out_features == att.num_attention_heads * att.attention_head_size
        assert layer.attention.output.dense.in_features == att.all_head_size
        assert layer.attention.output.dense.out_features == cfg.hidden_size == layer.output.dense.out_features
        assert layer.intermediate.dense.out_features == layer.output.dense.in_features
        assert att.num_attention_heads >= 1 and layer.intermediate.dense.out_features >= 1
    assert model.base_model.embeddings.word_embeddings.weight.shape[1] == cfg.hidden_size
    logits = _logits(model, _batch(tokenizer))
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()


def test_one_ratio_for_heads_and_channels_at_half(tiny_model):
    model, method = _prune(tiny_model, 0.5)
    info = method.describe()["torch_pruning"]
    assert info["ranking"] == "global" and info["fallback_reason"] is None
    heads, units = _shapes(model)
    assert sum(heads) == 4 and sum(units) == 128  # half of the 8 heads and of the 256 channels
    assert remaining_fraction(model) == 0.5


def test_plan_counts():
    from prunebench.checkpoints.pretrained import load_pretrained

    model = load_pretrained("tiny-random", num_labels=2, seed=0)
    p = plan_pruning(model, 0.9, "global")  # r = 0.1: round(0.8) = 1 head, then 20 channels
    assert (p.heads, p.units, p.reachable) == (1, 20, True)
    assert p.reached == pytest.approx(1 - (PER_HEAD + 20 * PER_UNIT) / DENSE)
    p = plan_pruning(model, 0.5, "layer-wise")  # 2 heads and 64 channels per layer
    assert (p.heads, p.units) == (4, 128)
    assert plan_pruning(model, 1.0, "global").heads == plan_pruning(model, 1.0, "global").units == 0


def test_unreachable_budget_prunes_to_the_floor_and_says_so(tiny_model, tokenizer):
    # floor: 1 head and 1 channel per layer = (2*4096 + 2*128) / 65536 = 0.1289
    model, method = _prune(tiny_model, 0.1)
    info = method.describe()["torch_pruning"]
    assert info["budget_reachable"] is False
    # global ranking would empty a layer (Torch-Pruning then skips the group): layer-wise fallback
    assert info["ranking"] == "layer-wise" and "empty a layer" in info["fallback_reason"]
    assert _shapes(model) == ([1, 1], [1, 1])
    assert remaining_fraction(model) == pytest.approx((2 * PER_HEAD + 2 * PER_UNIT) / DENSE)
    assert torch.isfinite(_logits(model, _batch(tokenizer))).all()


def test_layer_wise_ranking_setting(tiny_model):
    model, method = _prune(tiny_model, 0.5, {"global_ranking": False})
    assert method.describe()["torch_pruning"]["ranking"] == "layer-wise"
    assert _shapes(model) == ([2, 2], [64, 64])
    assert remaining_fraction(model) == 0.5


def test_importance_is_weight_magnitude(tiny_model):
    """A head (FFN channel) whose weights are scaled up is kept, one scaled down is removed."""
    strong, weak = (0, 2), (1, 1)
    with torch.no_grad():
        layers = surgery.encoder_layers(tiny_model)
        for (l, h), scale in ((strong, 8.0), (weak, 0.01)):
            att = layers[l].attention.self
            for lin in (att.query, att.key, att.value):
                lin.weight[h * 16 : (h + 1) * 16] *= scale
            layers[l].attention.output.dense.weight[:, h * 16 : (h + 1) * 16] *= scale
        layers[0].intermediate.dense.weight[5] *= 10.0
        layers[0].output.dense.weight[:, 5] *= 10.0
        layers[0].intermediate.dense.weight[7] *= 0.01
        layers[0].output.dense.weight[:, 7] *= 0.01
    _, method = _prune(tiny_model, 0.5, {"global_ranking": False})
    removed = {int(l): hs for l, hs in method.removed_heads.items()}
    assert strong[1] not in removed[strong[0]] and weak[1] in removed[weak[0]]
    assert 5 not in method.removed_units[0] and 7 in method.removed_units[0]
    assert method.describe()["torch_pruning"]["importance"].startswith("MagnitudeImportance(p=2")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_saved_model_reloads_with_equal_outputs(tiny_model, tokenizer, tmp_path, attn):
    tiny_model.config._attn_implementation = attn
    model, method = _prune(tiny_model, 0.5)
    ops = surgery.recorded_ops(model)
    assert [op["op"] for op in ops] == ["remove_heads", "remove_ffn_units"]
    assert ops[0]["args"]["heads"] == {str(l): hs for l, hs in method.removed_heads.items()}
    batch = _batch(tokenizer)
    save_model(model, tokenizer, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert _shapes(back) == _shapes(model)
    assert torch.allclose(_logits(back, batch), _logits(model, batch), atol=1e-5)
    assert count_encoder_weights(back).remaining_fraction == count_encoder_weights(model).remaining_fraction
    assert json.loads((tmp_path / "m" / "config.json").read_text())["prunebench_dense_encoder_weights"] == DENSE


def test_refuses_anything_but_whole_heads_and_channels(tiny_model):
    """Head dims pruned (prune_head_dims) cannot be expressed by surgery: the check raises."""
    import torch_pruning as tp

    from methods.torch_pruning_peer import TorchPruningSettings

    original = tp.pruner.BasePruner.__init__

    def head_dims(self, *args, **kwargs):
        kwargs.update(prune_head_dims=True, prune_num_heads=False, head_pruning_ratio=0.0)
        original(self, *args, **kwargs)

    tp.pruner.BasePruner.__init__ = head_dims
    try:
        with pytest.raises(TorchPruningError, match="head dimensions"):
            run_torch_pruning(tiny_model, 0.3, 0.0, True, TorchPruningSettings())
    finally:
        tp.pruner.BasePruner.__init__ = original


@pytest.mark.parametrize("freeze", [True, False])
def test_trains_through_the_shared_trainer(tiny_model, sst2_small, tokenizer, tmp_path, freeze):
    budget = FinetuneBudget(
        steps=4, batch_size=16, learning_rate=1e-4, max_seq_len=64, freeze_embeddings=freeze, warmup_ratio=0.0
    )
    method = methods.build("torch_pruning", 0.5)
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    result = train(tiny_model, sst2_small["train"], tokenizer, budget, method, seed=0)
    model = method.finalize(tiny_model)
    assert result.steps == 4
    assert remaining_fraction(model) == 0.5
    # the compacted model's parameters are the ones the optimiser trained
    changed = [
        n
        for n, p in model.named_parameters()
        if "encoder" in n and n in before and p.shape == before[n].shape and not torch.equal(p.detach(), before[n])
    ]
    assert changed
    pruned_q = model.base_model.encoder.layer[0].attention.self.query.weight
    assert pruned_q.shape[0] < before["bert.encoder.layer.0.attention.self.query.weight"].shape[0]
    save_model(model, tokenizer, tmp_path / "m")
    batch = _batch(tokenizer)
    assert torch.allclose(_logits(load_model(tmp_path / "m"), batch), _logits(model, batch), atol=1e-5)


def test_run_method_job_end_to_end(tiny_model, sst2_small, tokenizer, tmp_path):
    """The training job of the workflow (``experiment.run_method``) with this method, on the tiny model."""
    from prunebench.data.loading import DataConfig, load_task_data
    from prunebench.data.tasks import get_task
    from prunebench.measure.flops import flops_per_example
    from prunebench.runner import jobs as experiment
    from tests.conftest import SST2_DEV, SST2_TRAIN

    spec = get_task("sst2")
    raw = load_task_data(
        spec, DataConfig(source="local", train=str(SST2_TRAIN), eval=str(SST2_DEV), train_limit=256, eval_limit=64)
    )
    budget = FinetuneBudget(steps=3, batch_size=16, learning_rate=1e-4, max_seq_len=64, warmup_ratio=0.0)
    exp = {"model": "tiny-random", "method_settings": {"torch_pruning": {}}}
    ctx = experiment.Context(exp, spec, tokenizer, sst2_small["train"], sst2_small["eval"], raw["eval"], budget, 1)
    save_model(tiny_model, tokenizer, tmp_path / "dense")
    summary = experiment.run_method(
        ctx, "torch_pruning", 0.5, 0, tmp_path / "dense", tmp_path / "model", tmp_path / "summary.json"
    )
    info = summary["details"]["method"]
    assert info["name"] == "torch_pruning" and info["granularity"] == "head+ffn-channel"
    assert info["torch_pruning"]["reached"] == 0.5 and info["remaining_before_finalize"] == 0.5
    model = load_model(tmp_path / "model")
    assert remaining_fraction(model) == 0.5
    dense = load_model(tmp_path / "dense")
    assert flops_per_example(model, 64)["dense_kernels"] < flops_per_example(dense, 64)["dense_kernels"]


def test_guard_fields(tiny_model):
    """The finalize guard (prunebench.method.base): finalize prunes nothing, and says so."""
    model, method = _prune(tiny_model, 0.75)
    info = method.describe()
    assert info["finalize_enforcement"].startswith("none")
    assert info["remaining_before_finalize"] == pytest.approx(remaining_fraction(model))
    json.dumps(info)  # the record stores it
