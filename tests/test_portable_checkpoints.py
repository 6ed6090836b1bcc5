"""Saved folders that stock transformers can load do load, exactly; the others make it fail loudly.

Stock kinds (dense, element-sparse, layers removed, the same FFN width left in every layer)
reload with plain ``AutoModelForSequenceClassification.from_pretrained`` and compute what
prunebench's in-memory model computes. Non-stock kinds (heads removed, FLOP-factorized, int8,
mixes) raise in ``AutoConfig``/``AutoModelForSequenceClassification``/``BertForSequenceClassification``
``.from_pretrained`` with a message naming prunebench, and still reload with ``load_model``.
Folders written by the previous format still load with ``load_model``.
"""

import json

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
)
from transformers.models.bert.modeling_bert import BertSelfAttention

import methods
from prunebench.checkpoints.store import (
    CHECKSUMS,
    WEIGHTS,
    CheckpointError,
    load_model,
    portability,
    save_model,
    sha256,
)
from prunebench.method.base import TrainingPlan
from prunebench.quantization.int8 import is_quantized_model, quantize_encoder_linears
from prunebench.structure import surgery
from prunebench.structure.budget import prunable_linears, remaining_fraction
from prunebench.structure.factorized import compact, factorize_svd, set_submodule
from tests.conftest import logits, sample_batch

ATOL = 1e-4


_batch, _logits = sample_batch, logits


def _config(folder):
    return json.loads((folder / "config.json").read_text())


@pytest.fixture
def model(wide_tiny_model):
    return wide_tiny_model


# ----- the kinds -------------------------------------------------------------------------------


def _dense(model):
    return model


def _element_sparse(model):
    method = methods.build("magnitude_oneshot", 0.3)
    method.prepare(model, TrainingPlan(total_steps=1, seed=0))
    return method.finalize(model)


def _layers_removed(model):
    surgery.remove_layers(model, [0])
    return model


def _uniform_ffn_removed(model):
    surgery.remove_ffn_units(model, {0: [0, 5, 9], 1: [3, 4, 100]})
    return model


def _layers_and_ffn_removed(model):
    surgery.remove_ffn_units(model, {0: list(range(28)), 1: list(range(100, 128))})
    surgery.remove_layers(model, [1])
    return model


def _uneven_heads(model):
    surgery.remove_heads(model, {0: [1], 1: [0, 2]})
    return model


def _even_heads(model):  # the same count left in every layer: still not a stock BERT (head size)
    surgery.remove_heads(model, {0: [1, 3], 1: [0, 2]})
    return model


def _uneven_ffn(model):
    surgery.remove_ffn_units(model, {0: [1, 2, 3]})
    return model


def _layers_removed_and_uneven_heads(model):
    surgery.remove_layers(model, [1])
    surgery.remove_heads(model, {0: [2]})
    return model


def _factorized(model):
    ranks = {}
    for name, linear in prunable_linears(model).items():
        fl = compact(factorize_svd(linear), torch.arange(12))
        set_submodule(model, name, fl)
        ranks[name] = fl.rank
    surgery.record_op(model, "factorize", {"ranks": ranks})
    return model


def _fixed_attention(model):
    from prunebench.structure.fixed_attention import fix_heads

    return fix_heads(
        model, {0: ["learnable", "previous", "next", "left"], 1: ["current", "right", "learnable", "left"]}
    )


def _int8(model):
    return quantize_encoder_linears(model)


STOCK_KINDS = {
    "dense": _dense,
    "element_sparse": _element_sparse,
    "layers_removed": _layers_removed,
    "uniform_ffn_removed": _uniform_ffn_removed,
    "layers_and_ffn_removed": _layers_and_ffn_removed,
}
NON_STOCK_KINDS = {
    "uneven_heads": _uneven_heads,
    "even_heads": _even_heads,
    "uneven_ffn": _uneven_ffn,
    "layers_removed_and_uneven_heads": _layers_removed_and_uneven_heads,
    "factorized": _factorized,
    "fixed_attention": _fixed_attention,
    "int8": _int8,
}


