"""ONNX Runtime as a second inference backend: export, check against PyTorch, time.

Every model the measure job times in PyTorch is also exported to ONNX and timed in
``onnxruntime`` on the CPU, with the same thread count, batch sizes, sequence length and
timing protocol (``prunebench.measure.latency.time_in_turn``: warm-up, the pruned and the
dense session timed in turn within every round, at least ``repeats`` rounds and at least
``min_time_s`` seconds; median, IQR and every sample). Speed-up = ORT dense / ORT pruned, so
a method's speed-up can be read on two backends: PyTorch eager and a graph runtime that
fuses operators.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript), opset
``OPSET`` (20: native ``Gelu`` and ``LayerNormalization``), graph optimised by the exporter
(constant folding). Why not the TorchScript exporter (``dynamo=False``): with torch 2.13 and
transformers 5 it traces BERT's mask and position code into a graph whose logits differ from
PyTorch's by ~1e-2 on the tiny test model (measured; the dynamo graph agrees to ~1e-8), and it
is deprecated. The dynamo exporter needs the ``onnxscript`` package.

Dynamic axes: batch (``Dim("batch")``) and sequence length (``Dim("seq")``, at most
``max_position_embeddings``) of every input (``input_ids``, ``token_type_ids``,
``attention_mask``), so one file serves every batch size; the export sample has batch 2
(``torch.export`` specialises a dimension whose sample size is 1). Inputs are int64; outputs
are the model output's tensors by name (``logits``, or ``start_logits``/``end_logits`` for
SQuAD). The file is self-contained (no external data) and carries ``metadata_props``
(``prunebench.*``: exporter, opset, torch version, sha256 of the checkpoint's weights).

Export-time substitutions (``export_ready``, on a copy; the PyTorch model is untouched):

- a linear map with no inner dimension -- a FLOP ``FactorizedLinear`` of rank 0 (every rank
  component pruned) or an ``nn.Linear`` with 0 input features (the attention output of a
  layer whose heads were all removed, the FFN output of a layer with no units left) -- is
  exported as its bias broadcast over the tokens (``_BiasOnly``), which is what it computes;
  one with 0 output features becomes an empty slice (``_NoFeatures``). Why: ONNX Runtime's
  ``MatMulAddFusion`` rewrites ``MatMul -> Add(bias)`` on a 3-D input of known shape into
  ``Reshape -> Gemm -> Reshape``; for K = 0 its Reshape target ``{M, 0}`` means "copy input
  dimension 1" under ONNX's Reshape rules (``allowzero=0``), and session creation fails with
  "Node (.../MatMulAddFusion) Op (Gemm) [ShapeInferenceError] Dimension mismatch in
  unification between 0 and <seq>" (reproduced with ORT 1.31.1 on a FLOP checkpoint with a
  rank-0 matrix exported with static shapes; ORT 1.32.0 loads it). With the substitution the
  graph has no zero-size product at all, whatever the ORT version or shapes;
- should a graph optimizer still fail to build a session, ``open_session`` retries once
  with only that optimizer (named in the error: ``.../<Name>Fusion``) disabled through
  ``disabled_optimizers`` and the record says so (``disabled_optimizers``);
- int8 rows (``prunebench.quantization.int8.Int8DynamicLinear``, whose quantized-engine and
  ``torch._int_mm`` kernels do not export): each int8 layer becomes an ``nn.Linear`` with the dequantized weight
  (``int8 x per-channel scale``); the fp32 graph is exported and quantized with
  ``onnxruntime.quantization.quantize_dynamic`` (``per_channel=True``, ``QInt8`` weights,
  only the MatMuls of the layers that are int8 in PyTorch -- embeddings, pooler and task head
  stay fp32 as in the PyTorch row). ORT then runs integer kernels (``DynamicQuantizeLinear`` +
  ``MatMulInteger``, fused at load into ``DynamicQuantizeMatMul``/``MatMulIntegerToFloat``).
  The weights round-trip exactly (symmetric per-channel int8 of ``q x s`` is ``q`` again);
  activations differ: ORT quantizes them per tensor (uint8, asymmetric), PyTorch per token
  (symmetric; the engine kernel with a 7-bit range), so the outputs differ slightly: recorded as
  the max abs difference and the argmax agreement, not asserted.

Sessions (``session``): CPU execution provider, ``intra_op_num_threads = threads`` (the
measure job's thread count; ORT counts the calling thread), ``inter_op_num_threads = 1``,
sequential execution, graph optimization level ``ORT_ENABLE_ALL`` (ORT's default: constant
folding, the transformer fusions -- SkipLayerNorm, BiasGelu, Attention where matched, the
int8 fusions -- and layout optimizations; what a deployment gets).

Check before timing (``check_outputs``): ORT's outputs on the timing batch against PyTorch's;
fp32 graphs must agree within ``FP32_TOLERANCE`` (1e-3 absolute) else the model is not timed
(an ``OnnxMismatchError`` recorded as the error); int8 graphs record the max abs difference
and the argmax agreement rate.

The measure job (``prunebench.runner.jobs.measure_and_record``) uses ``OrtBackend``: it writes
the measured model's graph into its model folder as ``model.onnx`` (an artefact of the run;
``bytes_on_disk`` counts only the checkpoint files), reuses the dense folder's
``model.onnx`` when its metadata says it was exported from the same weights with the same
exporter (else re-exports it there, atomically, or in a temporary folder if the dense folder
is read-only), and never raises: a failed export, session or check is recorded as
``details.measurement.onnx_runtime.error`` (and logged), and the record gets no ``ort_*``
metrics.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import json
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunebench.measure.latency import time_in_turn

log = logging.getLogger("prunebench.onnx_runtime")

OPSET = 20
ONNX_FILE = "model.onnx"
EXPORTER = "torch.onnx.export(dynamo=True) (torch.export + onnxscript)"
OPTIMIZATION_LEVEL = "ORT_ENABLE_ALL"
FP32_TOLERANCE = 1e-3
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
INT8_METHOD = (
    "ONNX export of the dequantized fp32 graph (int8 weight x per-channel scale), then "
    "onnxruntime.quantization.quantize_dynamic(per_channel=True, weight_type=QInt8, reduce_range=False) "
    "on the MatMuls of the int8 encoder layers: int8 per-output-channel weights, activations quantized "
    "at run time per tensor (uint8, asymmetric) -> DynamicQuantizeLinear + MatMulInteger "
    "(fused by ORT into DynamicQuantizeMatMul / MatMulIntegerToFloat)"
)
#: Bump when the export changes in a way that makes cached dense graphs stale.
EXPORT_VERSION = "1"
META_PREFIX = "prunebench."


class OnnxExportError(RuntimeError):
    """The model could not be exported to ONNX (or quantized); the message says which step."""


class OnnxMismatchError(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's by more than the tolerance."""


