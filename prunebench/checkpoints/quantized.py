"""Quantized encoders on disk: rebuild a saved int8, int4 or mixed int8/int4 model exactly.

A quantized model's ``config.json`` carries ``prunebench_quantization`` with its ``scheme``. Each
loader below builds the architecture from the config with the weights uninitialised, swaps in the
scheme's layers (``prunebench.quantization``) and loads the state dict strictly: a missing,
unexpected or mis-shaped tensor is a ``CheckpointError`` naming the folder, never a silent random
initialisation. The loaders register their schemes in ``prunebench.checkpoints.formats``, where
``prunebench.checkpoints.store.load_model`` finds them.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from prunebench.checkpoints.files import CheckpointError, read_config
from prunebench.checkpoints.formats import register_format
from prunebench.quantization import int4, int8
from prunebench.quantization.int4 import Int4WeightLinear
from prunebench.quantization.int8 import (
    CONFIG_ATTR,
    Int8DynamicLinear,
    check_kernel,
    encoder_linear_names,
    saved_kernel,
)
from prunebench.quantization.mixed import SCHEME_NAME, storage_of


def model_from_config(config, what: str) -> nn.Module:
    """An uninitialised sequence-classification or QA model of ``config`` (its ``architectures``
    decide), for a quantized folder's own layers to be swapped in; ``CheckpointError`` naming
    ``what`` when the config does not build."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    try:
        heads = " ".join(getattr(config, "architectures", None) or [])
        auto = AutoModelForQuestionAnswering if "QuestionAnswering" in heads else AutoModelForSequenceClassification
        try:
            from transformers.initialization import no_init_weights
        except ImportError:  # older transformers: initialise, then overwrite
            from contextlib import nullcontext as no_init_weights
        with no_init_weights():
            return auto.from_config(config)
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot build the model from its config: {type(exc).__name__}: {exc}") from exc


def load_state_strictly(model: nn.Module, path: Path, what: str) -> None:
    """Load the safetensors file ``path`` into ``model``: a missing (untied), extra, mis-shaped or
    wrongly typed tensor is a ``CheckpointError`` naming ``what``."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    expected = model.state_dict()
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = sorted(k for k in set(expected) - set(state) if k not in tied)
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape) or state[k].dtype != expected[k].dtype
    )
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{what} does not match its architecture: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape/dtype differs {wrong[:5]}"
        )
    model.load_state_dict(state, strict=False)


def load_quantized_model(
    folder: str | Path, weights_file: str = "model.safetensors", config=None, kernel: str | None = None
) -> nn.Module:
    """Rebuild a model saved (``save_pretrained``) after ``quantize_encoder_linears``.

    The architecture comes from ``config.json`` (read with ``prunebench.checkpoints.store.read_config``,
    which undoes the guard that makes stock transformers refuse the folder; or pass ``config``),
    weights not randomly initialised; the encoder linears are swapped for empty
    ``Int8DynamicLinear`` layers and the state dict is loaded strictly, so a missing or extra
    tensor is a ``CheckpointError``, never a silent random initialisation.
    ``prunebench.checkpoints.store.load_model`` calls this for a folder whose config carries
    ``prunebench_quantization`` (stock ``from_pretrained`` would cast the int8 matrices to
    float without their scales; ``save_model`` therefore writes such folders in the non-stock
    format, see ``prunebench.checkpoints.portable``). The layers get the kernel setting saved in the config
    (``auto`` for folders saved before the setting existed) unless ``kernel`` overrides it; the
    engine's packed weights are built from the loaded tensors at the first forward pass.
    """
    folder = Path(folder)
    if config is None:
        config = read_config(folder)
    model = model_from_config(config, f"quantized checkpoint {folder}")
    saved = getattr(config, CONFIG_ATTR, None)
    saved = saved if isinstance(saved, dict) else {}
    kernel = check_kernel(kernel or saved_kernel(saved))
    for name in encoder_linear_names(model):
        old = model.get_submodule(name)
        model.set_submodule(
            name, Int8DynamicLinear(old.in_features, old.out_features, old.bias is not None, kernel=kernel)
        )
    load_state_strictly(model, folder / weights_file, f"quantized checkpoint {folder}")
    if saved:
        setattr(model.config, CONFIG_ATTR, {**saved, "kernel": kernel})
    return model.eval()


def load_int4_model(folder: str | Path, weights_file: str = "model.safetensors", config=None) -> nn.Module:
    """Rebuild a model saved after ``quantize_encoder_linears_int4`` (strictly: a missing, extra or
    mis-shaped tensor is a ``CheckpointError``); ``prunebench.checkpoints.store.load_model`` calls it."""
    folder = Path(folder)
    if config is None:
        config = read_config(folder)
    model = model_from_config(config, f"int4 checkpoint {folder}")
    for name in encoder_linear_names(model):
        old = model.get_submodule(name)
        model.set_submodule(name, Int4WeightLinear(old.in_features, old.out_features, old.bias is not None))
    load_state_strictly(model, folder / weights_file, f"int4 checkpoint {folder}")
    return model.eval()


def load_mixed_model(
    folder: str | Path, weights_file: str = "model.safetensors", config=None, kernel: str | None = None
) -> nn.Module:
    """Rebuild a model saved after ``quantize_encoder_mixed``: each encoder linear in the container its
    config entry names, then the state dict loaded strictly (``CheckpointError`` on any mismatch)."""
    folder = Path(folder)
    if config is None:
        config = read_config(folder)
    saved = getattr(config, CONFIG_ATTR, None)
    if not (isinstance(saved, dict) and saved.get("scheme") == SCHEME_NAME):
        raise CheckpointError(f"mixed checkpoint {folder}: config has no {SCHEME_NAME!r} {CONFIG_ATTR}")
    model = model_from_config(config, f"mixed checkpoint {folder}")
    layers = saved.get("layers") or {}
    kernel = check_kernel(kernel or saved_kernel(saved))
    input_bits = saved.get("input_bits")
    names = encoder_linear_names(model)
    if sorted(names) != sorted(layers):
        raise CheckpointError(
            f"mixed checkpoint {folder}: its config's layers do not match the architecture's "
            f"encoder linears ({sorted(set(names) ^ set(layers))[:5]})"
        )
    for name in names:
        old = model.get_submodule(name)
        if layers[name].get("storage", storage_of(int(layers[name]["bits"]))) == "int8":
            new = Int8DynamicLinear(old.in_features, old.out_features, old.bias is not None, kernel=kernel)
        else:
            new = Int4WeightLinear(old.in_features, old.out_features, old.bias is not None, input_bits=input_bits)
        model.set_submodule(name, new)
    load_state_strictly(model, folder / weights_file, f"mixed checkpoint {folder}")
    setattr(model.config, CONFIG_ATTR, {**saved, "kernel": kernel})
    return model.eval()


register_format(int8.SCHEME["scheme"], lambda folder, config: load_quantized_model(folder, config=config))
register_format(None, lambda folder, config: load_quantized_model(folder, config=config))  # no scheme: int8
register_format(int4.SCHEME["scheme"], lambda folder, config: load_int4_model(folder, config=config))
register_format(SCHEME_NAME, lambda folder, config: load_mixed_model(folder, config=config))
