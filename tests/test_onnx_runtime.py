"""ONNX Runtime as the second inference backend: export every kind of model the
benchmark produces, check ORT's outputs against PyTorch's, time it in the measure job, report it."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

import methods  # noqa: E402
from prunebench.checkpoints import store as checkpoints  # noqa: E402
from prunebench.measure import onnx_runtime as ortb  # noqa: E402
from prunebench.method.base import TrainingPlan  # noqa: E402
from prunebench.quantization.int8 import quantize_encoder_linears  # noqa: E402
from prunebench.structure import surgery  # noqa: E402
from prunebench.structure.budget import prunable_linears  # noqa: E402
from prunebench.structure.factorized import factorized_layers  # noqa: E402

SEQ = 16


def _batch(tokenizer, n: int, seq: int) -> dict[str, torch.Tensor]:
    texts = [
        "a gorgeous , witty , seductive movie .",
        "bad",
        "the plot is nothing but boilerplate clichés",
        "it 's a charming and often affecting journey .",
        "unflinchingly bleak and desperate",
    ]
    texts = (texts * 3)[:n]
    return dict(tokenizer(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="pt"))


@torch.no_grad()
def _flop(model):
    """FLOP's finalize with one matrix at rank 0, one stored dense and the rest factorized."""
    method = methods.build("flop", 1.0, {"fill_to_budget": False})
    method.prepare(model, TrainingPlan(total_steps=10, seed=0))
    names = list(method.gates)
    for gate in method.gates.values():
        gate.log_alpha.copy_(torch.linspace(-6.0, 1.0, gate.n))
    method.gates[names[0]].log_alpha.fill_(-20.0)  # every component closed: rank 0
    method.gates[names[1]].log_alpha.fill_(20.0)  # every component open: stored as the dense product
    return method.finalize(model)


@torch.no_grad()
def _element_sparse(model):
    for linear in prunable_linears(model).values():
        w = linear.weight
        cut = w.abs().flatten().kthvalue(int(0.9 * w.numel())).values
        w.mul_(w.abs() > cut)
    return model


KINDS = {
    "dense": lambda m: m,
    "heads_uneven": lambda m: surgery.remove_heads(m, {0: [0, 2, 3], 1: [1]}),  # 1 and 3 heads
    "layers_removed": lambda m: surgery.remove_layers(m, [0]),
    "ffn_units_removed": lambda m: surgery.remove_ffn_units(m, {0: list(range(0, 128, 2)), 1: list(range(100))}),
    # a layer without heads and a layer without FFN units: zero-width matrices
    "emptied": lambda m: surgery.remove_ffn_units(surgery.remove_heads(m, {0: [0, 1, 2, 3]}), {1: list(range(128))}),
    "flop_factorized": _flop,
    "element_sparse": _element_sparse,
    "int8": quantize_encoder_linears,
}


def _saved_and_reloaded(model, tokenizer, folder):
    checkpoints.save_model(model, tokenizer, folder)
    return checkpoints.load_model(folder)


def _outputs(sess, batch):
    return ortb.run(sess, batch)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_exports_and_matches_pytorch(kind, tiny_model, tokenizer, tmp_path):
    model = _saved_and_reloaded(KINDS[kind](tiny_model), tokenizer, tmp_path / "ckpt")
    if kind == "flop_factorized":
        ranks = sorted(fl.rank for fl in factorized_layers(model).values())
        assert ranks[0] == 0 and any(isinstance(m, torch.nn.Linear) for m in prunable_linears(model).values())
    path = ortb.export_onnx(model, tmp_path / "model.onnx", SEQ, sample=_batch(tokenizer, 3, SEQ))
    assert [p.name for p in tmp_path.iterdir() if p.name != "ckpt"] == ["model.onnx"]  # self-contained, no temp files
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # plain ORT, default options
    int8 = kind == "int8"
    for n, seq in ((3, SEQ), (1, 12), (5, 24)):  # the batch and sequence axes are dynamic
        batch = _batch(tokenizer, n, seq)
        got = _outputs(sess, batch)["logits"]
        with torch.inference_mode():
            want = model(**batch).logits.numpy()
        assert got.shape == want.shape == (n, 2)
        if int8:
            assert np.abs(got - want).max() < 5e-2
            assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.75
        else:
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # portable: the file alone, in another folder, in a fresh session
    moved = tmp_path / "elsewhere" / "copy.onnx"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    onnx.checker.check_model(str(moved))
    fresh = onnxruntime.InferenceSession(str(moved), providers=["CPUExecutionProvider"])
    batch = _batch(tokenizer, 3, SEQ)
    np.testing.assert_array_equal(_outputs(fresh, batch)["logits"], _outputs(sess, batch)["logits"])
    graph = onnx.load(str(moved)).graph
    meta = ortb.read_metadata(moved)
    assert meta["opset"] == str(ortb.OPSET) and meta["exporter"] == ortb.EXPORTER
    ops = [n.op_type for n in graph.node]
    if int8:  # real integer kernels, on the 12 encoder matrices only (head and pooler stay fp32)
        assert ops.count("MatMulInteger") == 12 and "DynamicQuantizeLinear" in ops
        assert meta["int8_method"] == ortb.INT8_METHOD and json.loads(meta["int8"])["quantized_matmuls"] == 12
    else:
        assert "MatMulInteger" not in ops
    if kind in ("emptied", "flop_factorized"):  # no zero-size product is left for ORT's fusions to trip on
        # the rank-0 factorized matrix; the emptied attention output and FFN (in and out) of the other case
        assert int(meta["zero_width_layers"]) == {"flop_factorized": 1, "emptied": 3}[kind]
        assert all(0 not in list(t.dims) for t in graph.initializer)