def versions() -> dict[str, str | None]:
    """Versions of the packages an ONNX measurement depends on (None where not installed)."""
    out: dict[str, str | None] = {"torch": torch.__version__}
    for name in ("onnxruntime", "onnx", "onnxscript"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 -- a missing package is reported as None
            out[name] = None
    return out


# ----- export ------------------------------------------------------------------------------


class _BiasOnly(nn.Module):
    """A linear map with no inner dimension (rank 0, or 0 input features): its bias per token."""

    def __init__(self, bias: torch.Tensor | None, out_features: int):
        super().__init__()
        self.out_features = int(out_features)
        b = bias.detach().clone() if bias is not None else torch.zeros(self.out_features)
        self.register_buffer("bias", b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.to(x.dtype).expand(*x.shape[:-1], self.out_features)


class _NoFeatures(nn.Module):
    """A linear map with 0 output features: an empty slice of its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :0]


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


@torch.no_grad()
def export_ready(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of ``model`` (eval mode, CPU) that exports to ONNX, and what was substituted.

    Int8 layers become fp32 ``nn.Linear`` with the dequantized weight; linear maps with no
    inner dimension become ``_BiasOnly``, those with no output features ``_NoFeatures``
    (see the module docstring). Returns ``(copy, {"int8_layers": [...], "zero_width": [...]})``.
    """
    from prunebench.quantization.int8 import Int8DynamicLinear
    from prunebench.structure.factorized import FactorizedLinear

    out = copy.deepcopy(model).cpu().eval()
    int8, zero = [], []
    for name, module in list(out.named_modules()):
        if not name or any(name.startswith(z + ".") for z in zero):  # inside a module already replaced
            continue
        if isinstance(module, Int8DynamicLinear):
            lin = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            lin.weight.copy_(module.dequantized_weight())
            if module.bias is not None:
                lin.bias.copy_(module.bias.float())
            _set_module(out, name, lin.eval())
            int8.append(name)
            module = lin
        if isinstance(module, FactorizedLinear):
            if module.rank == 0 or module.in_features == 0:
                _set_module(out, name, _BiasOnly(module.out_proj.bias, module.out_features))
                zero.append(name)
            elif module.out_features == 0:
                _set_module(out, name, _NoFeatures())
                zero.append(name)
        elif isinstance(module, nn.Linear):
            if module.in_features == 0:
                _set_module(out, name, _BiasOnly(module.bias, module.out_features))
                zero.append(name)
            elif module.out_features == 0:
                _set_module(out, name, _NoFeatures())
                zero.append(name)
    return out, {"int8_layers": int8, "zero_width": zero}


def default_sample(model: nn.Module, seq_len: int, batch_size: int = 2) -> dict[str, torch.Tensor]:
    """An export sample: random token ids, one sentence segment, no padding."""
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 1000) or 1000)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, vocab - 1), vocab, (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)}


