"""Bytes on disk of a saved model, measured with ``stat``: dense and sparse-encoded files."""

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
