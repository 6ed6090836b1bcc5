"""int8 dynamic quantization (prunebench.quantization.int8, methods/quantization.py) and its way
through the shared measurement path: weight count, FLOPs, sparse encoding, save and reload;
the two kernels (PyTorch's quantized engine, ``torch._int_mm``), the fallback between them, and the
bytes an int8 checkpoint takes on disk, measured from the file."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import methods
import prunebench.quantization.int8 as quantized_mod
from prunebench.checkpoints import store as checkpoints
from prunebench.checkpoints.quantized import load_quantized_model
from prunebench.checkpoints.store import load_model as quantized_load_model
from prunebench.measure.disk import bytes_on_disk, encoder_bytes_on_disk, tensor_bytes_on_disk
from prunebench.measure.flops import flops_per_example
from prunebench.quantization.int8 import (
    CONFIG_ATTR,
    Int8DynamicLinear,
    engine_unavailable,
    int8_matmul,
    is_quantized_checkpoint,
    is_quantized_model,
    kernel_report,
    quantize_encoder_linears,
    quantize_weight,
    set_kernel,
)
from prunebench.structure import budget

ENGINE = engine_unavailable("cpu")
needs_engine = pytest.mark.skipif(ENGINE is not None, reason=f"no quantized engine here: {ENGINE}")


def test_weight_quantization_is_per_row_symmetric_and_keeps_zeros():
    w = torch.tensor([[0.0, 1.0, -2.0, 0.5], [0.0, 0.0, 0.0, 0.0], [3.0, -3.0, 0.01, 0.0]])
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and scale.shape == (3,)
    assert q[0].tolist() == [0, 64, -127, 32] and scale[0] == pytest.approx(2 / 127)
    assert q[1].tolist() == [0, 0, 0, 0] and scale[1] == 1.0  # an all-zero row
    assert (q[w == 0] == 0).all(), "pruned weights stay pruned"
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()


def test_int8_matmul_is_exact_integer_product():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (5, 48), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (7, 48), generator=g, dtype=torch.int8)
    assert torch.equal(int8_matmul(a, b).float(), a.float() @ b.float().t())


def test_int8_linear_matches_float_linear():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    q = Int8DynamicLinear.from_float(lin)
    x = torch.randn(3, 5, 64)
    assert isinstance(q, nn.Linear) and q.weight.dtype == torch.int8 and not q.weight.requires_grad
    ref = lin(x)
    out = q(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.fixture
def quantized(tiny_model):
    return quantize_encoder_linears(copy.deepcopy(tiny_model))


def test_quantize_encoder_linears_replaces_only_encoder_layers(tiny_model, quantized):
    swapped = [n for n, m in quantized.named_modules() if isinstance(m, Int8DynamicLinear)]
    assert len(swapped) == 6 * tiny_model.config.num_hidden_layers
    assert all(".encoder.layer." in f".{n}." for n in swapped)
    assert type(quantized.classifier) is nn.Linear and type(quantized.bert.pooler.dense) is nn.Linear
    assert is_quantized_model(quantized) and getattr(quantized.config, CONFIG_ATTR)["scheme"] == "int8-dynamic"
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, out = tiny_model(input_ids=ids).logits, quantized(input_ids=ids).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_shared_ruler_counts_int8_weights(tiny_model, quantized):
    count = budget.count_encoder_weights(quantized)
    dense = budget.count_encoder_weights(tiny_model)
    assert count.stored == dense.stored == count.dense_reference
    assert 0.9 < count.remaining_fraction <= 1.0  # only weights that round to zero are not counted
    assert set(budget.per_matrix_remaining(quantized)) == set(budget.per_matrix_remaining(tiny_model))
    f, fd = flops_per_example(quantized, 32), flops_per_example(tiny_model, 32)
    assert f["dense_kernels"] == fd["dense_kernels"]


def test_quantized_checkpoint_round_trip(tiny_model, quantized, tokenizer, tmp_path):
    checkpoints.save_model(quantized, tokenizer, tmp_path / "q")
    checkpoints.save_model(tiny_model, tokenizer, tmp_path / "d")
    assert is_quantized_checkpoint(tmp_path / "q") and not is_quantized_checkpoint(tmp_path / "d")
    assert bytes_on_disk(tmp_path / "q")["dense"] < bytes_on_disk(tmp_path / "d")["dense"]
    reloaded = load_quantized_model(checkpoints.verify(tmp_path / "q"))
    assert is_quantized_model(quantized_load_model(tmp_path / "q"))
    assert not is_quantized_model(quantized_load_model(tmp_path / "d"))
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.equal(reloaded(input_ids=ids).logits, quantized(input_ids=ids).logits)
    sparse = checkpoints.load_sparse(tmp_path / "q" / checkpoints.SPARSE)
    state = reloaded.state_dict()
    assert all(torch.equal(sparse[k], state[k]) for k in sparse) and set(sparse) == set(state)


def test_load_refuses_a_mismatched_checkpoint(quantized, tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    checkpoints.save_model(quantized, tokenizer, tmp_path / "q", sparse=False)
    state = load_file(str(tmp_path / "q" / checkpoints.WEIGHTS))
    state.pop(next(k for k in state if k.endswith("weight_scale")))
    save_file(state, str(tmp_path / "q" / checkpoints.WEIGHTS), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="does not match its architecture"):
        load_quantized_model(tmp_path / "q")


def test_int8_dynamic_method_is_a_budget_free_row(tiny_model):
    cls = methods.get("int8_dynamic")
    assert cls.budget_free and cls.starts_from == "dense" and not cls.trains and "1910.06188" in cls.paper
    method = methods.build("int8_dynamic", 1.0)
    model = method.finalize(copy.deepcopy(tiny_model))
    assert is_quantized_model(model)
    assert method.describe()["granularity"] == "int8-weights"


# ----- kernels: PyTorch's quantized engine and torch._int_mm ---------------------------------


def _layer(k=384, n=1536, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.normal_(0, 0.05, generator=g)
        lin.bias.normal_(0, 0.1, generator=g)
    x = torch.randn(4, 16, k, generator=g)
    x[:, 0] *= 30  # an outlier token, as BERT's [CLS]/[SEP] positions have
    return lin, x


def _outputs(module, x, kernel):
    set_kernel(module, kernel)
    with torch.inference_mode():
        return module(x)


@needs_engine
def test_kernels_agree_on_a_layer():
    lin, x = _layer()
    q = Int8DynamicLinear.from_float(lin)
    assert q.kernel == "auto" and q.resolve_kernel() == ("engine", None)
    ref = lin(x).detach()
    scale = ref.abs().amax(-1, keepdim=True)  # per token: the outlier token must not hide the others' error
    engine, int_mm = _outputs(q, x, "engine"), _outputs(q, x, "int_mm")
    assert engine.shape == ref.shape and engine.dtype == ref.dtype
    assert ((engine - ref).abs() / scale).max() < 0.03
    assert ((int_mm - ref).abs() / scale).max() < 0.02
    assert ((engine - int_mm).abs() / scale).max() < 0.03
    assert torch.equal(_outputs(q, x, "auto"), engine)


@needs_engine
def test_kernels_agree_on_the_model(wide_tiny_model, tokenizer):
    """Both kernels on the same int8 model (the wide tiny model: large activations through two layers):
    the encoder output and the logits close relative to their scale, the same argmax."""
    q = quantize_encoder_linears(copy.deepcopy(wide_tiny_model))
    texts = [
        "a fine film , warm and funny",
        "dull and long",
        "not bad at all",
        "the worst thing i have seen",
        "an unexpected delight",
        "it never finds its footing",
        "solid , if unremarkable",
        "bold and moving",
    ] * 2
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref = wide_tiny_model(**batch, output_hidden_states=True)
        engine = set_kernel(q, "engine")(**batch, output_hidden_states=True)
        int_mm = set_kernel(q, "int_mm")(**batch, output_hidden_states=True)
    h_ref, h_e, h_i = ref.hidden_states[-1], engine.hidden_states[-1], int_mm.hidden_states[-1]
    assert (h_e - h_i).abs().max() < 0.15 * h_ref.abs().max()  # measured 0.064
    assert (h_e - h_i).abs().mean() < 0.1 * h_ref.abs().mean()  # measured 0.05
    assert (h_e - h_ref).abs().mean() < 2 * (h_i - h_ref).abs().mean() + 0.01 * h_ref.abs().mean()
    assert (engine.logits - int_mm.logits).abs().max() < 0.15 * ref.logits.abs().max()  # measured 0.06
    assert (engine.logits.argmax(-1) == int_mm.logits.argmax(-1)).float().mean() >= 0.9
    assert (engine.logits.argmax(-1) == ref.logits.argmax(-1)).float().mean() >= 0.9


@needs_engine
def test_auto_picks_the_engine_and_packs_once(quantized):
    report = kernel_report(quantized)
    assert report["setting"] == "auto" and report["used"] == "engine" and report["fallback_reason"] is None
    assert report["engine"] == torch.backends.quantized.engine and report["layers"] == 12
    assert report["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    layer = next(m for m in quantized.modules() if isinstance(m, Int8DynamicLinear))
    packed = layer.packed_weight()
    assert layer.packed_weight() is packed, "packed once, reused"
    w, b = torch.ops.quantized.linear_unpack(packed)
    assert b is None and torch.equal(w.int_repr(), layer.weight)  # the stored int8 matrix, unchanged
    assert torch.allclose(w.q_per_channel_scales().float(), layer.weight_scale)
    with torch.no_grad():
        layer.weight[0, 0] = -layer.weight[0, 0] - 1  # the weights change: packed again
    assert layer.packed_weight() is not packed
    assert torch.equal(torch.ops.quantized.linear_unpack(layer.packed_weight())[0].int_repr(), layer.weight)


@needs_engine
def test_packed_weights_are_not_saved_and_reload_equal(quantized, tokenizer, tmp_path):
    keys = set(quantized.state_dict())
    ids = torch.randint(1000, 5000, (3, 12), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        before = quantized(input_ids=ids).logits  # packs every layer
    assert set(quantized.state_dict()) == keys
    assert all(k.endswith((".weight", ".weight_scale", ".bias")) for k in keys if ".encoder.layer." in k)
    copied = copy.deepcopy(quantized)  # copies drop the packed weights, rebuilt on demand
    assert all(m._packed is None for m in copied.modules() if isinstance(m, Int8DynamicLinear))
    checkpoints.save_model(quantized, tokenizer, tmp_path / "q")
    saved = tensor_bytes_on_disk(tmp_path / "q" / checkpoints.WEIGHTS)
    stored = set(saved) - {"__header__"}
    assert {k for k in stored if ".encoder.layer." in k} == {k for k in keys if ".encoder.layer." in k}
    assert stored <= keys and not any("pack" in k for k in stored)
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config[CONFIG_ATTR]["kernel"] == "auto"
    reloaded = checkpoints.load_model(tmp_path / "q")
    assert kernel_report(reloaded)["used"] == "engine"
    with torch.inference_mode():
        assert torch.equal(reloaded(input_ids=ids).logits, before)
        assert torch.equal(copied(input_ids=ids).logits, before)
    forced = load_quantized_model(tmp_path / "q", kernel="int_mm")
    assert kernel_report(forced)["used"] == "int_mm" and getattr(forced.config, CONFIG_ATTR)["kernel"] == "int_mm"
    with torch.inference_mode():
        assert torch.equal(forced(input_ids=ids).logits, set_kernel(copied, "int_mm")(input_ids=ids).logits)


def test_engine_unavailable_falls_back_to_int_mm(quantized, monkeypatch):
    ids = torch.randint(1000, 5000, (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        int_mm = set_kernel(quantized, "int_mm")(input_ids=ids).logits
    set_kernel(quantized, "auto")
    monkeypatch.setattr(quantized_mod, "_supported_engines", lambda: ["qnnpack"])
    report = kernel_report(quantized)
    assert report["used"] == "int_mm" and "not supported by this torch build" in report["fallback_reason"]
    assert report["int_mm_exact"] in (True, False)
    with torch.inference_mode():
        assert torch.equal(quantized(input_ids=ids).logits, int_mm)
    set_kernel(quantized, "engine")
    with pytest.raises(RuntimeError, match="kernel 'engine' requested"), torch.inference_mode():
        quantized(input_ids=ids)


def test_an_engine_outside_the_list_falls_back(quantized, monkeypatch):
    monkeypatch.setattr(quantized_mod, "ENGINES", ())
    report = kernel_report(quantized)
    assert report["used"] == "int_mm" and "is not one of" in report["fallback_reason"]


@needs_engine
def test_failed_prepacking_falls_back_with_the_reason(quantized, monkeypatch):
    def gone(*args, **kwargs):
        raise RuntimeError("quantized tensors were removed")

    monkeypatch.setattr(torch, "_make_per_channel_quantized_tensor", gone)
    for m in quantized.modules():
        if isinstance(m, Int8DynamicLinear):
            m._packed = None
    report = kernel_report(quantized)
    assert report["used"] == "int_mm" and "prepacking failed" in report["fallback_reason"]
    assert "quantized tensors were removed" in report["fallback_reason"]


def test_int8_matmul_stays_exact_where_int_mm_is_not(monkeypatch):
    monkeypatch.setitem(quantized_mod._INT_MM_EXACT, "cpu", False)  # as on a CPU without VNNI
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (64, 384), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (96, 384), generator=g, dtype=torch.int8)
    a[0], b[0] = 127, 127
    assert torch.equal(int8_matmul(a, b).double(), a.double() @ b.double().t())


def test_int_mm_exactness_probe_runs():
    quantized_mod._INT_MM_EXACT.pop("cpu", None)
    assert quantized_mod.int_mm_is_exact("cpu") in (True, False)
    assert "cpu" in quantized_mod._INT_MM_EXACT


def test_unknown_kernel_is_refused(tiny_model):
    with pytest.raises(ValueError, match="int8 kernel must be one of"):
        quantize_encoder_linears(copy.deepcopy(tiny_model), kernel="fast")
    with pytest.raises(ValueError, match="int8 kernel must be one of"):
        methods.build("int8_dynamic", 1.0, {"kernel": "fast"})


def test_describe_names_the_kernel(tiny_model):
    method = methods.build("int8_dynamic", 1.0)
    assert method.describe()["kernel"] == {"setting": "auto", "used": None}  # before finalize
    method.finalize(copy.deepcopy(tiny_model))
    info = method.describe()
    assert info["settings"]["kernel"] == "auto"
    assert info["kernel"]["setting"] == "auto" and info["kernel"]["used"] == ("engine" if ENGINE is None else "int_mm")
    forced = methods.build("int8_dynamic", 1.0, {"kernel": "int_mm"})
    model = forced.finalize(copy.deepcopy(tiny_model))
    assert forced.describe()["kernel"]["used"] == "int_mm" and getattr(model.config, CONFIG_ATTR)["kernel"] == "int_mm"
    json.dumps(info)  # goes into the record as is


def test_old_checkpoints_without_a_kernel_setting_load_with_auto(quantized, tokenizer, tmp_path):
    checkpoints.save_model(quantized, tokenizer, tmp_path / "q", sparse=False)
    path = tmp_path / "q" / "config.json"
    config = json.loads(path.read_text())
    config[CONFIG_ATTR]["kernel"] = "torch._int_mm"  # what folders saved before the setting say
    config[CONFIG_ATTR].pop("kernels", None)
    path.write_text(json.dumps(config))
    reloaded = checkpoints.load_model(tmp_path / "q")
    assert kernel_report(reloaded)["setting"] == "auto"


# ----- bytes on disk: 8-bit encoder weights, measured from the saved file ----------------------


def test_int8_checkpoint_stores_one_byte_per_encoder_weight(tiny_model, quantized, tokenizer, tmp_path):
    checkpoints.save_model(quantized, tokenizer, tmp_path / "q", sparse=False)
    checkpoints.save_model(tiny_model, tokenizer, tmp_path / "d", sparse=False)
    q, d = encoder_bytes_on_disk(tmp_path / "q"), encoder_bytes_on_disk(tmp_path / "d")
    assert q["total"] == bytes_on_disk(tmp_path / "q")["dense"] and d["total"] == bytes_on_disk(tmp_path / "d")["dense"]
    n_weights = budget.count_encoder_weights(tiny_model).stored
    assert d["encoder_weights"] == 4 * n_weights and d["encoder_weight_scales"] == 0
    assert q["encoder_weights"] == n_weights  # int8: exactly 1/4 of the fp32 bytes
    rows = sum(m.out_features for m in quantized.modules() if isinstance(m, Int8DynamicLinear))
    assert q["encoder_weight_scales"] == 4 * rows  # one fp32 scale per output row
    assert q["other"] == d["other"]  # embeddings, biases, LayerNorm, pooler, classifier: fp32 in both
    # the file shrinks by 3/4 of the encoder's fp32 bytes, less the scales (headers differ by a few bytes)
    saved = d["total"] - q["total"]
    assert saved - (d["header"] - q["header"]) == 3 * n_weights - 4 * rows
    dtypes = {
        v["dtype"]
        for k, v in tensor_bytes_on_disk(tmp_path / "q" / checkpoints.WEIGHTS).items()
        if ".encoder.layer." in k and k.endswith(".weight") and len(v["shape"]) == 2
    }
    assert dtypes == {"I8"}


def test_engine_setting_fails_before_training_where_unavailable(tiny_model, monkeypatch):
    from prunebench.method.base import TrainingPlan

    method = methods.build("int8_dynamic", 1.0, {"kernel": "engine"})
    monkeypatch.setattr(quantized_mod, "_supported_engines", lambda: [])
    with pytest.raises(RuntimeError, match="kernel 'engine' requested"):
        method.prepare(tiny_model, TrainingPlan(total_steps=1, seed=0))
    methods.build("int8_dynamic", 1.0).prepare(tiny_model, TrainingPlan(total_steps=1, seed=0))  # auto: fine


def test_zero_codes_of_a_quantized_model_are_stored_weights_not_pruned_ones(tiny_model, tokenizer, tmp_path):
    """A weight whose low-bit code rounds to zero is still stored and multiplied: a quantized row's
    remaining fraction is its stored fraction and its theoretical speed-up the dense-kernel one, while the
    same zeros in a pruned model count as removed."""
    from prunebench.runner.jobs import _size_and_flops_metrics, quantizes

    dense = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for name, module in tiny_model.named_modules():
            if isinstance(module, nn.Linear) and "encoder.layer." in name:
                module.weight[module.weight.abs() < module.weight.abs().median()] = 0.0  # half the codes are 0
    folder = checkpoints.save_model(tiny_model, tokenizer, tmp_path / "model")
    pruned = _size_and_flops_metrics(tiny_model, dense, folder, seq_len=16, quantized=False)
    codes = _size_and_flops_metrics(tiny_model, dense, folder, seq_len=16, quantized=True)
    assert pruned["encoder_remaining"]["value"] == pytest.approx(0.5, abs=0.01)
    assert pruned["theoretical_speedup"]["value"] > 1.2
    assert codes["encoder_remaining"]["value"] == 1.0 == codes["encoder_stored_fraction"]["value"]
    assert codes["theoretical_speedup"]["value"] == pytest.approx(1.0)
    assert codes["encoder_nonzero_weights"] == pruned["encoder_nonzero_weights"]
    for name in methods.available():
        cls = methods.get(name)
        assert cls.quantizes == cls.granularity.endswith("-weights"), name
        assert quantizes({"details": {"method": {"granularity": cls.granularity}}}) == cls.quantizes, name
