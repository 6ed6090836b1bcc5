"""Saving and reloading models: the dense checkpoint and the sparse-encoded file.

``save_model`` writes a normal transformers checkpoint (``model.safetensors`` + config +
tokenizer) and a ``checksums.json``; ``load_model`` verifies the checksum first, so a corrupt
or truncated checkpoint is reported by name instead of failing deep inside torch.

``save_sparse`` writes the same weights with every encoder matrix stored sparsely, in
whichever of two encodings is smaller for that matrix:

- ``bitmap``: one bit per entry (``numpy.packbits`` of the non-zero mask) + the non-zero values;
- ``csr``:    row pointers (int32) + column indices (int16 when the matrix has < 32768 columns)
              + the non-zero values.

All other tensors are stored dense. ``load_sparse`` rebuilds the exact dense state dict. The
report gives both file sizes, measured on disk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
import transformers
from transformers import AutoConfig, AutoModelForSequenceClassification

from prunebench.budget import is_encoder_weight

WEIGHTS = "model.safetensors"
SPARSE = "model.sparse.safetensors"

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
CHECKSUMS = "checksums.json"


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, incomplete or corrupt; the message names it."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(model: torch.nn.Module, tokenizer, out_dir: str | Path, sparse: bool = True) -> Path:
    """Save ``model`` (+ tokenizer) as a normal checkpoint, optionally with its sparse encoding."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    files = [WEIGHTS]
    if sparse:
        save_sparse(model, out / SPARSE)
        files.append(SPARSE)
    (out / CHECKSUMS).write_text(json.dumps({f: sha256(out / f) for f in files}, indent=1))
    return out


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
            raise CheckpointError(f"checkpoint {folder}: {name} is corrupt or truncated (sha256 differs from {CHECKSUMS})")
    return folder


def load_model(folder: str | Path) -> torch.nn.Module:
    """Reload a checkpoint written by ``save_model``, after verifying it.

    A structurally compacted model (its config lists ``prunebench_surgery`` ops, see
    ``prunebench.surgery``) cannot come from ``from_pretrained``: its shapes differ from the
    architecture the config describes. It is rebuilt from the config (dense shapes, weights
    not initialised), the recorded ops are replayed, and ``model.safetensors`` is loaded
    strictly -- every key present, none unexpected, every shape equal.
    """
    folder = verify(folder)
    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {folder}: config.json does not load: {type(exc).__name__}: {exc}") from exc
    if getattr(config, "prunebench_quantization", None):  # int8 encoder (methods/quantization.py)
        from prunebench.quantized import load_quantized_model

        return load_quantized_model(folder)
    ops = getattr(config, "prunebench_surgery", None)
    if not ops:
        try:
            return _auto_class(config).from_pretrained(folder)
        except Exception as exc:
            raise CheckpointError(f"checkpoint {folder} does not load: {type(exc).__name__}: {exc}") from exc
    return _load_compacted(folder, config, ops)


def _auto_class(config):
    """The model class named by the config's ``architectures`` (else sequence classification)."""
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return AutoModelForSequenceClassification


def _load_compacted(folder: Path, config, ops) -> torch.nn.Module:
    import methods  # noqa: F401  (every module that registers a surgery op)
    from transformers.initialization import no_init_weights

    from prunebench.surgery import SurgeryError, replay

    cls = _auto_class(config)
    try:
        with no_init_weights():  # the weights come from the file; skip the random init
            model = cls._from_config(config) if hasattr(cls, "_from_config") else cls.from_config(config)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {folder}: cannot build {cls.__name__} from its config: "
                              f"{type(exc).__name__}: {exc}") from exc
    try:
        replay(model, ops)
    except (SurgeryError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder}: replaying its surgery ops failed: {type(exc).__name__}: {exc}") from exc
    state = load_file(str(folder / WEIGHTS))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what}: {keys[:5]}{' ...' if len(keys) > 5 else ''}"
                           for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", wrong))
                           if keys)
        raise CheckpointError(f"checkpoint {folder}: {WEIGHTS} does not match the model rebuilt from its surgery ops ({detail})")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


# ----- sparse encoding ---------------------------------------------------------------------

def _encode(name: str, w: torch.Tensor) -> tuple[dict[str, torch.Tensor], str]:
    w = w.detach().contiguous().cpu()
    mask = w != 0
    values = w[mask]
    rows, cols = w.shape
    bitmap_bytes = (w.numel() + 7) // 8
    index_bytes = 2 if cols < 32768 else 4
    csr_bytes = (rows + 1) * 4 + values.numel() * index_bytes
    if bitmap_bytes <= csr_bytes:
        bits = torch.from_numpy(np.packbits(mask.numpy().reshape(-1)))
        return {f"{name}::bits": bits, f"{name}::values": values}, "bitmap"
    csr = w.to_sparse_csr()
    index_dtype = torch.int16 if index_bytes == 2 else torch.int32
    return {
        f"{name}::crow": csr.crow_indices().to(torch.int32),
        f"{name}::col": csr.col_indices().to(index_dtype),
        f"{name}::values": csr.values(),
    }, "csr"


def save_sparse(model: torch.nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state dict with encoder matrices sparse-encoded."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    params = dict(model.named_parameters())
    for name, t in model.state_dict().items():
        if name in params and is_encoder_weight(name, t):
            encoded, fmt = _encode(name, t)
            tensors.update(encoded)
            layout[name] = {"format": fmt, "shape": list(t.shape), "dtype": str(t.dtype)}
        else:
            tensors[name] = t.detach().contiguous().cpu()
    save_file(tensors, str(path), metadata={"prunebench_sparse_layout": json.dumps(layout)})
    return Path(path)


def load_sparse(path: str | Path) -> dict[str, torch.Tensor]:
    """The dense state dict stored in a file written by ``save_sparse``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        layout = json.loads(fh.metadata()["prunebench_sparse_layout"])
    raw = load_file(str(path))
    state = {k: v for k, v in raw.items() if "::" not in k}
    for name, info in layout.items():
        shape = tuple(info["shape"])
        values = raw[f"{name}::values"]
        if info["format"] == "bitmap":
            n = int(np.prod(shape))
            mask = torch.from_numpy(np.unpackbits(raw[f"{name}::bits"].numpy(), count=n).astype(bool)).view(shape)
            dense = torch.zeros(shape, dtype=values.dtype)
            dense[mask] = values
        else:
            dense = torch.sparse_csr_tensor(raw[f"{name}::crow"].long(), raw[f"{name}::col"].long(), values,
                                            size=shape).to_dense()
        state[name] = dense
    return state
