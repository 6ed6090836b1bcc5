"""DeepSparse, the opt-in third timing backend (prunebench/measure/deepsparse_backend.py).

Without its environment (``make deepsparse-env``) the backend records why and the record keeps everything
else; the tests that need the engine skip with that reason. With it, the measure job, run as the workflow's
rule runs it on models of the session's smoke run, writes DeepSparse latency, the dense-vs-dense control and
the engine's details into every record it can time.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from prunebench.measure import deepsparse_backend as ds
from prunebench.records.record import read_record
from tests.conftest import REPO, snakemake_env

ENGINE_MISSING = ds.unavailable_reason(ds.interpreter()) or (
    None
    if (ds.interpreter().parents[1] / ".installed").exists()
    else f"{ds.interpreter().parents[1]} was not completed by `make deepsparse-env`"
)
needs_engine = pytest.mark.skipif(ENGINE_MISSING is not None, reason=f"DeepSparse not available: {ENGINE_MISSING}")


def test_unavailable_reasons_name_the_cpu_and_the_command(tmp_path):
    assert "AVX2 or AVX-512" in ds.unavailable_reason(tmp_path / "python", capability="DEFAULT")
    assert "make deepsparse-env" in ds.unavailable_reason(tmp_path / "missing", capability="AVX2")
    fake = tmp_path / "python"
    fake.write_text("")
    assert ds.unavailable_reason(fake, capability="AVX512") is None


def test_interpreter_setting_then_environment_variable_then_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv(ds.PYTHON_ENV, raising=False)
    assert ds.interpreter() == REPO / ".venv-deepsparse/bin/python"
    monkeypatch.setenv(ds.PYTHON_ENV, str(tmp_path / "env-python"))
    assert ds.interpreter() == tmp_path / "env-python"
    assert str(ds.interpreter("/opt/ds/bin/python")) == "/opt/ds/bin/python"


def _fake_interpreter(tmp_path, stdout: str):
    """An executable standing in for the environment's python: prints ``stdout`` whatever its arguments."""
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_worker_failure_is_recorded_not_raised(tiny_model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(ds.torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    python = _fake_interpreter(tmp_path, json.dumps({"error": "RuntimeError: engine exploded"}))
    batch = dict(tokenizer(["a fine film", "dull"], padding="max_length", max_length=16, return_tensors="pt"))
    backend = ds.DeepSparseBackend(1, str(python)).measure(tiny_model, tiny_model, {2: batch}, 0, 1)
    assert not backend.ok and backend.details["error"] == "worker: RuntimeError: engine exploded"
    assert backend.metrics() == {} and backend.details["export_s"] is not None


def test_outputs_that_differ_from_pytorch_are_not_timed(tiny_model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(ds.torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    entry = {
        "supported_ops": {"model": 0.98, "dense": 0.98, "dense_control": 0.98},
        "max_abs_diff": {"model": 0.5, "dense": 0.0, "dense_control": 0.0},
        "samples_ms": {"model": [1.0], "dense": [2.0], "dense_control": [2.0]},
        "median_ms": {"model": 1.0, "dense": 2.0, "dense_control": 2.0},
    }
    python = _fake_interpreter(tmp_path, json.dumps({"engine_version": "1.8.0", "cpu": {}, "batches": {"2": entry}}))
    batch = dict(tokenizer(["a fine film", "dull"], padding="max_length", max_length=16, return_tensors="pt"))
    backend = ds.DeepSparseBackend(1, str(python)).measure(tiny_model, tiny_model, {2: batch}, 0, 1)
    assert backend.details["error"].startswith("output check b2: outputs differ from PyTorch's by 0.5")
    assert backend.metrics() == {}


def test_speed_up_and_control_from_the_worker_medians(tiny_model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(ds.torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    entry = {
        "supported_ops": {"model": 0.98, "dense": 0.98, "dense_control": 0.98},
        "max_abs_diff": {"model": 1e-6, "dense": 0.0, "dense_control": 0.0},
        "samples_ms": {"model": [4.0, 5.0], "dense": [10.0, 10.0], "dense_control": [9.0, 11.0]},
        "median_ms": {"model": 4.5, "dense": 10.0, "dense_control": 10.0},
    }
    python = _fake_interpreter(tmp_path, json.dumps({"engine_version": "1.8.0", "cpu": {}, "batches": {"2": entry}}))
    batch = dict(tokenizer(["a fine film", "dull"], padding="max_length", max_length=16, return_tensors="pt"))
    m = ds.DeepSparseBackend(1, str(python)).measure(tiny_model, tiny_model, {2: batch}, 0, 1).metrics()
    assert m["ds_latency_b2"] == {"value": 4.5, "unit": "ms"}
    assert m["ds_speedup_b2"]["value"] == pytest.approx(10.0 / 4.5) and m["ds_control_b2"]["value"] == 1.0


def test_worker_refuses_to_run_with_analytics_on(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NM_DISABLE_ANALYTICS"}
    out = subprocess.run([sys.executable, str(ds.WORKER), str(tmp_path / "job.json")], env=env, capture_output=True)
    assert out.returncode == 1 and b"NM_DISABLE_ANALYTICS=1 is not set" in out.stdout


def test_backend_table_gets_deepsparse_columns_only_with_its_numbers():
    from prunebench.report.collect import aggregate
    from prunebench.report.leaderboard import backend_markdown, backend_rows, best_backend
    from tests.report_records import RUNS, make_record

    recs = [make_record(m, b, 0, RUNS[(m, b)]) for m, b in (("dense", 1.0), ("magnitude_global", 0.1))]
    for rec in recs:
        for bs in (1, 32):
            rec["metrics"][f"ort_speedup_b{bs}"] = {"value": 1.0, "unit": "x"}
    assert "DeepSparse" not in "\n".join(backend_markdown(backend_rows(aggregate(recs))))
    recs[1]["metrics"].update(
        {
            "ds_speedup_b1": {"value": 2.9, "unit": "x"},
            "ds_speedup_b32": {"value": 2.5, "unit": "x"},
            "ds_control_b32": {"value": 1.02, "unit": "x"},
        }
    )
    rows = aggregate(recs)
    (table,) = backend_rows(rows)
    assert table["has_ds"] and table["best_backend_bmax"] == "DeepSparse" and table["best_speedup_bmax"] == 2.5
    assert table["verdict_bmax"].endswith("DeepSparse faster")
    md = "\n".join(backend_markdown([table]))
    assert "| DeepSparse b1 |" in md and "| 2.50 | 1.02 |" in md
    mg = next(r for r in rows if r.method == "magnitude_global")
    assert best_backend(mg, None) == (None, None)


@needs_engine
def test_smoke_measure_job_writes_deepsparse_numbers_into_every_record_it_can_time(smoke_run, tmp_path):
    """The measure rule's command, with ``deepsparse: true``, on an element-wise, a 2:4 and a structured model of
    the session's smoke run: DeepSparse latency, control and engine details in each record."""
    from tests.conftest import smoke_profile

    measure = {**smoke_profile()["measure"], "deepsparse": True, "memory": False, "onnx": False}
    results = smoke_run.results
    for method in ("magnitude_global", "magnitude_2to4", "torch_pruning"):
        record = tmp_path / f"{method}.json"
        cmd = [
            sys.executable,
            "-m",
            "prunebench",
            "measure",
            "--summary",
            str(results / f"summaries/sst2/{method}/0.1/seed0.json"),
            "--model-dir",
            str(results / f"models/sst2/{method}/0.1/seed0"),
            "--dense-dir",
            str(results / "models/sst2/dense/seed0"),
            "--measure",
            json.dumps(measure),
            "--record",
            str(record),
            "--threads",
            "1",
        ]
        out = subprocess.run(cmd, cwd=REPO, env=snakemake_env(), capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        rec = read_record(record)
        details = rec["details"]["measurement"]["deepsparse"]
        assert details["error"] is None, details["error"]
        assert details["engine_version"] == "1.8.0" and "Community License" in details["licence"]
        for bs in measure["batch_sizes"]:
            assert rec["metrics"][f"ds_latency_b{bs}"]["value"] > 0
            assert rec["metrics"][f"ds_control_b{bs}"]["value"] > 0
            assert min(details["supported_ops"][f"b{bs}"].values()) > 0.5
            assert max(details["check"][f"b{bs}"].values()) <= ds.FP32_TOLERANCE


def test_speed_up_verdicts_use_the_control_spread_as_tolerance():
    """A 1.25x speed-up is 'faster' when the job's control is 1.02, 'same speed' when the control itself is 1.3."""
    from prunebench.report.collect import aggregate
    from prunebench.report.leaderboard import backend_rows
    from tests.report_records import RUNS, make_record

    verdicts = {}
    for control in (1.02, 1.3):
        recs = [make_record(m, b, 0, RUNS[(m, b)]) for m, b in (("dense", 1.0), ("magnitude_global", 0.1))]
        for rec in recs:
            for bs in (1, 32):
                rec["metrics"][f"ort_speedup_b{bs}"] = {"value": 1.25, "unit": "x"}
                rec["metrics"][f"ort_control_b{bs}"] = {"value": control, "unit": "x"}
                rec["metrics"][f"speedup_b{bs}"] = {"value": 1.25, "unit": "x"}
                rec["metrics"][f"control_b{bs}"] = {"value": control, "unit": "x"}
        (row,) = backend_rows(aggregate(recs))
        verdicts[control] = (row["verdict_bmax"], row["tolerance_bmax"])
    assert verdicts[1.02] == ("both faster", pytest.approx(0.02))
    assert verdicts[1.3] == ("both same speed", pytest.approx(0.3))


def test_speed_up_pareto_plot_uses_each_rows_best_backend_and_labels_it():
    from prunebench.report import figures
    from prunebench.report.collect import aggregate
    from tests.report_records import RUNS, make_record

    recs = [
        make_record(m, b, 0, RUNS[(m, b)])
        for m, b in (("dense", 1.0), ("magnitude_global", 0.1), ("magnitude_global", 0.5))
    ]
    speedups = {  # (method, budget) -> backend -> speed-up at b32
        ("dense", 1.0): {"speedup": 1.0, "ort_speedup": 0.98},
        ("magnitude_global", 0.1): {"speedup": 1.01, "ort_speedup": 0.99, "ds_speedup": 2.5},
        ("magnitude_global", 0.5): {"speedup": 1.3, "ort_speedup": 1.6},
    }
    for rec in recs:
        for key, value in speedups[(rec["method"], rec["budget"])].items():
            rec["metrics"][f"{key}_b32"] = {"value": value, "unit": "x"}
    fig = figures.pareto_plot(aggregate(recs), "speedup_best")
    ax = fig.axes[0]
    labels = {(round(t.xy[0], 2), t.get_text()) for t in ax.texts}
    assert labels == {(1.0, "PT"), (2.5, "DS"), (1.6, "ORT")}
    assert ax.get_xscale() == "log" and "best backend" in ax.get_xlabel()


def _int8_tiny(tiny_model):
    """The tiny model with half of each encoder matrix pruned by magnitude, then int8 (a compound row's model)."""
    import copy

    import torch

    from prunebench.quantization.int8 import quantize_encoder_linears
    from prunebench.structure.budget import prunable_linears

    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for module in prunable_linears(model).values():
            w = module.weight
            w[w.abs() < w.abs().median()] = 0.0
    return quantize_encoder_linears(model, kernel="auto").eval()


def test_int8_model_gets_a_static_int8_graph_close_to_its_pytorch_outputs(tiny_model, tokenizer, tmp_path):
    """Without the engine: the graph DeepSparse would get for an int8 row is ORT-statically quantized
    (QOperator: integer MatMuls) and computes what the PyTorch int8 model does, within the int8 tolerance."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from prunebench.measure.onnx_runtime import pytorch_outputs

    model = _int8_tiny(tiny_model)
    batch = dict(tokenizer(["a fine film", "dull and long"], padding="max_length", max_length=16, return_tensors="pt"))
    outputs = ds.export_int8(model, tmp_path / "int8.onnx", {2: batch})
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert ops & {"QLinearMatMul", "MatMulInteger"}, ops
    assert not (tmp_path / "int8_fp32.onnx").exists()
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: batch[i.name].numpy().astype(np.int64) for i in session.get_inputs()}
    got = session.run(outputs, feed)
    expected = pytorch_outputs(model, batch)
    for name, value in zip(outputs, got):
        scale = max(float(np.abs(expected[name]).max()), 1.0)
        assert float(np.abs(value - expected[name]).max()) <= ds.INT8_TOLERANCE * scale, name


@needs_engine
def test_int8_model_is_timed_in_deepsparse_against_the_dense_fp32_graph(tiny_model, tokenizer):
    model = _int8_tiny(tiny_model)
    batch = dict(tokenizer(["a fine film", "dull and long"], padding="max_length", max_length=16, return_tensors="pt"))
    backend = ds.DeepSparseBackend(1).measure(model, tiny_model, {2: batch}, 0, 2)
    assert backend.ok, backend.details["error"]
    assert backend.details["int8"]["quantizer"] == ds.INT8_QUANTIZER
    metrics = backend.metrics()
    assert metrics["ds_speedup_b2"]["value"] > 0 and metrics["ds_control_b2"]["value"] > 0