def _export_sample(sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Batch 2 (a dimension of sample size 1 would be specialised by torch.export)."""
    out = {}
    for k, v in sample.items():
        v = v.detach().cpu()
        out[k] = v[:1].repeat(2, *([1] * (v.dim() - 1))) if v.shape[0] != 2 else v
    return out


def output_names(model: nn.Module, sample: dict[str, torch.Tensor]) -> list[str]:
    """The model's output tensors by name, in the order the exported graph has them."""
    with torch.inference_mode():
        out = model(**sample)
    if isinstance(out, torch.Tensor):
        return ["output"]
    if hasattr(out, "items"):
        return [k for k, v in out.items() if v is not None]
    return [f"output_{i}" for i in range(len(out))]


def pytorch_outputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """PyTorch's outputs on ``batch`` as float32 numpy arrays, by name (the graph's output names)."""
    with torch.inference_mode():
        out = model(**batch)
    if isinstance(out, torch.Tensor):
        return {"output": out.float().numpy()}
    if hasattr(out, "items"):
        return {k: v.float().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
    return {f"output_{i}": v.float().numpy() for i, v in enumerate(out)}


def _quiet():
    """Silence the exporter's progress lines and warnings (they are not errors)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    # "" (the root logger): onnxruntime.quantization logs its advice ("consider pre-processing") there
    for name in (
        "torch.onnx",
        "torch.export",
        "torch._export",
        "onnxscript",
        "torch.fx.experimental.symbolic_shapes",
        "",
    ):
        logger = logging.getLogger(name)
        previous = logger.level
        logger.setLevel(logging.ERROR)
        stack.callback(logger.setLevel, previous)
    return stack


def _scope(node) -> str:
    """The module path of an exported node (``pkg.torch.onnx.name_scopes`` metadata), or ''."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
                return str(scopes[-1]) if scopes else ""
            except (ValueError, SyntaxError):
                return ""
    return ""


def _quantize(fp32_path: Path, out_path: Path, layers: list[str]) -> dict[str, Any]:
    """``quantize_dynamic`` the MatMuls of ``layers`` (module names) of an exported fp32 graph."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32_path)).graph
    initializers = {i.name for i in graph.initializer}
    wanted = set(layers)
    candidates = [n for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in initializers]
    chosen = [n.name for n in candidates if _scope(n) in wanted]
    selection = "MatMuls of the int8 encoder layers (by the exporter's name_scopes metadata)"
    if not chosen:  # no usable metadata: every MatMul with a constant weight
        chosen = [n.name for n in candidates]
        selection = "every MatMul with a constant weight (the graph has no name_scopes metadata)"
    if not chosen:
        raise OnnxExportError("int8: no MatMul with a constant weight found to quantize")
    quantize_dynamic(
        str(fp32_path),
        str(out_path),
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=chosen,
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )
    ops: dict[str, int] = {}
    for n in onnx.load(str(out_path)).graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {
        "quantized_matmuls": len(chosen),
        "int8_layers": len(layers),
        "selection": selection,
        "quantized_graph_ops": {
            k: ops[k]
            for k in sorted(ops)
            if k in ("MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMul", "Gemm")
        },
    }


def _set_metadata(path: Path, metadata: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for k, v in metadata.items():
        key = META_PREFIX + k
        if key in existing:
            existing[key].value = str(v)
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(v)
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``prunebench.*`` metadata of an ONNX file written by ``export_onnx`` (prefix removed)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def export_onnx(
    model: nn.Module,
    path: str | Path,
    seq_len: int,
    sample: dict[str, torch.Tensor] | None = None,
    opset: int = OPSET,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Export ``model`` to a self-contained ONNX file at ``path`` (written atomically); returns it.

    Batch and sequence axes are dynamic. A model with ``Int8DynamicLinear`` layers is exported
    dequantized and quantized with ORT's ``quantize_dynamic`` (module docstring). The file's
    ``metadata_props`` say how it was made (``read_metadata``). Raises ``OnnxExportError``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ready, subs = export_ready(model)
    sample = _export_sample(sample if sample is not None else default_sample(ready, seq_len))
    names = list(sample)
    outputs = output_names(ready, sample)
    max_pos = int(getattr(getattr(ready, "config", None), "max_position_embeddings", 0) or 0)
    seq = torch.export.Dim("seq", min=1, max=max_pos) if max_pos else torch.export.Dim("seq", min=1)
    batch = torch.export.Dim("batch", min=1)
    dynamic = {k: ({0: batch, 1: seq} if sample[k].dim() >= 2 else {0: batch}) for k in names}
    meta = {
        "exporter": EXPORTER,
        "opset": opset,
        "export_version": EXPORT_VERSION,
        "torch": torch.__version__,
        "dynamic_axes": "batch, seq",
        "inputs": ",".join(names),
        "outputs": ",".join(outputs),
        "zero_width_layers": len(subs["zero_width"]),
        **(metadata or {}),
    }
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        try:
            with _quiet():
                program = torch.onnx.export(
                    ready,
                    (),
                    kwargs=sample,
                    dynamo=True,
                    dynamic_shapes=dynamic,
                    input_names=names,
                    output_names=outputs,
                    opset_version=opset,
                    verbose=False,
                    external_data=False,
                )
                program.save(str(fp32), external_data=False)
        except Exception as exc:  # noqa: BLE001 -- any exporter failure is reported as one error
            raise OnnxExportError(
                f"torch.onnx.export (dynamo, opset {opset}) failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        final = fp32
        if subs["int8_layers"]:
            final = Path(tmp) / "int8.onnx"
            try:
                with _quiet():
                    info = _quantize(fp32, final, subs["int8_layers"])
            except OnnxExportError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise OnnxExportError(
                    f"int8: onnxruntime quantize_dynamic failed: {type(exc).__name__}: {_first_line(exc)}"
                ) from exc
            meta.update(int8_method=INT8_METHOD, int8=json.dumps(info, sort_keys=True))
        _set_metadata(final, meta)
        os.replace(final, path)
    return path


def _first_line(exc: BaseException, limit: int = 500) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line[:limit]


# ----- sessions, outputs, timing ------------------------------------------------------------


def session(path: str | Path, threads: int, disabled_optimizers: list[str] | tuple[str, ...] = ()):
    """An ``onnxruntime.InferenceSession`` on the CPU: ``threads`` intra-op threads, 1 inter-op,
    sequential execution, ``ORT_ENABLE_ALL``; ``disabled_optimizers`` switched off by name."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVEL)
    so.log_severity_level = 3  # errors only: ORT's warnings would flood the job's log
    kwargs = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], **kwargs)


