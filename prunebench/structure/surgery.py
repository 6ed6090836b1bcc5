"""Model surgery on BERT-style encoders (``model.base_model.encoder.layer[i]``).

Two kinds of tools:

*Soft* (nothing changes shape; undo by removing the returned hook handles):

- ``head_gate_hooks(model, gates)``: multiply each head's context vector in layer ``l`` by
  ``gates[l][h]``. A forward pre-hook on the attention output projection
  (``layer.attention.output.dense``) reshapes its input to ``(..., heads, head_size)`` and
  scales it. This is the one mechanism for head masks and head gates (Michel et al.'s
  gate xi, L0 gates, ablations). ``gates[l]`` is looked up at every forward, so assigning
  a new tensor to ``gates[l]`` takes effect at the next call; it may be a tensor that
  requires grad (then ``tensor.grad`` is dL/d(gate)), ``None`` (layer untouched) or a
  zero-argument callable returning the tensor (e.g. a freshly sampled stochastic gate).
- ``mask_heads(model, heads)``: gates of 0 for the listed heads.
- ``mask_ffn_units(model, units)``: zero the listed feed-forward units.

*Hard* (shapes shrink; the model gets smaller and faster):

- ``remove_heads(model, heads)``: slice the Q, K, V rows and the attention output columns
  of the removed heads and update ``num_attention_heads``/``all_head_size`` of the attention
  module (``prunebench.measure.flops`` reads them). A layer may lose every head: its
  self-attention is replaced by ``NoHeadsSelfAttention`` (no parameters, zero context of
  width 0), so the attention block outputs ``LayerNorm(bias_O + x)`` -- exactly what masking
  all heads gives.
- ``remove_layers(model, layers)``: drop whole encoder layers (at least one must remain).
- ``remove_ffn_units(model, units)``: slice the intermediate rows and output columns
  (a layer may lose every unit: the feed-forward block then outputs its bias).

Head, layer and unit indices always refer to the model *as it is when the call is made*
(after earlier surgery), and layer indices are renumbered after ``remove_layers``.

Reloading a compacted checkpoint: every hard operation is a registered *surgery op*
(``@surgery_op(name)``, a function ``fn(model, args)`` that reshapes a model in place) and
records itself with ``record_op`` in ``model.config.prunebench_surgery`` -- a JSON list of
``{"op": name, "args": {...}}`` (layer indices as string keys). The config keeps describing
the *dense* architecture, so ``prunebench.checkpoints.store.load_model`` builds the dense-shaped
model from the config, ``replay``s the ops and then loads the weights strictly.
``record_op`` also sets ``config.prunebench_dense_encoder_weights`` (the original encoder
weight count, ``prunebench.structure.budget``) the first time, so compacted models are measured
against their dense origin. Other modules register their own ops with the same decorator
(``prunebench.structure.factorized``, ``prunebench.structure.fixed_attention``); the checkpoint
loader imports every module that defines one.

``prunebench.checkpoints.store.save_model`` saves a model whose result a stock transformers
config can describe (only layers removed and/or the same number of FFN units removed in
every layer) as a plain checkpoint instead: the config then describes the *compacted*
architecture, ``prunebench_surgery`` is dropped (nothing is replayed) and the ops are kept
as ``prunebench_surgery_history``. Ops recorded afterwards on such a reloaded model are
relative to the compacted architecture and are replayed on it. See ``prunebench.checkpoints.portable``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from prunebench.structure.budget import DENSE_SIZE_ATTR, dense_encoder_size

#: Config attribute holding the list of recorded surgery ops.
SURGERY_ATTR = "prunebench_surgery"

_OPS: dict[str, Callable[[nn.Module, dict], None]] = {}


class SurgeryError(ValueError):
    """Surgery that cannot be done (bad index, unknown op, removing every layer ...)."""


# ----- the op registry --------------------------------------------------------------------


def surgery_op(name: str):
    """Register ``fn(model, args: dict)`` as the surgery op ``name`` (replayed on reload).

    ``fn`` must reshape/alter ``model`` in place from ``args`` alone (a JSON-able dict), on
    a freshly built dense-shaped model with all earlier ops already replayed. It must *not*
    record itself (``record_op`` is for the public function that calls it).
    """

    def decorate(fn: Callable[[nn.Module, dict], None]):
        known = _OPS.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"surgery op {name!r} is already registered by {known.__module__}.{known.__qualname__}")
        _OPS[name] = fn
        return fn

    return decorate


def registered_ops() -> list[str]:
    """Names of the registered surgery ops, sorted."""
    return sorted(_OPS)


def record_op(model: nn.Module, name: str, args: dict[str, Any]) -> None:
    """Append ``{"op": name, "args": args}`` to ``model.config.prunebench_surgery``.

    Sets ``config.prunebench_dense_encoder_weights`` to the dense architecture's encoder
    weight count if it is not set yet. ``args`` must survive a JSON round trip unchanged
    (use string keys for layer indices).
    """
    if name not in _OPS:
        raise SurgeryError(f"surgery op {name!r} is not registered; registered ops: {', '.join(registered_ops())}")
    try:
        stored = json.loads(json.dumps(args))
    except (TypeError, ValueError) as exc:
        raise SurgeryError(f"surgery op {name!r}: args are not JSON-serialisable ({exc})") from exc
    if stored != args:
        raise SurgeryError(
            f"surgery op {name!r}: args change in a JSON round trip (use string keys, lists, plain numbers): {args!r}"
        )
    config = model.config
    if not getattr(config, DENSE_SIZE_ATTR, None):
        setattr(config, DENSE_SIZE_ATTR, dense_encoder_size(config))
    ops = list(getattr(config, SURGERY_ATTR, None) or [])
    ops.append({"op": name, "args": stored})
    setattr(config, SURGERY_ATTR, ops)


def recorded_ops(model_or_config) -> list[dict]:
    """The surgery ops recorded on a model (or config); empty for an uncompacted model."""
    config = getattr(model_or_config, "config", model_or_config)
    return list(getattr(config, SURGERY_ATTR, None) or [])


def replay(model: nn.Module, ops: Iterable[Mapping[str, Any]]) -> nn.Module:
    """Apply recorded ``ops`` in order to a dense-shaped ``model`` (does not record them again)."""
    for i, entry in enumerate(ops):
        name = entry.get("op") if isinstance(entry, Mapping) else None
        if name not in _OPS:
            raise SurgeryError(
                f"surgery op #{i} {name!r} is not registered (registered: {', '.join(registered_ops())}); "
                "import the module that defines it"
            )
        _OPS[name](model, dict(entry.get("args") or {}))
    return model


# ----- helpers -----------------------------------------------------------------------------


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of a BERT-style model."""
    try:
        return model.base_model.encoder.layer
    except AttributeError as exc:
        raise SurgeryError("model has no base_model.encoder.layer; is it a BERT-style encoder?") from exc


