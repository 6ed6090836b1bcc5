"""DeepSparse as a third, opt-in inference backend: the CPU engine that exploits element-wise sparsity.

PyTorch eager and ONNX Runtime run a pruned matrix with the same dense kernels as the unpruned one, so
element-wise sparsity gives them no speed-up; Neural Magic's DeepSparse (the engine behind the oBERT
paper's CPU speed-ups, Kurtic et al. 2022) skips the zeros. This module puts it beside the other two
backends, under the same protocol, without making the project depend on it:

- **its own environment**: ``deepsparse==1.8.0`` pins ``onnx<1.15`` and its ``sparsezoo`` needs
  ``numpy<2``, which the project cannot share. ``make deepsparse-env`` creates ``.venv-deepsparse``
  (``environments/deepsparse.txt``); the measure job exports the graphs here and runs
  ``prunebench/measure/deepsparse_worker.py`` there, as a subprocess, reading its JSON;
- **opt-in**: measure setting ``deepsparse: true`` (off by default); ``deepsparse_python`` or the
  environment variable ``PRUNEBENCH_DEEPSPARSE_PYTHON`` names another interpreter;
- **gated**: an x86 CPU with AVX2 or AVX-512 (``torch.backends.cpu.get_cpu_capability()``); elsewhere,
  or without the environment, the record says why in ``details.measurement.deepsparse.error``;
- **analytics off**: the worker runs with ``NM_DISABLE_ANALYTICS=1`` and refuses to run without it;
- **licence**: the Neural Magic DeepSparse Community License (evaluation in development and testing
  environments, no redistribution), recorded with every measurement; the package is never vendored.

Export (``export_static``): DeepSparse 1.8's bundled ONNX Runtime reads IR <= 9 / opset <= 19, so the
project's dynamo graph (opset 20, IR 10) does not load. The TorchScript exporter
(``torch.onnx.export(dynamo=False, opset_version=14)``) on a copy with eager attention gives graphs it
runs ~98% natively (recorded per engine as ``supported_ops``); the sequence length is static (a dynamic
one disables the optimised runtime), the batch dimension is set per engine. The same substitutions as
for ONNX Runtime apply (``onnx_runtime.export_ready``).

Int8 rows (``export_int8``): DeepSparse runs int8 only from statically quantized graphs, and an int8 row's
PyTorch model quantizes its activations at run time. Its graph here is the dequantized fp32 export (the
int8 weights x their scales, as for ONNX Runtime) quantized again by ONNX Runtime's static quantizer
(``INT8_QUANTIZER``: QOperator format, per-channel int8 weights, uint8 activations calibrated on the
timing sentences, the weight MatMuls only; of the formats tried on MiniLM it was the fastest in
DeepSparse 1.8, the QDQ format ran at half the fp32 dense speed). Its outputs are checked against the
PyTorch int8 model's within ``INT8_TOLERANCE`` of their largest value, at least 1 (two int8 schemes differ
by rounding), and it is timed against the dense fp32 graph. The record says which quantizer was used.

Check and timing: the worker compiles the measured model, the dense model and the dense model again per
batch size and times them in turn (``deepsparse_worker``); outputs must match PyTorch's within
``FP32_TOLERANCE`` else nothing is timed. Metrics: ``ds_latency_b<B>`` (ms), ``ds_speedup_b<B>`` = dense
/ measured, and ``ds_control_b<B>`` = dense / dense again, the timing's own noise. Nothing raises: a
failure is recorded in ``details["error"]`` and the record gets no ``ds_*`` metrics.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger("prunebench.deepsparse")

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("deepsparse_worker.py")
DEFAULT_PYTHON = ".venv-deepsparse/bin/python"
PYTHON_ENV = "PRUNEBENCH_DEEPSPARSE_PYTHON"
OPSET = 14
EXPORTER = (
    "torch.onnx.export(dynamo=False, opset_version=14) on a copy with eager attention; static sequence "
    "length, batch set per engine"
)
LICENCE = (
    "Neural Magic DeepSparse Community License: evaluation use in development and testing environments, "
    "no redistribution (deepsparse 1.8.0 wheel metadata); installed on request by make deepsparse-env, never vendored"
)
FP32_TOLERANCE = 1e-3
#: int8 graphs: largest output difference from the PyTorch int8 model, relative to its largest |output| (or to
#: 1 where that is smaller: an untrained head's near-zero logits)
INT8_TOLERANCE = 0.1
INT8_QUANTIZER = (
    "onnxruntime.quantization.quantize_static(QOperator, per_channel=True, weights QInt8, activations QUInt8, "
    "MatMul nodes with a weight initializer only), calibrated on the timing sentences, applied to the "
    "dequantized fp32 export of the int8 model"
)
SUPPORTED_CAPABILITIES = ("AVX2", "AVX512")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
WORKER_TIMEOUT_S = 3600


def interpreter(setting: str | None = None) -> Path:
    """The DeepSparse environment's python: the measure setting, else ``$PRUNEBENCH_DEEPSPARSE_PYTHON``, else
    ``.venv-deepsparse/bin/python`` of the checkout (a relative path is taken from the checkout)."""
    path = Path(setting or os.environ.get(PYTHON_ENV) or DEFAULT_PYTHON)
    return path if path.is_absolute() else REPO / path


def unavailable_reason(python: Path, capability: str | None = None) -> str | None:
    """Why DeepSparse cannot run here, or None: the CPU class, then the environment."""
    capability = capability or torch.backends.cpu.get_cpu_capability()
    if capability not in SUPPORTED_CAPABILITIES:
        return f"DeepSparse needs an x86 CPU with AVX2 or AVX-512; this CPU's capability is {capability!r}"
    if not python.is_file():
        return f"the DeepSparse environment is not installed ({python} not found): run `make deepsparse-env`"
    return None


def export_static(model: nn.Module, path: Path, sample: dict[str, torch.Tensor]) -> list[str]:
    """Export ``model`` for DeepSparse (module docstring) at the sample's sequence length; returns the
    output names. An int8 model is exported dequantized (fp32 weights = codes x scales)."""
    from prunebench.measure.onnx_runtime import _quiet, export_ready, output_names

    ready, _ = export_ready(model)
    if hasattr(ready, "set_attn_implementation"):
        ready.set_attn_implementation("eager")
    names = [n for n in INPUT_NAMES if n in sample]
    outputs = output_names(ready, sample)
    dynamic = {n: {0: "batch"} for n in [*names, *outputs]}
    with torch.inference_mode(False), _quiet():
        torch.onnx.export(
            ready,
            tuple(sample[n] for n in names),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic,
        )
    return outputs


def export_int8(model: nn.Module, path: Path, batches: dict[int, dict[str, torch.Tensor]]) -> list[str]:
    """The int8 graph of an int8 model for DeepSparse (module docstring): dequantized fp32 export, then
    ``INT8_QUANTIZER`` calibrated on every example of ``batches``. Returns the output names."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from prunebench.measure.onnx_runtime import _quiet

    sample = next(iter(batches.values()))
    fp32 = path.with_name(path.stem + "_fp32.onnx")
    outputs = export_static(model, fp32, sample)
    graph = onnx.load(str(fp32)).graph
    weights = {i.name for i in graph.initializer}
    nodes = [n.name for n in graph.node if n.op_type == "MatMul" and any(x in weights for x in n.input)]
    names = [n for n in INPUT_NAMES if n in sample]
    rows = [
        {n: batch[n][i : i + 1].numpy().astype(np.int64) for n in names}
        for batch in batches.values()
        for i in range(len(batch[names[0]]))
    ]

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(rows)

        def get_next(self):
            return next(self.rows, None)

    with _quiet():
        quantize_static(
            str(fp32),
            str(path),
            Calibration(),
            quant_format=QuantFormat.QOperator,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            nodes_to_quantize=nodes,
        )
    fp32.unlink()
    return outputs