_FAILED_OPTIMIZER = re.compile(r"/(\w+Fusion)\b")


def open_session(path: str | Path, threads: int) -> tuple[Any, list[str]]:
    """``session(path, threads)``; if a graph optimizer breaks session creation (the error names
    a node ``.../<Name>Fusion``), once more with that optimizer disabled. Returns the session and
    the optimizers disabled (empty when none was)."""
    try:
        return session(path, threads), []
    except Exception as exc:  # noqa: BLE001 -- onnxruntime raises its own Fail/InvalidGraph types
        names = sorted(set(_FAILED_OPTIMIZER.findall(str(exc))))
        if not names:
            raise
        log.warning(
            "ONNX Runtime: %s failed building a session for %s (%s); retrying with it disabled",
            ", ".join(names),
            path,
            _first_line(exc),
        )
        return session(path, threads, names), names


def feeds(sess, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The session's inputs from a tokenized batch (int64 numpy arrays, by input name)."""
    out = {}
    for inp in sess.get_inputs():
        if inp.name not in batch:
            raise KeyError(f"the ONNX graph needs input {inp.name!r}, the batch has {sorted(batch)}")
        out[inp.name] = np.ascontiguousarray(batch[inp.name].detach().cpu().numpy().astype(np.int64))
    return out


def run(sess, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """ORT's outputs on ``batch``, by output name."""
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds(sess, batch))))


