"""Fixed position-only attention heads and their surgery op (Raganato, Scherrer & Tiedemann 2020,
arXiv 2002.10260); the method that installs them is ``methods/fixed_attention.py``.

Patterns (head ``h`` of the fixed heads gets ``patterns[h mod len(patterns)]``), for a query
at position ``i`` of a sequence whose non-padding positions are ``V`` (``j`` ranges over
``V``; row weights sum to 1 over non-padding keys):

- ``current``:  weight 1 on ``i`` itself.
- ``previous``: weight 1 on ``i - 1``; on ``i`` itself when ``i - 1`` is outside the sequence
  or padding (the first token, [CLS], attends to itself).
- ``next``:     weight 1 on ``i + 1``; on ``i`` itself when ``i + 1`` is outside the sequence or
  padding (the last real token, [SEP], attends to itself).
- ``left``:     uniform ``1 / |{j in V: j < i}|`` over all preceding non-padding tokens; the
  first token attends to itself.
- ``right``:    uniform ``1 / |{j in V: j > i}|`` over all following non-padding tokens; the
  last real token attends to itself.

Padding queries get whatever these rules give; their outputs are never used. The padding mask
is read from the additive or boolean 4-D mask transformers passes to the layer (the row of
query 0, which is [CLS] under right padding, is taken as the key mask).

Implementation: the patterns are computed without an L x L matrix -- shifts for
``previous``/``next``, prefix sums for ``left``/``right`` -- and ``pattern_matrix`` gives the same
weights as an explicit matrix (used by the tests). ``FixedPatternSelfAttention`` keeps
BERT's semantics: ``num_attention_heads`` is the number of heads whose contexts the output
projection reads (fixed + learnable), ``attention_head_size`` their size and ``all_head_size``
their product; ``num_learnable_heads`` counts the heads with query/key projections. Its
``attention_flops(seq_len)`` counts ``2 x 2 x L^2 x d`` (``Q K^T`` and the weighted sum) per
learnable head, nothing for ``current``/``previous``/``next`` (copies and shifts) and
``4 x L x d`` (mask, prefix sum, difference, division) per ``left``/``right`` head.

Surgery op ``fixed_attention``: args ``{"layers": {"<layer>": [pattern or "learnable" per head]}}``;
``prunebench.checkpoints.store.load_model`` replays it to rebuild the shapes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.structure.surgery import SurgeryError, encoder_layers, record_op, surgery_op

#: Position-only patterns, in the order heads are assigned them.
PATTERNS = ("current", "previous", "next", "left", "right")
LEARNABLE = "learnable"


# ----- the patterns ------------------------------------------------------------------------


def key_padding(attention_mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """``(batch, length)`` bool, True for non-padding keys, from the mask a BERT layer receives."""
    if attention_mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    m = attention_mask
    if m.dim() == 4:
        m = m[:, 0, 0, :]
    elif m.dim() == 3:
        m = m[:, 0, :]
    if m.dtype == torch.bool:
        valid = m
    elif m.is_floating_point() and attention_mask.dim() >= 3:  # additive: 0 keep, very negative masked
        valid = m > torch.finfo(m.dtype).min / 2
    else:  # a plain 2-D 0/1 mask
        valid = m != 0
    return valid.expand(batch, length).to(device)


def _fixed_context(pattern: str, v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Context of fixed heads: ``v`` is ``(B, heads, L, d)``, ``valid`` ``(B, L)``; same shape out."""
    vmask = valid[:, None, :, None]
    if pattern == "current":
        return v
    if pattern in ("previous", "next"):
        if pattern == "previous":
            shifted = torch.cat([v[:, :, :1], v[:, :, :-1]], dim=2)
            ok = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)
        else:
            shifted = torch.cat([v[:, :, 1:], v[:, :, -1:]], dim=2)
            ok = torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], dim=1)
        return torch.where(ok[:, None, :, None], shifted, v)
    if pattern in ("left", "right"):
        # prefix sums in float32 even under bf16 autocast (their differences cancel)
        vm = v.float() * vmask.float()
        csum = torch.cumsum(vm, dim=2)
        ones = valid.float()
        ccount = torch.cumsum(ones, dim=1)
        if pattern == "left":  # exclusive prefix: keys j < i
            total, count = csum - vm, ccount - ones
        else:  # exclusive suffix: keys j > i
            total, count = csum[:, :, -1:] - csum, ccount[:, -1:] - ccount
        count = count[:, None, :, None]
        mean = (total / count.clamp(min=1.0)).to(v.dtype)
        return torch.where(count > 0, mean, v)
    raise ValueError(f"unknown attention pattern {pattern!r}; patterns are {', '.join(PATTERNS)}")


def pattern_matrix(pattern: str, valid: torch.Tensor) -> torch.Tensor:
    """The ``(B, L, L)`` attention weights of ``pattern`` (rows: queries, columns: keys)."""
    batch, length = valid.shape
    eye = torch.eye(length).expand(batch, length, length)
    # the pattern applied to one-hot "values" gives its weight matrix: context_i = sum_j A_ij e_j
    return _fixed_context(pattern, eye[:, None], valid.bool())[:, 0]


# ----- the self-attention module -------------------------------------------------------------


