"""Bytes on disk of a saved model, measured with ``stat``: dense and sparse-encoded files.

Only the checkpoint's weight files count (``model.safetensors``, ``model.sparse.safetensors``):
not the config, tokenizer or checksums, and not the ``model.onnx`` the measure job writes into
the same folder (``prunebench.measure.onnx_runtime``), so "disk size" keeps meaning the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from prunebench.checkpoints import SPARSE, WEIGHTS


def bytes_on_disk(model_dir: str | Path) -> dict[str, int | None]:
    folder = Path(model_dir)
    sparse = folder / SPARSE
    return {
        "dense": (folder / WEIGHTS).stat().st_size,
        "sparse": sparse.stat().st_size if sparse.exists() else None,
    }