def check_outputs(
    sess, model: nn.Module, batch: dict[str, torch.Tensor], int8: bool = False, tolerance: float = FP32_TOLERANCE
) -> dict[str, Any]:
    """ORT's outputs against PyTorch's on ``batch``: the max abs difference (and, for int8, the
    argmax agreement rate). An fp32 graph beyond ``tolerance`` raises ``OnnxMismatchError``."""
    got = run(sess, batch)
    want = pytorch_outputs(model, batch)
    missing = sorted(set(want) - set(got))
    if missing:
        raise OnnxMismatchError(f"the ONNX graph lacks outputs {missing} (has {sorted(got)})")
    diff = max(float(np.max(np.abs(got[k] - want[k]))) if want[k].size else 0.0 for k in want)
    agree = [float(np.mean(np.argmax(got[k], -1) == np.argmax(want[k], -1))) for k in want if want[k].size]
    out = {
        "max_abs_diff": diff,
        "argmax_agreement": float(np.mean(agree)) if agree else None,
        "tolerance": None if int8 else tolerance,
        "outputs": sorted(want),
    }
    if not int8 and not diff <= tolerance:
        raise OnnxMismatchError(f"ONNX Runtime's outputs differ from PyTorch's by {diff:.3g} (> {tolerance:g})")
    return out


def compare_ort_latency(
    sessions: dict[str, Any],
    batch: dict[str, torch.Tensor],
    warmup: int,
    repeats: int,
    min_time_s: float = 0.0,
    max_rounds: int = 200,
) -> dict[str, dict]:
    """Median latency of each named session on ``batch``, timed in turn within every round
    (``latency.time_in_turn``: the protocol of ``compare_latency``). The inputs are converted
    once, outside the timed calls; the thread count is the sessions' own."""
    prepared = {name: (s, feeds(s, batch), [o.name for o in s.get_outputs()]) for name, s in sessions.items()}
    return time_in_turn(
        {name: (lambda s=s, f=f, o=o: s.run(o, f)) for name, (s, f, o) in prepared.items()},
        warmup,
        repeats,
        min_time_s,
        max_rounds,
    )


# ----- the measure job's ORT measurement ----------------------------------------------------


def _weights_digest(folder: Path) -> str | None:
    """sha256 of the checkpoint's weights (from its ``checksums.json``), or None."""
    try:
        return json.loads((Path(folder) / "checksums.json").read_text()).get("model.safetensors")
    except (OSError, ValueError, AttributeError):
        return None


def _cache_key(folder: Path) -> dict[str, str]:
    v = versions()
    return {
        "source_sha256": str(_weights_digest(folder)),
        "torch": str(v["torch"]),
        "onnxscript": str(v["onnxscript"]),
        "opset": str(OPSET),
        "export_version": EXPORT_VERSION,
    }


def _is_current(path: Path, folder: Path) -> bool:
    """Whether ``path`` is a graph ``export_onnx`` wrote from ``folder``'s weights, as this code would."""
    if not path.is_file() or _weights_digest(folder) is None:
        return False
    try:
        meta = read_metadata(path)
    except Exception:  # noqa: BLE001 -- an unreadable file is simply re-exported
        return False
    return all(meta.get(k) == v for k, v in _cache_key(folder).items())