def head_counts(model: nn.Module) -> list[int]:
    """Number of attention heads currently in each layer."""
    return [int(layer.attention.self.num_attention_heads) for layer in encoder_layers(model)]


def head_size(model: nn.Module) -> int:
    """Size of one attention head (the same in every layer)."""
    return int(encoder_layers(model)[0].attention.self.attention_head_size)


def _by_layer(items: Mapping, what: str, n_layers: int) -> dict[int, list[int]]:
    """Normalise ``{layer: [indices]}`` (int or string keys) and check the layer range."""
    out: dict[int, list[int]] = {}
    for key, values in items.items():
        layer = int(key)
        if not 0 <= layer < n_layers:
            raise SurgeryError(f"{what}: layer {key!r} is out of range (the model has {n_layers} layers)")
        out[layer] = sorted({int(v) for v in values})
    return out


def _check_indices(indices: list[int], n: int, what: str) -> None:
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise SurgeryError(f"{what}: indices {bad} out of range (there are {n})")


@torch.no_grad()
def _slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` keeping rows (``dim=0``, output features) or columns (``dim=1``)."""
    weight = linear.weight.index_select(dim, keep.to(linear.weight.device))
    out_f, in_f = weight.shape
    with warnings.catch_warnings():  # torch warns that initialising a zero-size weight is a no-op
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        new = torch.nn.utils.skip_init(
            nn.Linear, in_f, out_f, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype
        )
    new.weight.copy_(weight)
    if linear.bias is not None:
        new.bias.copy_(linear.bias.index_select(0, keep.to(linear.bias.device)) if dim == 0 else linear.bias)
        new.bias.requires_grad_(linear.bias.requires_grad)
    new.weight.requires_grad_(linear.weight.requires_grad)
    new.train(linear.training)
    return new


def _keep_index(n_units: int, removed: list[int], width: int = 1) -> tuple[list[int], torch.Tensor]:
    gone = set(removed)
    kept = [u for u in range(n_units) if u not in gone]
    idx = [u * width + j for u in kept for j in range(width)]
    return kept, torch.tensor(idx, dtype=torch.long)


# ----- soft: gates and masks ---------------------------------------------------------------


def head_gate_hooks(model: nn.Module, gates) -> list[torch.utils.hooks.RemovableHandle]:
    """Scale each head's context in layer ``l`` by ``gates[l][h]``; returns the hook handles.

    ``gates`` is a sequence indexed by layer or a mapping ``{layer: tensor}``; layers it does
    not cover are untouched. Each gate tensor has one entry per *current* head of its layer.
    Remove the hooks with ``for h in handles: h.remove()``.
    """
    layers = encoder_layers(model)
    keys = list(gates.keys()) if isinstance(gates, Mapping) else list(range(len(gates)))
    handles = []
    for key in keys:
        l = int(key)
        if not 0 <= l < len(layers):
            raise SurgeryError(f"head gates: layer {key!r} out of range (the model has {len(layers)} layers)")
        att = layers[l].attention.self
        n_heads, size = int(att.num_attention_heads), int(att.attention_head_size)

        def hook(module, args, _key=key, _n=n_heads, _size=size, _l=l):
            gate = gates[_key]
            if callable(gate) and not isinstance(gate, torch.Tensor):
                gate = gate()
            if gate is None or _n == 0:
                return None
            gate = torch.as_tensor(gate)
            if gate.numel() != _n:
                raise SurgeryError(f"head gates of layer {_l}: {gate.numel()} values for {_n} heads")
            x = args[0]
            shaped = x.reshape(*x.shape[:-1], _n, _size) * gate.to(x.dtype).view(_n, 1)
            return (shaped.reshape(x.shape),) + tuple(args[1:])

        handles.append(layers[l].attention.output.dense.register_forward_pre_hook(hook))
    return handles


def mask_heads(model: nn.Module, heads: Mapping) -> list[torch.utils.hooks.RemovableHandle]:
    """Mask (gate 0) the listed heads ``{layer: [head, ...]}``; returns the hook handles."""
    counts = head_counts(model)
    heads = _by_layer(heads, "mask_heads", len(counts))
    gates = {}
    for l, hs in heads.items():
        _check_indices(hs, counts[l], f"mask_heads layer {l}")
        gate = torch.ones(counts[l])
        gate[hs] = 0.0
        gates[l] = gate
    return head_gate_hooks(model, gates)


def mask_ffn_units(model: nn.Module, units: Mapping) -> list[torch.utils.hooks.RemovableHandle]:
    """Zero the listed feed-forward units ``{layer: [unit, ...]}`` (after the activation)."""
    layers = encoder_layers(model)
    units = _by_layer(units, "mask_ffn_units", len(layers))
    handles = []
    for l, us in units.items():
        inter = layers[l].intermediate
        _check_indices(us, inter.dense.out_features, f"mask_ffn_units layer {l}")
        mask = torch.ones(inter.dense.out_features)
        mask[us] = 0.0
        handles.append(inter.register_forward_hook(lambda m, a, out, _mask=mask: out * _mask.to(out.dtype)))
    return handles


# ----- hard: remove heads, layers, feed-forward units --------------------------------------


class NoHeadsSelfAttention(nn.Module):
    """Self-attention of a layer whose heads were all removed: a context of width 0.

    The attention output projection then has 0 input features and returns its bias, so the
    block computes ``LayerNorm(bias + x)``. ``num_attention_heads = 0`` makes its FLOPs 0.
    """

    def __init__(self, attention_head_size: int):
        super().__init__()
        self.num_attention_heads = 0
        self.attention_head_size = int(attention_head_size)
        self.all_head_size = 0

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0), None


@surgery_op("remove_heads")
def _remove_heads_op(model: nn.Module, args: dict) -> None:
    layers = encoder_layers(model)
    for l, removed in _by_layer(args["heads"], "remove_heads", len(layers)).items():
        if not removed:
            continue
        layer = layers[l]
        att = layer.attention.self
        n, size = int(att.num_attention_heads), int(att.attention_head_size)
        _check_indices(removed, n, f"remove_heads layer {l}")
        kept, idx = _keep_index(n, removed, size)
        layer.attention.output.dense = _slice_linear(layer.attention.output.dense, idx, dim=1)
        if not kept:
            layer.attention.self = NoHeadsSelfAttention(size)
            continue
        att.query = _slice_linear(att.query, idx, 0)
        att.key = _slice_linear(att.key, idx, 0)
        att.value = _slice_linear(att.value, idx, 0)
        att.num_attention_heads = len(kept)
        att.all_head_size = len(kept) * size


@surgery_op("remove_layers")
def _remove_layers_op(model: nn.Module, args: dict) -> None:
    layers = encoder_layers(model)
    removed = sorted({int(i) for i in args["layers"]})
    _check_indices(removed, len(layers), "remove_layers")
    kept = [layer for i, layer in enumerate(layers) if i not in set(removed)]
    if not kept:
        raise SurgeryError(f"remove_layers: removing all {len(layers)} layers leaves no encoder")
    for i, layer in enumerate(kept):
        for att in (getattr(layer.attention, "self", None),):
            if att is not None and hasattr(att, "layer_idx"):
                att.layer_idx = i
    model.base_model.encoder.layer = nn.ModuleList(kept)


@surgery_op("remove_ffn_units")
def _remove_ffn_units_op(model: nn.Module, args: dict) -> None:
    layers = encoder_layers(model)
    for l, removed in _by_layer(args["units"], "remove_ffn_units", len(layers)).items():
        if not removed:
            continue
        layer = layers[l]
        n = layer.intermediate.dense.out_features
        _check_indices(removed, n, f"remove_ffn_units layer {l}")
        _, idx = _keep_index(n, removed)
        layer.intermediate.dense = _slice_linear(layer.intermediate.dense, idx, 0)
        layer.output.dense = _slice_linear(layer.output.dense, idx, 1)


def _as_args(items: Mapping) -> dict[str, list[int]]:
    return {str(int(k)): sorted({int(v) for v in vs}) for k, vs in items.items() if len(vs)}


def remove_heads(model: nn.Module, heads: Mapping) -> nn.Module:
    """Physically remove heads ``{layer: [head, ...]}`` (current indices); records the op."""
    args = {"heads": _as_args(heads)}
    _remove_heads_op(model, args)
    record_op(model, "remove_heads", args)
    return model


def remove_layers(model: nn.Module, layers: Iterable[int]) -> nn.Module:
    """Physically remove encoder layers (current indices; the rest are renumbered); records the op."""
    args = {"layers": sorted({int(i) for i in layers})}
    _remove_layers_op(model, args)
    record_op(model, "remove_layers", args)
    return model


def remove_ffn_units(model: nn.Module, units: Mapping) -> nn.Module:
    """Physically remove feed-forward units ``{layer: [unit, ...]}`` (current indices); records the op."""
    args = {"units": _as_args(units)}
    _remove_ffn_units_op(model, args)
    record_op(model, "remove_ffn_units", args)
    return model
