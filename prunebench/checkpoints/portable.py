"""Which saved model folders stock transformers can load, and making the others fail loudly.

``prunebench.checkpoints.store.save_model`` asks ``plan(model)`` which of two formats to write:

*stock* -- ``config.json`` is a plain transformers config that describes the saved weights
exactly, so ``AutoModelForSequenceClassification.from_pretrained(folder)`` (or the concrete
class) loads the model with no prunebench installed and computes what prunebench computes:

- dense and element-wise sparse models (the zeros are stored in dense matrices);
- layers removed (``num_hidden_layers`` is the number kept; the state-dict keys are already
  renumbered ``encoder.layer.0 ..`` because the layer list is rebuilt);
- feed-forward units removed with the *same* number left in every layer
  (``intermediate_size`` is that number), alone or together with removed layers.

Whether a compacted model is stock is decided from its structure, not from its recorded
ops alone: every recorded op must be ``remove_layers``, ``remove_ffn_units`` or
``remove_heads``; every layer must keep all ``num_attention_heads`` heads and the same FFN
width; and the model class built (on the meta device) from the candidate stock config must
have exactly the model's modules (names and types) and the model's state-dict names and
shapes. The recorded ops are kept under ``prunebench_surgery_history`` (ignored by
transformers; ``prunebench_surgery`` is dropped, because the config now describes the
compacted model and nothing is to be replayed) and ``prunebench_dense_encoder_weights``
stays, so the budget is still counted against the dense origin.

*prunebench* -- everything else: heads removed (transformers' ``BertSelfAttention`` sets
``attention_head_size = int(hidden_size / num_attention_heads)`` and sizes Q/K/V as
``num_attention_heads * attention_head_size``, and ``BertConfig`` has no head-size field, so a
model with fewer heads of the *original* size cannot be described even when every layer
keeps the same number; a layer with no heads even less), uneven FFN widths (BERT in
transformers 5.23 does not support per-layer configs: ``per_layer_config`` raises
``AmbiguousGlobalPerLayerAttributeError``), FLOP-factorized matrices, fixed attention
patterns, int8 matrices, and any mix of these with stock-expressible changes. Such a folder
keeps prunebench's own layout (the dense config plus ``prunebench_surgery`` ops, or
``prunebench_quantization``), and its ``config.json`` is made unloadable by stock code:

1. ``model_type`` is ``prunebench-<what>-<base type>`` (e.g. ``prunebench-factorized-bert``),
   a type transformers does not know, so ``AutoConfig`` / ``AutoModel*.from_pretrained`` and
   ``pipeline`` raise ``ValueError: The checkpoint you are trying to load has model type
   `prunebench-factorized-bert` but Transformers does not recognize this architecture ...``.
2. A concrete class (``BertForSequenceClassification.from_pretrained``) only *warns* about a
   different ``model_type`` and, in 5.23, also only reports missing/unexpected weights (it
   initialises them randomly) and silently casts int8 matrices to float -- a wrong model
   and no error. So ``num_attention_heads``, a field every BERT-like config needs as
   an int, holds a sentence instead. ``BertConfig`` is a strict dataclass in 5.x and raises
   ``StrictDataclassFieldValidationError: Validation error for field
   'num_attention_heads': TypeError: Field 'num_attention_heads' expected int, got str
   (value: 'not a stock transformers model: ... load it with
   prunebench.checkpoints.store.load_model(folder) or run model.onnx with onnxruntime ...')``; an
   older, non-strict transformers fails building the attention (``hidden_size %
   num_attention_heads`` on a string). kwargs overrides cannot rescue it (the config is
   validated before they are applied).
3. The real values are kept flat as ``prunebench_model_type``, ``prunebench_architectures``
   and ``prunebench_num_attention_heads`` (flat, not a nested dict: ``from_pretrained``
   adopts any nested dict whose ``model_type`` is its own), and ``unwrap_config`` restores
   them for ``prunebench.checkpoints.store.load_model``.

The weights stay in ``model.safetensors`` (the bytes-on-disk measurement reads that file);
a user who passes a hand-made ``config=`` to ``from_pretrained`` bypasses all of this. Every
folder gets ``prunebench_portable_with`` in ``config.json`` (``"transformers"``: stock;
``"onnxruntime"``: portable only as the ``model.onnx`` the measure job exports) and a
``README.md`` saying how to load it.

Folders written before this format (``model_type`` ``bert`` with ``prunebench_surgery`` or
``prunebench_quantization``) still load with ``load_model``; ``portability`` calls them
``"prunebench"`` (stock transformers loads them wrongly). Re-saving, ``save_model(load_model(
old), AutoTokenizer.from_pretrained(old), new)``, writes them in this format.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

STOCK, PRUNEBENCH = "stock", "prunebench"
#: config.json key: "transformers" (stock) or "onnxruntime" (only model.onnx is portable).
PORTABLE_ATTR = "prunebench_portable_with"
#: config.json key: a short description of what was saved (e.g. "layers removed").
KIND_ATTR = "prunebench_checkpoint_kind"
#: config.json key of a stock compacted model: the surgery ops it came from (not replayed).
HISTORY_ATTR = "prunebench_surgery_history"
SURGERY_ATTR = "prunebench_surgery"  # = prunebench.structure.surgery.SURGERY_ATTR (not imported: no cycle)
QUANT_ATTR = "prunebench_quantization"  # = prunebench.quantization.int8.CONFIG_ATTR
#: Stock fields a non-stock config hides (as ``prunebench_<field>``).
HIDDEN_FIELDS = ("model_type", "architectures", "num_attention_heads")
#: Ops whose result stock transformers may express (decided on the structure).
STOCK_OPS = frozenset({"remove_layers", "remove_ffn_units", "remove_heads"})
ONNX_FILE = "model.onnx"


def _hidden(name: str) -> str:
    return f"prunebench_{name}"


@dataclass
class Plan:
    """How ``save_model`` writes a model: ``portable`` is STOCK or PRUNEBENCH."""

    portable: str
    kind: str  # e.g. "dense", "layers removed", "heads removed + int8"
    reasons: list[str] = field(default_factory=list)  # why not stock (empty when stock)
    config: Any = None  # stock compacted model: the config to write instead of model.config
    tags: list[str] = field(default_factory=list)  # non-stock: the words of the model_type


# ----- deciding -----------------------------------------------------------------------------


def _ops(config) -> list[dict]:
    return list(getattr(config, SURGERY_ATTR, None) or [])


def _is_quantized(model: nn.Module) -> bool:
    if getattr(getattr(model, "config", None), QUANT_ATTR, None):
        return True
    return any(type(m).__name__ in ("Int8DynamicLinear", "Int4WeightLinear") for m in model.modules())


def _quant_tags(model: nn.Module) -> list[str]:
    """``["int8"]``, ``["int4"]`` or ``["int8", "int4"]`` (mixed, ``prunebench.quantization.mixed``): the integer
    containers of the encoder matrices (``int8`` for a marked model whose layers say nothing)."""
    kinds = {type(m).__name__ for m in model.modules()}
    tags = [t for t, cls in (("int8", "Int8DynamicLinear"), ("int4", "Int4WeightLinear")) if cls in kinds]
    return tags or ["int8"]


@torch.no_grad()
def _has_zeros(model: nn.Module) -> bool:
    """More than 1% of the encoder weights are exactly zero (element-wise pruned); a label only."""
    from prunebench.structure.budget import encoder_weights

    weights = list(encoder_weights(model).values())
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return total > 0 and zeros > 0.01 * total


def _layers(model: nn.Module):
    try:
        return model.base_model.encoder.layer
    except AttributeError:
        return None


def _structure_tags(model: nn.Module, config) -> list[str]:
    """What differs from the config's dense architecture, in words (for a non-stock model)."""
    tags = []
    layers = _layers(model)
    ops = _ops(config)
    if layers is not None:
        if len(layers) != getattr(config, "num_hidden_layers", len(layers)):
            tags.append("layers-removed")
        heads = [int(getattr(layer.attention.self, "num_attention_heads", -1)) for layer in layers]
        if any(h != config.num_attention_heads for h in heads):
            tags.append("heads-removed")
        widths = [_ffn_width(layer) for layer in layers]
        if any(w != config.intermediate_size for w in widths):
            tags.append("ffn-removed")
    names = [o.get("op") for o in ops]
    if "factorize" in names:
        tags.append("factorized")
    if "fixed_attention" in names:
        tags.append("fixed-attention")
    for name in names:
        if name not in STOCK_OPS | {"factorize", "fixed_attention"} and str(name) not in tags:
            tags.append(str(name).replace("_", "-"))
    if _is_quantized(model):
        tags.extend(_quant_tags(model))
    return tags or ["compacted"]