# ----- stock -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(STOCK_KINDS))
def test_stock_kinds_load_with_plain_transformers(kind, model, tokenizer, tmp_path):
    batch = _batch(tokenizer)
    pruned = STOCK_KINDS[kind](model)
    expected = _logits(pruned, batch)
    folder = save_model(pruned, tokenizer, tmp_path / kind)
    assert portability(folder) == "stock"
    config = _config(folder)
    assert config["model_type"] == "bert" and config["prunebench_portable_with"] == "transformers"
    assert "prunebench_surgery" not in config  # nothing to replay: the config describes the saved shapes
    assert config["num_hidden_layers"] == len(pruned.base_model.encoder.layer)
    assert config["intermediate_size"] == pruned.base_model.encoder.layer[0].intermediate.dense.out_features

    stock, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(_logits(stock, batch), expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(
        _logits(BertForSequenceClassification.from_pretrained(folder), batch), expected, atol=ATOL, rtol=0
    )
    again = load_model(folder)
    torch.testing.assert_close(_logits(again, batch), expected, atol=ATOL, rtol=0)
    # still measured against the dense origin
    assert remaining_fraction(again) == pytest.approx(remaining_fraction(pruned))
    assert remaining_fraction(stock) == pytest.approx(remaining_fraction(pruned))
    assert "AutoModelForSequenceClassification.from_pretrained" in (folder / "README.md").read_text()


def test_stock_compacted_config_keeps_the_history_and_the_model_untouched(model, tokenizer, tmp_path):
    pruned = _layers_and_ffn_removed(model)
    ops = surgery.recorded_ops(pruned)
    folder = save_model(pruned, tokenizer, tmp_path / "m")
    config = _config(folder)
    assert config["prunebench_surgery_history"] == ops
    assert config["prunebench_dense_encoder_weights"] == 2 * (4 * 64 * 64 + 2 * 64 * 128)
    assert (config["num_hidden_layers"], config["intermediate_size"]) == (1, 100)
    # save_model does not change the in-memory model's config
    assert surgery.recorded_ops(pruned) == ops and pruned.config.num_hidden_layers == 2


def test_surgery_after_a_stock_reload_is_relative_to_the_compacted_model(model, tokenizer, tmp_path):
    batch = _batch(tokenizer)
    first = save_model(_layers_removed(model), tokenizer, tmp_path / "first")
    again = load_model(first)
    surgery.remove_heads(again, {0: [3]})
    expected = _logits(again, batch)
    second = save_model(again, tokenizer, tmp_path / "second")
    assert portability(second) == "prunebench"
    torch.testing.assert_close(_logits(load_model(second), batch), expected, atol=ATOL, rtol=0)


def test_stock_folder_with_missing_weights_is_refused_by_load_model(model, tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_model(_layers_removed(model), tokenizer, tmp_path / "m", sparse=False)
    state = load_file(str(folder / WEIGHTS))
    state.pop("bert.encoder.layer.0.output.dense.weight")
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / CHECKSUMS).write_text(json.dumps({WEIGHTS: sha256(folder / WEIGHTS)}))
    with pytest.raises(CheckpointError, match="missing"):
        load_model(folder)


# ----- non-stock ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(NON_STOCK_KINDS))
def test_non_stock_kinds_fail_loudly_in_transformers_and_load_with_prunebench(kind, model, tokenizer, tmp_path):
    batch = _batch(tokenizer)
    pruned = NON_STOCK_KINDS[kind](model)
    expected = _logits(pruned, batch)
    folder = save_model(pruned, tokenizer, tmp_path / kind)
    assert portability(folder) == "prunebench"
    config = _config(folder)
    assert config["model_type"].startswith("prunebench-") and config["model_type"].endswith("-bert")
    assert config["prunebench_model_type"] == "bert" and config["prunebench_portable_with"] == "onnxruntime"

    with pytest.raises(ValueError, match=f"model type `{config['model_type']}`"):
        AutoModelForSequenceClassification.from_pretrained(folder)
    with pytest.raises(ValueError, match="prunebench-"):
        AutoConfig.from_pretrained(folder)
    for load in (
        lambda: BertForSequenceClassification.from_pretrained(folder),
        lambda: BertForSequenceClassification.from_pretrained(folder, num_attention_heads=4),
        lambda: BertConfig.from_pretrained(folder),
    ):
        with pytest.raises(Exception, match=r"prunebench\.checkpoints\.store\.load_model\(folder\).*model\.onnx"):
            load()
    # the tokenizer files stay stock (the ONNX route needs them)
    assert AutoTokenizer.from_pretrained(folder)("a fine film")["input_ids"] == tokenizer("a fine film")["input_ids"]
    assert "prunebench.checkpoints.store import load_model" in (folder / "README.md").read_text()

    again = load_model(folder)
    if kind == "int8":
        assert is_quantized_model(again) and torch.equal(_logits(again, batch), expected)
    else:
        torch.testing.assert_close(_logits(again, batch), expected, atol=ATOL, rtol=0)
    assert remaining_fraction(again) == pytest.approx(remaining_fraction(pruned))


def test_mixed_structure_names_every_change(model, tokenizer, tmp_path):
    folder = save_model(_layers_removed_and_uneven_heads(model), tokenizer, tmp_path / "m")
    assert _config(folder)["model_type"] == "prunebench-layers-removed-heads-removed-bert"
    folder = save_model(_factorized(load_model(folder)), tokenizer, tmp_path / "n")
    assert _config(folder)["model_type"] == "prunebench-layers-removed-heads-removed-factorized-bert"


def test_stock_folder_runs_in_a_transformers_pipeline(model, tokenizer, tmp_path):
    from transformers import pipeline

    folder = save_model(_layers_removed(model), tokenizer, tmp_path / "m")
    out = pipeline("text-classification", model=str(folder), device="cpu")(["a fine film", "dull and long"])
    expected = [
        int(_logits(model, tokenizer([text], return_tensors="pt")).argmax())
        for text in ["a fine film", "dull and long"]
    ]
    assert [o["label"] for o in out] == [model.config.id2label[i] for i in expected]


def test_bert_head_size_is_hidden_over_heads_so_removed_heads_are_not_stock(model):
    """transformers' BertSelfAttention: head size = hidden_size // num_attention_heads. A layer
    left with 2 of 4 heads of size 16 would need heads of size 32 in a stock config."""
    _even_heads(model)
    att = model.base_model.encoder.layer[0].attention.self
    assert (att.num_attention_heads, att.attention_head_size, att.query.out_features) == (2, 16, 32)
    stock = BertSelfAttention(BertConfig(hidden_size=64, num_attention_heads=2, intermediate_size=128))
    assert stock.attention_head_size == 32 and stock.query.out_features == 64


# ----- the previous format ---------------------------------------------------------------------------


def _save_old_format(model, tokenizer, folder):
    """What ``save_model`` wrote before: ``save_pretrained`` as is (model_type bert + ops) + checksums."""
    folder.mkdir(parents=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / CHECKSUMS).write_text(json.dumps({WEIGHTS: sha256(folder / WEIGHTS)}))
    return folder


@pytest.mark.parametrize("kind", ["uneven_heads", "layers_removed", "factorized", "int8"])
def test_old_format_folders_still_load(kind, model, tokenizer, tmp_path):
    batch = _batch(tokenizer)
    pruned = {**STOCK_KINDS, **NON_STOCK_KINDS}[kind](model)
    expected = _logits(pruned, batch)
    folder = _save_old_format(pruned, tokenizer, tmp_path / kind)
    config = _config(folder)
    assert config["model_type"] == "bert"
    assert config.get("prunebench_surgery") or config.get("prunebench_quantization")
    assert portability(folder) == "prunebench"  # stock transformers would load it wrongly
    again = load_model(folder)
    torch.testing.assert_close(_logits(again, batch), expected, atol=ATOL, rtol=0)