class DeepSparseBackend:
    """The measure job's DeepSparse measurement of one model against its dense model (module docstring)."""

    def __init__(self, threads: int, python: str | None = None):
        self.threads = int(threads)
        self.python = interpreter(python)
        self.details: dict[str, Any] = {
            "enabled": True,
            "engine": "deepsparse",
            "engine_version": None,
            "exporter": EXPORTER,
            "opset": OPSET,
            "licence": LICENCE,
            "analytics": "disabled (NM_DISABLE_ANALYTICS=1)",
            "threads": self.threads,
            "cpu": None,
            "supported_ops": {},
            "check": {},
            "latency": {},
            "export_s": None,
            "int8": None,
            "wall_time_s": None,
            "error": None,
        }
        self.tolerance: dict[str, float] = {}

    @property
    def ok(self) -> bool:
        return self.details["error"] is None

    def fail(self, stage: str, message: str) -> None:
        self.details["error"] = f"{stage}: {message}"
        log.warning(
            "DeepSparse measurement failed at %s (the record is written without ds_* metrics)", self.details["error"]
        )

    def measure(
        self,
        model: nn.Module,
        dense: nn.Module,
        batches: dict[int, dict[str, torch.Tensor]],
        warmup: int,
        repeats: int,
        min_time_s: float = 0.0,
    ) -> DeepSparseBackend:
        """Export both models, run the worker on every batch size, check and keep its timings; never raises."""
        from prunebench.measure.onnx_runtime import pytorch_outputs
        from prunebench.quantization.int8 import is_quantized_model

        start = time.perf_counter()
        int8 = is_quantized_model(model)
        why = unavailable_reason(self.python)
        if why is not None:
            self.fail("unavailable", why)
            return self
        with tempfile.TemporaryDirectory(prefix="prunebench-deepsparse-") as tmp:
            tmp = Path(tmp)
            sample = next(iter(batches.values()))
            stage = "export"
            try:
                t0 = time.perf_counter()
                if int8:
                    outputs = export_int8(model, tmp / "model.onnx", batches)
                    self.details["int8"] = {"quantizer": INT8_QUANTIZER, "tolerance": INT8_TOLERANCE}
                else:
                    outputs = export_static(model, tmp / "model.onnx", sample)
                export_static(dense, tmp / "dense.onnx", sample)
                self.details["export_s"] = round(time.perf_counter() - t0, 3)
                stage = "reference outputs"
                files = {}
                for bs, batch in batches.items():
                    arrays = {n: batch[n].numpy().astype(np.int64) for n in INPUT_NAMES if n in batch}
                    for prefix, m in (("model_reference", model), ("dense_reference", dense)):
                        arrays.update({f"{prefix}/{k}": v for k, v in pytorch_outputs(m, batch).items()})
                    if int8:  # relative to the int8 model's largest |output|, at least 1
                        scale = max(float(np.max(np.abs(v))) for k, v in arrays.items() if k.startswith("model_"))
                        self.tolerance[f"b{bs}"] = INT8_TOLERANCE * max(scale, 1.0)
                    files[str(bs)] = str(tmp / f"b{bs}.npz")
                    np.savez(files[str(bs)], **arrays)
            except Exception as exc:  # noqa: BLE001 -- recorded, never raised
                self.fail(stage, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}")
                return self
            job = {
                "model": str(tmp / "model.onnx"),
                "dense": str(tmp / "dense.onnx"),
                "threads": self.threads,
                "warmup": warmup,
                "repeats": repeats,
                "min_time_s": min_time_s,
                "batches": files,
                "inputs": [n for n in INPUT_NAMES if n in sample],
                "outputs": outputs,
            }
            (tmp / "job.json").write_text(json.dumps(job))
            result = self._run_worker(tmp / "job.json")
        if result is not None:
            self._keep(result)
        self.details["wall_time_s"] = round(time.perf_counter() - start, 3)
        return self

    def _run_worker(self, job: Path) -> dict | None:
        env = {**os.environ, "NM_DISABLE_ANALYTICS": "1"}
        try:
            proc = subprocess.run(
                [str(self.python), str(WORKER), str(job)],
                capture_output=True,
                text=True,
                env=env,
                timeout=WORKER_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.fail("worker", f"{type(exc).__name__}: {exc}")
            return None
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        try:
            result = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            self.fail("worker", f"exit status {proc.returncode}: {tail[0][:300]}")
            return None
        if "error" in result:
            self.fail("worker", result["error"])
            return None
        return result

    def _keep(self, result: dict) -> None:
        self.details["engine_version"] = result.get("engine_version")
        self.details["cpu"] = result.get("cpu")
        for bs, entry in result["batches"].items():
            key = f"b{bs}"
            self.details["supported_ops"][key] = entry["supported_ops"]
            self.details["check"][key] = entry["max_abs_diff"]
            for name, worst in entry["max_abs_diff"].items():  # the measured graph at its own tolerance
                tolerance = self.tolerance.get(key, FP32_TOLERANCE) if name == "model" else FP32_TOLERANCE
                if not worst <= tolerance:
                    self.fail(
                        f"output check {key}",
                        f"outputs differ from PyTorch's by {worst:.3g} > {tolerance:.3g} ({name} graph)",
                    )
                    self.details["latency"] = {}
                    return
            self.details["latency"][key] = {"median_ms": entry["median_ms"], "samples_ms": entry["samples_ms"]}

    def metrics(self) -> dict[str, dict]:
        """``ds_latency_b<B>``, ``ds_speedup_b<B>`` and ``ds_control_b<B>`` per batch size (none after a failure)."""
        from prunebench.records.record import metric

        if not self.ok:
            return {}
        out = {}
        for key, timing in self.details["latency"].items():
            med = timing["median_ms"]
            out[f"ds_latency_{key}"] = metric(med["model"], "ms")
            out[f"ds_speedup_{key}"] = metric(med["dense"] / med["model"], "x")
            out[f"ds_control_{key}"] = metric(med["dense"] / med["dense_control"], "x")
        return out
