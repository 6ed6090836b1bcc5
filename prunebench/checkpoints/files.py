"""The files of a checkpoint folder: their names, checksums and the config, read without building a model.

Every loader (``prunebench.checkpoints.store`` and the storage formats registered in
``prunebench.checkpoints.formats``) reads a folder through these functions, so a missing,
corrupt or truncated file is reported by name before torch sees it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from transformers import AutoConfig

from prunebench.checkpoints import portable

WEIGHTS = "model.safetensors"
SPARSE = "model.sparse.safetensors"
CONFIG = "config.json"
README = "README.md"
STOCK, PRUNEBENCH = portable.STOCK, portable.PRUNEBENCH

CHECKSUMS = "checksums.json"


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, incomplete or corrupt; the message names it."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def portability(folder: str | Path) -> str:
    """``"stock"`` when stock transformers loads ``folder`` correctly (``from_pretrained``),
    ``"prunebench"`` when only ``load_model`` (or the exported ``model.onnx``) does.

    Folders saved before this distinction existed count as ``"prunebench"`` when their config
    carries ``prunebench_surgery`` or ``prunebench_quantization``: stock transformers would load
    them wrongly.
    """
    return portable.portability_of_config(_read_config_dict(Path(folder)))


def _read_config_dict(folder: Path) -> dict:
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {folder} is incomplete: {CONFIG} is missing") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {folder}: {CONFIG} does not load: {type(exc).__name__}: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {folder}: {CONFIG} is not a JSON object")
    return config


def read_config(folder: str | Path):
    """The model's transformers config of a checkpoint folder, whichever format it is in.

    A non-stock folder's ``config.json`` is unwrapped first (``prunebench.checkpoints.portable``), so this
    is the config the model had when it was saved (``prunebench_surgery`` ops included).
    """
    folder = Path(folder)
    raw = _read_config_dict(folder)
    try:
        if not portable.is_wrapped(raw):
            return AutoConfig.from_pretrained(folder)
        from transformers import CONFIG_MAPPING

        unwrapped = portable.unwrap_config(raw)
        for key in (portable.PORTABLE_ATTR, portable.KIND_ATTR):
            unwrapped.pop(key, None)
        model_type = unwrapped.get("model_type")
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"model type {model_type!r} (prunebench_model_type) is not known to transformers")
        return CONFIG_MAPPING[model_type].from_dict(unwrapped)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {folder}: {CONFIG} does not load: {type(exc).__name__}: {exc}") from exc


def verify(folder: str | Path) -> Path:
    """Check that ``folder`` holds a complete checkpoint whose files match their checksums."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    for needed in ("config.json", WEIGHTS, CHECKSUMS):
        if not (folder / needed).is_file():
            raise CheckpointError(f"checkpoint {folder} is incomplete: {needed} is missing")
    try:
        expected = json.loads((folder / CHECKSUMS).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {folder}: {CHECKSUMS} is not valid JSON ({exc})") from exc
    for name, digest in expected.items():
        if not (folder / name).is_file():
            raise CheckpointError(f"checkpoint {folder} is incomplete: {name} is missing")
        if sha256(folder / name) != digest:
            raise CheckpointError(
                f"checkpoint {folder}: {name} is corrupt or truncated (sha256 differs from {CHECKSUMS})"
            )
    return folder
