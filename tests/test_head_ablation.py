"""Head ablation analysis (Michel et al. 2019; Kovaleva et al. 2019) on the tiny model."""

import copy
import json

import pytest
import torch

from prunebench.analysis.head_ablation import head_ablation
from prunebench.checkpoints.store import save_model
from prunebench.config import load_config_file, resolve
from prunebench.data.tasks import get_task
from prunebench.measure.accuracy import task_metrics
from prunebench.structure import surgery
from tests.conftest import SST2_DEV, SST2_TRAIN, SUITE_THREADS

SPEC = get_task("sst2")


@pytest.fixture(scope="module")
def trained():
    """The tiny model with larger random weights, so that heads visibly change its predictions."""
    from prunebench.checkpoints.pretrained import load_pretrained

    model = load_pretrained("tiny-random", 2, 0, ("negative", "positive"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "encoder" in name:
                p.normal_(0, 0.2)
        model.classifier.weight.normal_(0, 1.0)
    return model.eval()


@pytest.fixture(scope="module")
def result(trained, sst2_small, tokenizer):
    return head_ablation(trained, sst2_small["eval"], tokenizer, SPEC, 64)


def _accuracy(model, sst2_small, tokenizer):
    return task_metrics(model, sst2_small["eval"], tokenizer, SPEC, 64)["accuracy"]


def test_matrix_shape_and_range(result):
    single = result["single_head_disabled"]
    assert len(single) == 2 and all(len(row) == 4 for row in single)
    values = [v for row in single + result["one_head_kept"] for v in row] + result["layer_attention_disabled"]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert result["evaluations"] == 1 + 8 + 8 + 2
    assert result["heads_per_layer"] == [4, 4] and "mask" in result["disable"]
    # disabling heads does something on this model
    assert any(v != result["baseline"] for row in single for v in row)
    json.dumps(result)  # JSON-able


def test_baseline_is_the_plain_model(result, trained, sst2_small, tokenizer):
    assert result["baseline"] == pytest.approx(_accuracy(trained, sst2_small, tokenizer))
    # no hooks are left behind
    assert not any(layer.attention.output.dense._forward_pre_hooks for layer in trained.base_model.encoder.layer)


@pytest.mark.parametrize("layer, head", [(0, 2), (1, 3)])
def test_entries_match_physically_removed_heads(result, trained, sst2_small, tokenizer, layer, head):
    one = surgery.remove_heads(copy.deepcopy(trained), {layer: [head]})
    assert result["single_head_disabled"][layer][head] == pytest.approx(_accuracy(one, sst2_small, tokenizer))
    others = [h for h in range(4) if h != head]
    kept = surgery.remove_heads(copy.deepcopy(trained), {layer: others})
    assert result["one_head_kept"][layer][head] == pytest.approx(_accuracy(kept, sst2_small, tokenizer))


def test_layer_attention_disabled_and_best_head(result, trained, sst2_small, tokenizer):
    gone = surgery.remove_heads(copy.deepcopy(trained), {1: [0, 1, 2, 3]})
    assert result["layer_attention_disabled"][1] == pytest.approx(_accuracy(gone, sst2_small, tokenizer))
    for l, row in enumerate(result["one_head_kept"]):
        assert result["best_one_head_score"][l] == max(row)
        assert row[result["best_head_kept"][l]] == max(row)
    assert result["single_head_delta"][0][0] == pytest.approx(result["single_head_disabled"][0][0] - result["baseline"])


def test_cli_writes_the_json(trained, tokenizer, tmp_path):
    from prunebench.runner.cli import main

    raw = load_config_file()
    raw.update(
        profile="smoke",
        data={"source": "local", "train": str(SST2_TRAIN), "eval": str(SST2_DEV), "train_limit": 32, "eval_limit": 32},
    )
    exp = json.dumps(resolve(raw, check_files=False))
    dense = save_model(trained, tokenizer, tmp_path / "dense")
    out = tmp_path / "analysis" / "head_ablation_seed0.json"
    assert (
        main(
            [
                "head-ablation",
                "--experiment",
                exp,
                "--task",
                "sst2",
                "--dense-dir",
                str(dense),
                "--out",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["eval_examples"] == 32 and len(data["single_head_disabled"]) == 2
    assert data["model_dir"] == str(dense)
    torch.set_num_threads(SUITE_THREADS)  # load_context set 1; restore the suite's setting


def test_cli_bad_checkpoint_is_one_clear_line(tmp_path, capsys):
    from prunebench.runner.cli import main

    raw = load_config_file()
    raw.update(
        profile="smoke",
        data={"source": "local", "train": str(SST2_TRAIN), "eval": str(SST2_DEV), "train_limit": 16, "eval_limit": 16},
    )
    exp = json.dumps(resolve(raw, check_files=False))
    assert (
        main(
            [
                "head-ablation",
                "--experiment",
                exp,
                "--task",
                "sst2",
                "--dense-dir",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "o.json"),
                "--threads",
                "1",
            ]
        )
        == 2
    )
    assert "checkpoint folder not found" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
    torch.set_num_threads(SUITE_THREADS)


def test_prefix_cache_gives_the_same_numbers_as_full_passes(result, trained, sst2_small, tokenizer):
    full = head_ablation(trained, sst2_small["eval"], tokenizer, SPEC, 64, prefix_cache=False)
    for key in ("baseline", "single_head_disabled", "one_head_kept", "layer_attention_disabled"):
        assert result[key] == full[key], key
    # the cache skips layer 0 for every ablation of layer 1: 1 baseline (2 layers) + 9 x 2 + 9 x 1
    assert full["layer_evaluations"] == 2 * 19 and result["layer_evaluations"] == 2 + 9 * 2 + 9 * 1
    assert type(trained.base_model.embeddings).__name__ != "_CachedLayerInput"  # the model is restored
    assert len(trained.base_model.encoder.layer) == 2


def _zero_query_key(model, layer, heads):
    """An independent route to Kovaleva's uniform attention: with the head's query and key
    weights and biases zeroed every score is 0, so softmax gives 1/L over the real tokens."""
    att = surgery.encoder_layers(model)[layer].attention.self
    size = att.attention_head_size
    with torch.no_grad():
        for h in heads:
            for lin in (att.query, att.key):
                lin.weight[h * size : (h + 1) * size] = 0.0
                lin.bias[h * size : (h + 1) * size] = 0.0
    return model


@pytest.mark.parametrize("disabled", [{0: [1]}, {1: [0, 2, 3]}, {0: [0, 1, 2, 3]}])
def test_uniform_mode_equals_zeroed_query_and_key(trained, sst2_small, tokenizer, disabled):
    from prunebench.analysis.head_ablation import _uniform_attention_hooks

    ds = sst2_small["eval"].select(range(16))
    batch = tokenizer.pad(
        [{"input_ids": ds[i]["input_ids"], "attention_mask": ds[i]["attention_mask"]} for i in range(16)],
        return_tensors="pt",
    )
    assert (batch["attention_mask"] == 0).any(), "the batch has padding, which uniform attention must skip"
    reference = copy.deepcopy(trained)
    for layer, heads in disabled.items():
        _zero_query_key(reference, layer, heads)
    handles = _uniform_attention_hooks(trained, disabled)
    try:
        with torch.no_grad():
            got = trained(**batch).logits
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        want, plain = reference(**batch).logits, trained(**batch).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-4)  # it did change the model's output


def test_uniform_mode_through_the_analysis(trained, sst2_small, tokenizer):
    res = head_ablation(trained, sst2_small["eval"], tokenizer, SPEC, 64, mode="uniform")
    assert res["mode"] == "uniform" and "1/L" in res["disable"]
    ref = _zero_query_key(copy.deepcopy(trained), 1, [2])
    assert res["single_head_disabled"][1][2] == pytest.approx(_accuracy(ref, sst2_small, tokenizer))
    with pytest.raises(ValueError, match="unknown mode"):
        head_ablation(trained, sst2_small["eval"], tokenizer, SPEC, 64, mode="zeros")
