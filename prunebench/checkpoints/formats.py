"""Storage formats of quantized encoders: a registry from a config's ``scheme`` to its loader.

A model whose encoder is stored quantized carries ``config.prunebench_quantization`` (a dict
whose ``scheme`` names the storage: ``int8-dynamic``, ``int4-weight-only``, the mixed 8/4-bit
scheme). The module that defines a scheme registers its loader here with ``register_format``;
``prunebench.checkpoints.store.load_model`` asks ``loader_for(config)`` and never names a
format itself, so a new storage format is one module that registers, not a branch in the loader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunebench.checkpoints.files import CheckpointError

#: The config attribute that marks a quantized encoder.
QUANTIZATION_ATTR = "prunebench_quantization"

#: ``loader(folder, config) -> model``.
Loader = Callable[[Path, Any], Any]

_LOADERS: dict[str | None, Loader] = {}


def register_format(scheme: str | None, loader: Loader) -> None:
    """Register ``loader`` for configs whose ``prunebench_quantization["scheme"]`` is ``scheme``
    (``None``: a quantization block without a scheme). A scheme is registered once."""
    if scheme in _LOADERS and _LOADERS[scheme] is not loader:
        raise ValueError(f"storage format {scheme!r} is already registered")
    _LOADERS[scheme] = loader


def registered_formats() -> list[str]:
    """The registered scheme names, sorted."""
    return sorted(s for s in _LOADERS if s is not None)


def loader_for(config, folder: str | Path = "") -> Loader | None:
    """The loader of ``config``'s storage format; ``None`` when the encoder is not quantized."""
    q = getattr(config, QUANTIZATION_ATTR, None)
    if not q:
        return None
    scheme = q.get("scheme") if isinstance(q, dict) else None
    if scheme not in _LOADERS:
        raise CheckpointError(
            f"checkpoint {folder}: unknown storage scheme {scheme!r} in {QUANTIZATION_ATTR} "
            f"(registered: {', '.join(registered_formats())})"
        )
    return _LOADERS[scheme]