def test_question_answering_model_exports_both_logits(tokenizer, tmp_path):
    from prunebench.checkpoints.pretrained import load_pretrained

    model = load_pretrained("tiny-random", 0, seed=0, kind="extractive_qa").eval()
    model = surgery.remove_heads(model, {1: [0, 3]})
    path = ortb.export_onnx(model, tmp_path / "qa.onnx", SEQ, sample=_batch(tokenizer, 2, SEQ))
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["start_logits", "end_logits"]
    batch = _batch(tokenizer, 4, 20)
    got = _outputs(sess, batch)
    with torch.inference_mode():
        want = model(**batch)
    for name in ("start_logits", "end_logits"):
        np.testing.assert_allclose(got[name], want[name].numpy(), atol=1e-4, rtol=0)


def test_session_settings_check_and_timing_protocol(tiny_model, tokenizer, tmp_path):
    path = ortb.export_onnx(tiny_model, tmp_path / "m.onnx", SEQ, sample=_batch(tokenizer, 2, SEQ))
    sess = ortb.session(path, threads=2)
    opts = sess.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)
    assert opts.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    batch = _batch(tokenizer, 4, SEQ)
    check = ortb.check_outputs(sess, tiny_model, batch)
    assert check["max_abs_diff"] < 1e-4 and check["argmax_agreement"] == 1.0
    other = copy.deepcopy(tiny_model)  # a different model: the check refuses to time a graph that does not match
    with torch.no_grad():
        other.classifier.bias += 0.01
    with pytest.raises(ortb.OnnxMismatchError):
        ortb.check_outputs(sess, other, batch)
    timing = ortb.compare_ort_latency(
        {"model": sess, "dense": ortb.session(path, 1)}, batch, warmup=1, repeats=3, min_time_s=0.05
    )
    assert len(timing["model"]["samples_ms"]) == len(timing["dense"]["samples_ms"]) >= 3
    assert timing["model"]["median_ms"] > 0 and timing["model"]["iqr_ms"] >= 0


def test_a_failing_fusion_is_disabled_and_recorded(monkeypatch, tmp_path):
    calls = []

    def fake_session(path, threads, disabled_optimizers=()):
        calls.append(tuple(disabled_optimizers))
        if not disabled_optimizers:
            raise RuntimeError(
                "[ONNXRuntimeError] : 1 : FAIL : Node (node_MatMul_47/MatMulAddFusion) Op (Gemm) "
                "[ShapeInferenceError] Dimension mismatch in unification between 0 and 32"
            )
        return "session"

    monkeypatch.setattr(ortb, "session", fake_session)
    assert ortb.open_session(tmp_path / "x.onnx", 2) == ("session", ["MatMulAddFusion"])
    assert calls == [(), ("MatMulAddFusion",)]

    def other_error(path, threads, disabled_optimizers=()):
        raise RuntimeError("NO_SUCHFILE")

    monkeypatch.setattr(ortb, "session", other_error)
    with pytest.raises(RuntimeError, match="NO_SUCHFILE"):
        ortb.open_session(tmp_path / "x.onnx", 2)


# ----- the measure job --------------------------------------------------------------------