class FixedPatternSelfAttention(nn.Module):
    """BERT self-attention where some heads attend by fixed position-only patterns."""

    def __init__(self, config, patterns: list[str], layer_idx: int | None = None):
        super().__init__()
        unknown = sorted(set(patterns) - set(PATTERNS) - {LEARNABLE})
        if unknown:
            raise ValueError(
                f"unknown attention pattern(s) {unknown}; patterns are {', '.join(PATTERNS)} or {LEARNABLE!r}"
            )
        self.config = config
        self.layer_idx = layer_idx
        self.patterns = list(patterns)
        self.num_attention_heads = len(self.patterns)
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.learnable_heads = [h for h, p in enumerate(self.patterns) if p == LEARNABLE]
        self.num_learnable_heads = len(self.learnable_heads)
        self.scaling = self.attention_head_size**-0.5
        qk = self.num_learnable_heads * self.attention_head_size
        with warnings.catch_warnings():  # no learnable head: zero-size Q/K are legal
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            self.query = nn.Linear(config.hidden_size, qk)
            self.key = nn.Linear(config.hidden_size, qk)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def extra_repr(self) -> str:
        return f"patterns={self.patterns}"

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        batch, length, _ = hidden_states.shape
        d = self.attention_head_size
        v = self.value(hidden_states).view(batch, length, self.num_attention_heads, d).transpose(1, 2)
        heads: list[torch.Tensor | None] = [None] * self.num_attention_heads
        if self.learnable_heads:
            q = self.query(hidden_states).view(batch, length, -1, d).transpose(1, 2)
            k = self.key(hidden_states).view(batch, length, -1, d).transpose(1, 2)
            idx = torch.tensor(self.learnable_heads, device=v.device)
            mask = (
                attention_mask.to(q.dtype)
                if attention_mask is not None and attention_mask.is_floating_point()
                else attention_mask
            )
            ctx = F.scaled_dot_product_attention(
                q,
                k,
                v.index_select(1, idx),
                attn_mask=mask,
                dropout_p=self.dropout.p if self.training else 0.0,
                scale=self.scaling,
            )
            for j, h in enumerate(self.learnable_heads):
                heads[h] = ctx[:, j]
        if self.num_learnable_heads < self.num_attention_heads:
            valid = key_padding(attention_mask, batch, length, v.device)
            for pattern in PATTERNS:
                hs = [h for h, p in enumerate(self.patterns) if p == pattern]
                if hs:
                    ctx = _fixed_context(pattern, v.index_select(1, torch.tensor(hs, device=v.device)), valid)
                    for j, h in enumerate(hs):
                        heads[h] = ctx[:, j]
        out = torch.stack(heads, dim=2)  # (B, L, heads, d)
        return out.reshape(batch, length, self.all_head_size), None

    def attention_flops(self, seq_len: int) -> float:
        """FLOPs of the attention products at ``seq_len`` (``prunebench.measure.flops`` calls it)."""
        L, d = float(seq_len), float(self.attention_head_size)
        learnable = 2.0 * 2.0 * L * L * d * self.num_learnable_heads
        context = 4.0 * L * d * sum(p in ("left", "right") for p in self.patterns)
        return learnable + context


# ----- surgery -------------------------------------------------------------------------------


@surgery_op("fixed_attention")
@torch.no_grad()
def _fixed_attention_op(model: nn.Module, args: dict[str, Any]) -> None:
    """Replace the self-attention of each listed layer by ``FixedPatternSelfAttention``."""
    layers = encoder_layers(model)
    for key, patterns in args["layers"].items():
        l = int(key)
        if not 0 <= l < len(layers):
            raise SurgeryError(f"fixed_attention: layer {key!r} out of range (the model has {len(layers)} layers)")
        old = layers[l].attention.self
        n, d = int(old.num_attention_heads), int(old.attention_head_size)
        if isinstance(old, FixedPatternSelfAttention) or len(patterns) != n:
            raise SurgeryError(f"fixed_attention: layer {l} has {n} plain heads, got {len(patterns)} patterns")
        new = FixedPatternSelfAttention(model.config, list(patterns), getattr(old, "layer_idx", l))
        new.to(device=old.value.weight.device, dtype=old.value.weight.dtype)
        rows = torch.tensor(
            [h * d + j for h in new.learnable_heads for j in range(d)], dtype=torch.long, device=old.query.weight.device
        )
        for name in ("query", "key"):
            src, dst = getattr(old, name), getattr(new, name)
            dst.weight.copy_(src.weight.index_select(0, rows))
            dst.bias.copy_(src.bias.index_select(0, rows))
        new.value.load_state_dict(old.value.state_dict())
        new.train(old.training)
        layers[l].attention.self = new


def fix_heads(model: nn.Module, layers: Mapping[int, list[str]]) -> nn.Module:
    """Give heads fixed patterns ``{layer: [pattern or 'learnable' per head]}``; records the op."""
    args = {"layers": {str(int(l)): list(p) for l, p in layers.items()}}
    _fixed_attention_op(model, args)
    record_op(model, "fixed_attention", args)
    return model


def assign_patterns(n_heads: int, learnable: int, patterns: tuple[str, ...] = PATTERNS) -> list[str]:
    """Head patterns of one layer: the first ``learnable`` heads learnable, the rest cycling ``patterns``."""
    if not 0 <= learnable <= n_heads:
        raise ValueError(f"learnable heads per layer must be in [0, {n_heads}], got {learnable}")
    return [LEARNABLE] * learnable + [patterns[i % len(patterns)] for i in range(n_heads - learnable)]
