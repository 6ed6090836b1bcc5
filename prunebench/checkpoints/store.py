"""Saving and reloading models: the dense checkpoint and the sparse-encoded file.

``save_model`` writes a transformers-style checkpoint (``model.safetensors`` + ``config.json``
+ tokenizer + ``README.md``) and a ``checksums.json``; ``load_model`` -- the one way prunebench
reloads a folder -- verifies the checksums first, so a corrupt or truncated checkpoint is
reported by name instead of failing deep inside torch.

Which folders other tools can load (``prunebench.checkpoints.portable`` decides, and documents the
mechanism; ``docs/loading_checkpoints.md`` is the user's guide): a model whose structure a
stock transformers config describes -- dense, element-wise sparse, layers removed, the same
number of feed-forward units removed in every layer -- is saved as a *stock* checkpoint that
``AutoModelForSequenceClassification.from_pretrained`` loads exactly. Every other model
(heads removed, uneven FFN widths, FLOP-factorized, fixed attention, int8) is saved in
prunebench's own layout with a ``config.json`` that stock ``AutoConfig``/``AutoModel*`` and
``BertFor*.from_pretrained`` refuse with an error naming ``prunebench.checkpoints.store.load_model``
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

import json
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from prunebench.checkpoints import (
    portable,
    quantized,  # noqa: F401  (registers the quantized storage formats)
)
from prunebench.checkpoints.files import (  # noqa: F401  (re-exported: the folder's file names and checks)
    CHECKSUMS,
    CONFIG,
    PRUNEBENCH,
    README,
    SPARSE,
    STOCK,
    WEIGHTS,
    CheckpointError,
    portability,
    read_config,
    sha256,
    verify,
)
from prunebench.checkpoints.formats import loader_for
from prunebench.structure import factorized, fixed_attention  # noqa: F401  (register their surgery ops)
from prunebench.structure.budget import is_encoder_weight
from prunebench.structure.surgery import SurgeryError, replay

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def save_model(model: torch.nn.Module, tokenizer, out_dir: str | Path, sparse: bool = True) -> Path:
    """Save ``model`` (+ tokenizer) as a checkpoint folder, optionally with its sparse encoding.

    The format is chosen by ``prunebench.checkpoints.portable.plan``: a stock transformers checkpoint where
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


def load_model(folder: str | Path) -> torch.nn.Module:
    """Reload a checkpoint written by ``save_model`` (any format, old or new), after verifying it.

    - a stock folder: ``from_pretrained``, refusing missing, unexpected or mismatched weights;
    - a quantized encoder (``prunebench_quantization``): the loader its ``scheme`` registered in
      ``prunebench.checkpoints.formats`` (int8, int4, mixed int8/int4: ``prunebench.quantization``);
    - a structurally compacted model that is not stock (its config lists ``prunebench_surgery``
      ops, see ``prunebench.structure.surgery``): its shapes differ from the architecture the config
      describes, so it is rebuilt from the config (dense shapes, weights not initialised), the
      recorded ops are replayed, and ``model.safetensors`` is loaded strictly -- every key
      present, none unexpected, every shape equal.
    """
    folder = verify(folder)
    config = read_config(folder)
    load = loader_for(config, folder)
    if load is not None:
        return load(folder, config)
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
    problems = {
        what: sorted(info.get(key) or [])
        for what, key in (
            ("missing", "missing_keys"),
            ("unexpected", "unexpected_keys"),
            ("shape differs", "mismatched_keys"),
        )
    }
    problems = {what: keys for what, keys in problems.items() if keys}
    if problems:
        detail = "; ".join(
            f"{what}: {[str(k) for k in keys[:5]]}{' ...' if len(keys) > 5 else ''}" for what, keys in problems.items()
        )
        raise CheckpointError(
            f"checkpoint {folder}: {WEIGHTS} does not match {cls.__name__} built from its config ({detail})"
        )
    return model.eval()


def _auto_class(config):
    """The model class named by the config's ``architectures`` (else sequence classification)."""
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return AutoModelForSequenceClassification


def _load_compacted(folder: Path, config, ops) -> torch.nn.Module:
    from transformers.initialization import no_init_weights

    cls = _auto_class(config)
    try:
        with no_init_weights():  # the weights come from the file; skip the random init
            model = cls._from_config(config) if hasattr(cls, "_from_config") else cls.from_config(config)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {folder}: cannot build {cls.__name__} from its config: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        replay(model, ops)
    except (SurgeryError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {folder}: replaying its surgery ops failed: {type(exc).__name__}: {exc}"
        ) from exc
    state = load_file(str(folder / WEIGHTS))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {keys[:5]}{' ...' if len(keys) > 5 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", wrong))
            if keys
        )
        raise CheckpointError(
            f"checkpoint {folder}: {WEIGHTS} does not match the model rebuilt from its surgery ops ({detail})"
        )
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
            dense = torch.sparse_csr_tensor(
                raw[f"{name}::crow"].long(), raw[f"{name}::col"].long(), values, size=shape
            ).to_dense()
        state[name] = dense
    return state