MEASURE = {"seq_len": SEQ, "batch_sizes": [1, 4], "warmup": 0, "repeats": 2, "min_time_s": 0.0, "memory": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dense tiny checkpoint and an int8 one, each with its training summary (2 steps each)."""
    from prunebench.config import for_task, load_config_file, resolve
    from prunebench.runner.jobs import load_context, run_dense, run_method

    root = tmp_path_factory.mktemp("measure")
    raw = load_config_file()
    raw.update(profile="smoke")
    exp = for_task(resolve(raw, check_files=False), "sst2")
    exp["data"] = {**exp["data"], "train_limit": 32, "eval_limit": 8}
    exp["finetune"] = {**exp["finetune"], "steps": 2, "batch_size": 8, "eval_batch_size": 8, "max_seq_len": SEQ}
    ctx = load_context(exp, "sst2", threads=1)
    run_dense(ctx, 0, root / "dense", root / "dense.summary.json")
    run_method(ctx, "int8_dynamic", 1.0, 0, root / "dense", root / "int8", root / "int8.summary.json")
    return root


def _measure(root, name, record, **kw):
    from prunebench.runner.jobs import measure_and_record

    model = root / ("dense" if name == "dense" else name)
    return measure_and_record(
        root / f"{name}.summary.json", model, root / "dense", record, measure=kw.pop("measure", MEASURE), threads=2
    )


def test_measure_job_records_ort_metrics_beside_pytorch(trained, tmp_path):
    from prunebench.measure.disk import bytes_on_disk
    from prunebench.records import record as records

    dense = _measure(trained, "dense", tmp_path / "dense.json")
    rec = _measure(trained, "int8", tmp_path / "int8.json")
    assert records.read_record(tmp_path / "int8.json")["metrics"] == rec["metrics"]  # schema-valid, written
    for r in (dense, rec):
        ort = r["details"]["measurement"]["onnx_runtime"]
        assert ort["error"] is None, ort["error"]
        for bs in (1, 4):
            m = r["metrics"]
            assert m[f"ort_latency_b{bs}"]["unit"] == m[f"ort_dense_latency_b{bs}"]["unit"] == "ms"
            assert m[f"ort_speedup_b{bs}"]["unit"] == "x"
            assert m[f"ort_speedup_b{bs}"]["value"] == pytest.approx(
                m[f"ort_dense_latency_b{bs}"]["value"] / m[f"ort_latency_b{bs}"]["value"]
            )
            assert m[f"latency_b{bs}"]["value"] > 0  # PyTorch is still timed beside it
            lat = ort["latency"][f"b{bs}"]
            assert len(lat["model"]["samples_ms"]) == len(lat["dense"]["samples_ms"]) >= 2
            assert ort["check"][f"b{bs}"]["dense"]["max_abs_diff"] <= ortb.FP32_TOLERANCE
        assert ort["ort_version"] == onnxruntime.__version__ and ort["opset"] == ortb.OPSET
        assert ort["optimization_level"] == "ORT_ENABLE_ALL" and ort["session"]["intra_op_num_threads"] == 2
        assert ort["file"] == "model.onnx" and ort["file_bytes"] > 0
    assert (trained / "dense" / "model.onnx").is_file() and (trained / "int8" / "model.onnx").is_file()
    assert dense["details"]["measurement"]["onnx_runtime"]["int8_method"] is None
    ort = rec["details"]["measurement"]["onnx_runtime"]
    assert ort["int8_method"] == ortb.INT8_METHOD and ort["int8"]["quantized_matmuls"] == 12
    assert ort["dense_cached"] is True  # the dense record's model.onnx served as the dense graph
    check = ort["check"]["b4"]["model"]
    assert check["tolerance"] is None and check["argmax_agreement"] is not None and check["max_abs_diff"] < 0.05
    # disk size still means the checkpoint: model.onnx does not count
    disk = bytes_on_disk(trained / "int8")
    assert (
        rec["metrics"]["disk_bytes_dense_format"]["value"]
        == disk["dense"]
        == (trained / "int8" / "model.safetensors").stat().st_size
    )


def test_export_failure_is_recorded_not_raised(trained, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with caplog.at_level("WARNING", logger="prunebench.onnx_runtime"):
        rec = _measure(trained, "int8", tmp_path / "r.json")
    ort = rec["details"]["measurement"]["onnx_runtime"]
    assert ort["error"].startswith("export: OnnxExportError") and "exporter exploded" in ort["error"]
    assert not [k for k in rec["metrics"] if k.startswith("ort_")]
    assert rec["metrics"]["latency_b1"]["value"] > 0 and (tmp_path / "r.json").is_file()
    assert "without ort_* metrics" in caplog.text


def test_onnx_can_be_switched_off(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(ortb, "export_onnx", lambda *a, **k: pytest.fail("exported although onnx: false"))
    rec = _measure(trained, "int8", tmp_path / "r.json", measure={**MEASURE, "onnx": False, "batch_sizes": [1]})
    assert rec["details"]["measurement"]["onnx_runtime"] == {"enabled": False}
    assert not [k for k in rec["metrics"] if k.startswith("ort_")]


def test_config_accepts_the_onnx_key():
    from prunebench.config import ConfigError, load_config_file, resolve

    raw = load_config_file()
    raw.update(profile="smoke", measure={"seq_len": 32, "batch_sizes": [1], "warmup": 0, "repeats": 1, "onnx": False})
    assert resolve(raw, check_files=False)["measure"]["onnx"] is False
    raw["measure"]["onnx"] = "yes"
    with pytest.raises(ConfigError, match="onnx"):
        resolve(raw, check_files=False)


# ----- the report ---------------------------------------------------------------------------


def _with_ort(path, b1: float, b32: float):
    from prunebench.records.record import metric, read_record, write_record

    rec = read_record(path)
    for bs, s in ((1, b1), (32, b32)):
        rec["metrics"][f"ort_latency_b{bs}"] = metric(10.0 / s, "ms")
        rec["metrics"][f"ort_dense_latency_b{bs}"] = metric(10.0, "ms")
        rec["metrics"][f"ort_speedup_b{bs}"] = metric(s, "x")
    rec["metrics"]["theoretical_speedup"] = metric(2.5, "x")
    rec["details"]["measurement"]["onnx_runtime"] = {
        "enabled": True,
        "ort_version": "1.32.0",
        "opset": 20,
        "exporter": ortb.EXPORTER,
        "optimization_level": "ORT_ENABLE_ALL",
        "int8_method": None,
        "error": None,
    }
    write_record(rec, path)


def test_leaderboard_and_report_show_both_backends(tmp_path):
    from prunebench.report.leaderboard import write_leaderboard
    from prunebench.report.render import render_report
    from tests.report_records import build_results, record_path

    info = build_results(tmp_path)
    for seed in (0, 1):  # head_importance at 0.4 with ORT numbers; everything else without (published records)
        _with_ort(record_path(tmp_path, "head_importance", 0.4, seed), 1.5, 2.0)
    _with_ort(record_path(tmp_path, "dense", 1.0, 0), 1.0, 1.0)
    rows = write_leaderboard(info["expected"], tmp_path / "lb.md", tmp_path / "lb.csv")
    head = next(r for r in rows if r["method"] == "head_importance" and r["budget"] == 0.4)
    assert head["ort_speedup_b1"] == pytest.approx(1.5) and head["ort_speedup_bmax"] == pytest.approx(2.0)
    other = next(r for r in rows if r["method"] == "magnitude_global" and r["budget"] == 0.5)
    assert other["ort_speedup_b1"] is None and other["speedup_b1"] is not None
    md = (tmp_path / "lb.md").read_text()
    assert "ORT speed-up b1 | ORT speed-up bmax" in md and "second backend ONNX Runtime 1.32.0" in md
    line = next(l for l in md.splitlines() if l.startswith("| sst2 | 0.5 |") and "magnitude_global" in l)
    assert "| — | — |" in line
    assert "## Which backend decides the speed-up" in md
    backend_line = next(l for l in md.splitlines() if l.startswith("| sst2 | 0.4 | head_importance |"))
    assert "| 2.50 |" in backend_line and "both faster" in backend_line
    header = (tmp_path / "lb.csv").read_text().splitlines()[0].split(",")
    assert header.index("ort_speedup_b1") == header.index("speedup_bmax") + 1
    html = render_report(info["expected"], tmp_path / "r.html").read_text()
    board = html.split('id="leaderboard-table"')[1].split("</table>")[0]
    assert "ORT b1 ×" in board and "—" in board
    backends = html.split('id="backend-table"')[1].split("</table>")[0]
    assert "head_importance" in backends and "2.50" in backends and "dense<" not in backends
    assert "Which backend decides the speed-up" in html and "Second backend: ONNX Runtime 1.32.0" in html