class OrtBackend:
    """The measure job's ONNX Runtime measurement of one model against its dense model.

    ``prepare`` exports both graphs, opens the sessions and fills ``details``; ``time_batch``
    checks the outputs on a timing batch and times the two sessions in turn. Nothing raises:
    the first failure is kept in ``details["error"]`` (and logged) and makes ``ok`` False.
    """

    def __init__(self, threads: int):
        v = versions()
        self.threads = int(threads)
        self.sessions: dict[str, Any] = {}
        self.models: dict[str, nn.Module] = {}
        self.int8 = False
        self.details: dict[str, Any] = {
            "enabled": True,
            "ort_version": v["onnxruntime"],
            "onnx_version": v["onnx"],
            "onnxscript_version": v["onnxscript"],
            "opset": OPSET,
            "exporter": EXPORTER,
            "optimization_level": OPTIMIZATION_LEVEL,
            "session": {
                "provider": "CPUExecutionProvider",
                "intra_op_num_threads": self.threads,
                "inter_op_num_threads": 1,
                "execution_mode": "ORT_SEQUENTIAL",
            },
            "dynamic_axes": {"batch": "Dim('batch')", "seq": "Dim('seq')"},
            "int8_method": None,
            "int8": None,
            "file": None,
            "file_bytes": None,
            "dense_file": None,
            "dense_file_bytes": None,
            "dense_cached": None,
            "substitutions": None,
            "disabled_optimizers": [],
            "export_s": {},
            "check": {},
            "latency": {},
            "error": None,
        }

    @property
    def ok(self) -> bool:
        return self.details["error"] is None

    def fail(self, stage: str, exc: BaseException) -> None:
        if self.ok:
            self.details["error"] = f"{stage}: {type(exc).__name__}: {_first_line(exc)}"
            log.warning(
                "ONNX Runtime measurement failed at %s: %s (the record is written without ort_* metrics)",
                stage,
                self.details["error"],
            )
        self.sessions.clear()

    def prepare(
        self,
        model: nn.Module,
        dense: nn.Module,
        model_dir: Path,
        dense_dir: Path,
        seq_len: int,
        sample: dict[str, torch.Tensor] | None = None,
    ) -> OrtBackend:
        from prunebench.quantization.int8 import is_quantized_model

        model_dir, dense_dir = Path(model_dir), Path(dense_dir)
        self.models = {"model": model, "dense": dense}
        self.int8 = is_quantized_model(model)
        same = model_dir.resolve() == dense_dir.resolve()
        stage = "export"
        try:
            _, subs = export_ready(model)
            self.details["substitutions"] = subs
            start = time.perf_counter()
            path = export_onnx(model, model_dir / ONNX_FILE, seq_len, sample, metadata=_cache_key(model_dir))
            self.details["export_s"]["model"] = round(time.perf_counter() - start, 3)
            self.details["file"], self.details["file_bytes"] = ONNX_FILE, path.stat().st_size
            if self.int8:
                meta = read_metadata(path)
                self.details["int8_method"] = meta.get("int8_method")
                self.details["int8"] = json.loads(meta.get("int8", "null"))
            stage = "dense export"
            dense_path = path if same else self._dense_graph(dense, dense_dir, seq_len, sample)
            self.details["dense_file"] = str(dense_path) if not same else ONNX_FILE
            self.details["dense_file_bytes"] = dense_path.stat().st_size
            stage = "session"
            # the dense graph twice: the control session, timed in turn with the others (the timing's noise)
            for name, p in (("model", path), ("dense", dense_path), ("dense_control", dense_path)):
                sess, disabled = open_session(p, self.threads)
                self.sessions[name] = sess
                self.details["disabled_optimizers"] = sorted(set(self.details["disabled_optimizers"]) | set(disabled))
        except Exception as exc:  # noqa: BLE001 -- recorded, never raised: the record is still written
            self.fail(stage, exc)
        return self

    def _dense_graph(self, dense: nn.Module, dense_dir: Path, seq_len: int, sample) -> Path:
        """The dense model's graph: ``dense_dir/model.onnx`` when current, else exported there (or
        in a temporary folder when the dense folder is not writable)."""
        cached = dense_dir / ONNX_FILE
        if _is_current(cached, dense_dir):
            self.details["dense_cached"] = True
            return cached
        self.details["dense_cached"] = False
        start = time.perf_counter()
        try:
            out = export_onnx(dense, cached, seq_len, sample, metadata=_cache_key(dense_dir))
        except OSError:
            self._tmp = tempfile.TemporaryDirectory(prefix="prunebench-onnx-")
            out = export_onnx(dense, Path(self._tmp.name) / ONNX_FILE, seq_len, sample, metadata=_cache_key(dense_dir))
        self.details["export_s"]["dense"] = round(time.perf_counter() - start, 3)
        return out

    def time_batch(
        self, batch_size: int, batch: dict[str, torch.Tensor], warmup: int, repeats: int, min_time_s: float = 0.0
    ) -> dict[str, dict] | None:
        """Check both sessions' outputs on ``batch``, then time them in turn; None after a failure."""
        if not self.ok:
            return None
        key = f"b{batch_size}"
        stage = f"output check {key}"
        try:
            self.details["check"][key] = {
                "model": check_outputs(self.sessions["model"], self.models["model"], batch, int8=self.int8),
                "dense": check_outputs(self.sessions["dense"], self.models["dense"], batch),
            }
            stage = f"timing {key}"
            timing = compare_ort_latency(self.sessions, batch, warmup, repeats, min_time_s)
        except Exception as exc:  # noqa: BLE001
            self.fail(stage, exc)
            return None
        self.details["latency"][key] = timing
        return timing
