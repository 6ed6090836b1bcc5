"""Bytes on disk of a saved model, measured with ``stat``: dense and sparse-encoded files.

Only the checkpoint's weight files count (``model.safetensors``, ``model.sparse.safetensors``):
not the config, tokenizer or checksums, and not the ``model.onnx`` the measure job writes into
the same folder (``prunebench.measure.onnx_runtime``), so "disk size" keeps meaning the checkpoint.

``tensor_bytes_on_disk`` reads a safetensors file's own header (the byte range of every stored
tensor) to say how those bytes split between tensors -- e.g. that an int8 checkpoint's encoder
matrices take one byte per weight (``encoder_bytes_on_disk``) -- measured from the file, not
computed from shapes and an assumed dtype.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from prunebench.checkpoints.store import SPARSE, WEIGHTS
from prunebench.structure.budget import ENCODER_PREFIX


def bytes_on_disk(model_dir: str | Path) -> dict[str, int | None]:
    folder = Path(model_dir)
    sparse = folder / SPARSE
    return {
        "dense": (folder / WEIGHTS).stat().st_size,
        "sparse": sparse.stat().st_size if sparse.exists() else None,
    }


def tensor_bytes_on_disk(path: str | Path) -> dict[str, dict]:
    """Every tensor of a safetensors file with its stored dtype and byte count (from the header's
    ``data_offsets``), plus ``"__header__"``: the header's own bytes (8-byte length + JSON).
    The byte counts and the header add up to the file's size."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    out = {
        name: {
            "dtype": info["dtype"],
            "shape": info["shape"],
            "bytes": info["data_offsets"][1] - info["data_offsets"][0],
        }
        for name, info in header.items()
        if name != "__metadata__"
    }
    out["__header__"] = {"dtype": None, "shape": None, "bytes": 8 + n}
    return out


def encoder_bytes_on_disk(model_dir: str | Path) -> dict[str, int]:
    """Bytes of ``model.safetensors`` by kind, measured from its header: the encoder's weight
    matrices (2-D ``.weight`` tensors under ``encoder.layer.``, and the packed int4 codes ``.weight_packed``
    of ``prunebench.quantization.int4``: half a byte per weight), their int8 / int4 scales
    (``.weight_scale``), everything else, and the header; ``total`` is the file size."""
    parts = tensor_bytes_on_disk(Path(model_dir) / WEIGHTS)
    out = {"encoder_weights": 0, "encoder_weight_scales": 0, "other": 0, "header": parts.pop("__header__")["bytes"]}
    for name, info in parts.items():
        if ENCODER_PREFIX in name and name.endswith((".weight", ".weight_packed")) and len(info["shape"]) == 2:
            out["encoder_weights"] += info["bytes"]
        elif ENCODER_PREFIX in name and name.endswith(".weight_scale"):
            out["encoder_weight_scales"] += info["bytes"]
        else:
            out["other"] += info["bytes"]
    out["total"] = sum(out.values())
    return out