def _ffn_width(layer: nn.Module) -> int:
    dense = layer.intermediate.dense
    return int(getattr(dense, "out_features", -1))


def _same_structure(model: nn.Module, config) -> str | None:
    """None when ``type(model)`` built from ``config`` has exactly the model's modules and
    tensor shapes; else what differs."""
    from transformers.initialization import no_init_weights

    cls = type(model)
    try:
        with torch.device("meta"), no_init_weights():
            built = cls._from_config(copy.deepcopy(config))
    except Exception as exc:  # noqa: BLE001 -- any failure means "not stock"
        return f"{cls.__name__} cannot be built from the stock config ({type(exc).__name__}: {exc})"
    mine = {n: type(m) for n, m in model.named_modules()}
    theirs = {n: type(m) for n, m in built.named_modules()}
    if mine != theirs:
        diff = sorted(n for n in set(mine) | set(theirs) if mine.get(n) is not theirs.get(n))
        return f"modules differ from the stock model's: {diff[:5]}"
    a = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return f"tensors differ from the stock model's: {diff[:5]}"
    return None


def plan(model: nn.Module) -> Plan:
    """Decide how ``model`` is saved: as a stock transformers checkpoint, or prunebench's own."""
    config = model.config
    ops = _ops(config)
    quantized = _is_quantized(model)
    if not ops and not quantized:
        kind = "element-sparse" if _has_zeros(model) else "dense"
        return Plan(STOCK, kind)
    reasons = []
    if quantized:
        described = {
            "int8": "int8 encoder matrices (Int8DynamicLinear: int8 weights + per-row scales)",
            "int4": "int4 encoder matrices (Int4WeightLinear: packed 4-bit codes + per-row scales)",
        }
        reasons.extend(described[t] for t in _quant_tags(model))
    other = sorted({str(o.get("op")) for o in ops} - STOCK_OPS)
    if other:
        reasons.append(f"surgery ops stock transformers cannot express: {', '.join(other)}")
    layers = _layers(model)
    if layers is None:
        reasons.append("no base_model.encoder.layer")
    if not reasons:
        try:
            heads = [int(layer.attention.self.num_attention_heads) for layer in layers]
            widths = sorted({_ffn_width(layer) for layer in layers})
        except AttributeError as exc:
            heads, widths = [], []
            reasons.append(f"not a BERT-style layer ({exc})")
        if heads and any(h != config.num_attention_heads for h in heads):
            reasons.append(
                f"heads removed (heads per layer {heads}; a stock config has "
                f"{config.num_attention_heads} heads of hidden_size/num_attention_heads in every layer)"
            )
        if len(widths) > 1:
            reasons.append(f"feed-forward widths differ between layers ({widths})")
    if reasons:
        tags = _structure_tags(model, config)
        return Plan(PRUNEBENCH, " + ".join(t.replace("-", " ") for t in tags), reasons, tags=tags)
    candidate = copy.deepcopy(config)
    candidate.num_hidden_layers = len(layers)
    candidate.intermediate_size = widths[0]
    if hasattr(candidate, SURGERY_ATTR):
        delattr(candidate, SURGERY_ATTR)
    setattr(candidate, HISTORY_ATTR, list(getattr(config, HISTORY_ATTR, None) or []) + ops)
    problem = _same_structure(model, candidate)
    if problem:
        tags = _structure_tags(model, config)
        return Plan(PRUNEBENCH, " + ".join(t.replace("-", " ") for t in tags), [problem], tags=tags)
    words = []
    if len(layers) != config.num_hidden_layers:
        words.append("layers removed")
    if widths[0] != config.intermediate_size:
        words.append("FFN units removed (same width in every layer)")
    if _has_zeros(model):
        words.append("element-sparse")
    return Plan(STOCK, " + ".join(words) or "dense", config=candidate)


