"""Saving and reloading models: the dense checkpoint and the sparse-encoded file.

``save_model`` writes a transformers-style checkpoint (``model.safetensors`` + ``config.json``
+ tokenizer + ``README.md``) and a ``checksums.json``; ``load_model`` -- the one way prunebench
reloads a folder -- verifies the checksums first, so a corrupt or truncated checkpoint is
reported by name instead of failing deep inside torch.

Which folders other tools can load (``prunebench.portable`` decides, and documents the
mechanism; ``docs/loading_checkpoints.md`` is the user's guide): a model whose structure a
stock transformers config describes -- dense, element-wise sparse, layers removed, the same
number of feed-forward units removed in every layer -- is saved as a *stock* checkpoint that
``AutoModelForSequenceClassification.from_pretrained`` loads exactly. Every other model
(heads removed, uneven FFN widths, FLOP-factorized, fixed attention, int8) is saved in
prunebench's own layout with a ``config.json`` that stock ``AutoConfig``/``AutoModel*`` and
``BertFor*.from_pretrained`` refuse with an error naming ``prunebench.checkpoints.load_model``
and ``model.onnx``, instead of silently loading random weights. ``portability(folder)`` says
which kind a folder is (``"stock"`` or ``"prunebench"``); ``config.json`` records it as
``prunebench_portable_with`` (``"transformers"`` or ``"onnxruntime"``).

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

from prunebench import portable
from prunebench.budget import is_encoder_weight

WEIGHTS = "model.safetensors"
SPARSE = "model.sparse.safetensors"
CONFIG = "config.json"
README = "README.md"
STOCK, PRUNEBENCH = portable.STOCK, portable.PRUNEBENCH

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
    """Save ``model`` (+ tokenizer) as a checkpoint folder, optionally with its sparse encoding.

    The format is chosen by ``prunebench.portable.plan``: a stock transformers checkpoint where
    a stock config describes the model (a compacted one is saved with the compacted sizes), else
    prunebench's layout with a config stock transformers refuses. ``model`` is not modified.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    how = portable.plan(model)
    model.save_pretrained(out, safe_serialization=True)
    if how.config is not None:  # stock compacted: the config describing the compacted shapes
        how.config.architectures = list(getattr(model.config, "architectures", None) or [type(model).__name__])
        how.config.save_pretrained(out)
    config = json.loads((out / CONFIG).read_text())
    architecture = (config.get("architectures") or [type(model).__name__])[0]
    config = portable.mark_stock(config, how) if how.portable == STOCK else portable.wrap_config(config, how)
    _write_text(out / CONFIG, json.dumps(config, indent=2, sort_keys=True) + "\n")
    _write_text(out / README, portable.readme(how, architecture))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    files = [WEIGHTS]
    if sparse:
        save_sparse(model, out / SPARSE)
        files.append(SPARSE)
    (out / CHECKSUMS).write_text(json.dumps({f: sha256(out / f) for f in files}, indent=1))
    return out


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


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

    A non-stock folder's ``config.json`` is unwrapped first (``prunebench.portable``), so this
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
            raise CheckpointError(f"checkpoint {folder}: {name} is corrupt or truncated (sha256 differs from {CHECKSUMS})")
    return folder


def load_model(folder: str | Path) -> torch.nn.Module:
    """Reload a checkpoint written by ``save_model`` (any format, old or new), after verifying it.

    - a stock folder: ``from_pretrained``, refusing missing, unexpected or mismatched weights;
    - int8 (``prunebench_quantization``): ``prunebench.quantized.load_quantized_model``; int4 and
      mixed int8/int4 (its ``scheme``): ``prunebench.int4.load_int4_model``, ``prunebench.mixed.load_mixed_model``;
    - a structurally compacted model that is not stock (its config lists ``prunebench_surgery``
      ops, see ``prunebench.surgery``): its shapes differ from the architecture the config
      describes, so it is rebuilt from the config (dense shapes, weights not initialised), the
      recorded ops are replayed, and ``model.safetensors`` is loaded strictly -- every key
      present, none unexpected, every shape equal.
    """
    folder = verify(folder)
    config = read_config(folder)
    if getattr(config, "prunebench_quantization", None):  # int8 encoder (methods/quantization.py)
        from prunebench.int4 import is_int4_config, load_int4_model  # int4 encoder (methods/quant_noise.py)

        if is_int4_config(config):
            return load_int4_model(folder, config=config)
        from prunebench.mixed import is_mixed_config, load_mixed_model  # int8 + int4 layers (methods/qbert.py)

        if is_mixed_config(config):
            return load_mixed_model(folder, config=config)
        from prunebench.quantized import load_quantized_model

        return load_quantized_model(folder, config=config)
    ops = getattr(config, "prunebench_surgery", None)
    if not ops:
        return _load_stock(folder, config)
    return _load_compacted(folder, config, ops)


def _load_stock(folder: Path, config) -> torch.nn.Module:
    cls = _auto_class(config)
    try:
        model, info = cls.from_pretrained(folder, config=config, output_loading_info=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {folder} does not load: {type(exc).__name__}: {exc}") from exc
    problems = {what: sorted(info.get(key) or []) for what, key in
                (("missing", "missing_keys"), ("unexpected", "unexpected_keys"), ("shape differs", "mismatched_keys"))}
    problems = {what: keys for what, keys in problems.items() if keys}
    if problems:
        detail = "; ".join(f"{what}: {[str(k) for k in keys[:5]]}{' ...' if len(keys) > 5 else ''}"
                           for what, keys in problems.items())
        raise CheckpointError(f"checkpoint {folder}: {WEIGHTS} does not match {cls.__name__} built from its config ({detail})")
    return model.eval()


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