# ----- config.json ------------------------------------------------------------------------------


def load_instructions(kind: str) -> str:
    """The sentence a stock loader shows for a non-stock folder."""
    return (
        f"not a stock transformers model: this folder holds a prunebench checkpoint ({kind}); "
        f"load it with prunebench.checkpoints.store.load_model(folder), or run {ONNX_FILE} with onnxruntime; "
        "see README.md in the folder and docs/loading_checkpoints.md"
    )


def wrap_config(config: dict, p: Plan) -> dict:
    """The ``config.json`` of a non-stock folder: stock loaders refuse it (module docstring)."""
    out = dict(config)
    base = str(config.get("model_type") or "model")
    for name in HIDDEN_FIELDS:
        if name in out:
            out[_hidden(name)] = out.pop(name)
    out["model_type"] = "prunebench-" + "-".join(p.tags or ["compacted"]) + "-" + base
    out["architectures"] = ["Prunebench" + str(a) for a in (config.get("architectures") or ["Model"])]
    out["num_attention_heads"] = load_instructions(p.kind)
    out[PORTABLE_ATTR] = "onnxruntime"
    out[KIND_ATTR] = p.kind
    return out


def mark_stock(config: dict, p: Plan) -> dict:
    out = dict(config)
    out[PORTABLE_ATTR] = "transformers"
    out[KIND_ATTR] = p.kind
    return out


def is_wrapped(config: dict) -> bool:
    return _hidden("model_type") in config


def unwrap_config(config: dict) -> dict:
    """The model's own config dict (what it was before ``wrap_config``); others unchanged."""
    if not is_wrapped(config):
        return dict(config)
    out = {k: v for k, v in config.items() if k not in HIDDEN_FIELDS}
    for name in HIDDEN_FIELDS:
        if _hidden(name) in out:
            out[name] = out.pop(_hidden(name))
    return out


def portability_of_config(config: dict) -> str:
    """STOCK when stock transformers loads the folder correctly, else PRUNEBENCH."""
    if is_wrapped(config) or config.get(SURGERY_ATTR) or config.get(QUANT_ATTR):
        return PRUNEBENCH  # new non-stock format, or a legacy prunebench folder (model_type bert)
    return STOCK


# ----- README.md --------------------------------------------------------------------------------


def readme(p: Plan, architecture: str) -> str:
    """The README.md written into a saved folder."""
    cls = architecture if architecture.startswith("Bert") else "AutoModelForSequenceClassification"
    head = f"# prunebench checkpoint: {p.kind}\n\n"
    if p.portable == STOCK:
        return head + (
            "A plain transformers checkpoint (`config.json`, `model.safetensors`, tokenizer files): it loads "
            "without prunebench and computes exactly what prunebench computed.\n\n"
            "```python\n"
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
            "model = AutoModelForSequenceClassification.from_pretrained(folder).eval()\n"
            "tokenizer = AutoTokenizer.from_pretrained(folder)\n"
            "```\n\n"
            "`prunebench.checkpoints.store.load_model(folder)` loads it too (after checking `checksums.json`). "
            "`model.sparse.safetensors` is the same weights with sparse-encoded matrices "
            "(`prunebench.checkpoints.store.load_sparse`).\n"
        )
    reasons = "".join(f"- {r}\n" for r in p.reasons)
    return head + (
        "**Stock transformers cannot load this model** (its config is deliberately unloadable: "
        f"`model_type` is not a transformers type and `num_attention_heads` is not a number), because:\n\n"
        f"{reasons}\n"
        "Load it with prunebench:\n\n"
        "```python\n"
        "from prunebench.checkpoints.store import load_model\n"
        "model = load_model(folder)  # verifies checksums.json, rebuilds the shapes, loads strictly\n"
        "```\n\n"
        f"or, without prunebench, run `{ONNX_FILE}` (written by the measure job, when present) with onnxruntime:\n\n"
        "```python\n"
        "import onnxruntime as ort\n"
        "from transformers import AutoTokenizer\n"
        "tokenizer = AutoTokenizer.from_pretrained(folder)  # the tokenizer files are stock\n"
        f'session = ort.InferenceSession(f"{{folder}}/{ONNX_FILE}")\n'
        'batch = tokenizer(["a fine film"], return_tensors="np")\n'
        "names = {i.name for i in session.get_inputs()}\n"
        "logits = session.run(None, {k: v for k, v in batch.items() if k in names})[0]\n"
        "```\n\n"
        f"`{cls}.from_pretrained(folder)` or `AutoModel*.from_pretrained(folder)` raise an error "
        "naming prunebench. The original `model_type`, `architectures` and `num_attention_heads` "
        "are in `config.json` as `prunebench_model_type`, `prunebench_architectures` and "
        "`prunebench_num_attention_heads`.\n"
    )
