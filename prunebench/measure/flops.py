"""Theoretical FLOPs per example (one multiply-add = 2 FLOPs), at a given sequence length.

Two counts, so "pruned but no speed-up" is visible:

- ``sparse``: every linear layer costs 2 x (non-zero weights) per token -- what a kernel that
  skips zeros could reach (the usual "theoretical" figure of unstructured pruning papers);
- ``dense_kernels``: every linear layer costs 2 x (stored weights) per token -- what dense
  matrix kernels execute; it shrinks only when shapes shrink (structured pruning).

Both add the attention score and context products, 2 x 2 x L^2 x (heads x head size) per
layer, computed from the attention modules' current shapes (a module with an
``attention_flops(seq_len)`` method, e.g. fixed attention patterns, counts itself).
Embedding lookups cost nothing.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def flops_per_example(model: nn.Module, seq_len: int) -> dict[str, float]:
    sparse = dense = 0.0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            # the pooler and classifier run on one token; everything else on every token
            tokens = seq_len if _per_token(module, model) else 1
            sparse += 2.0 * int(torch.count_nonzero(module.weight)) * tokens
            dense += 2.0 * module.weight.numel() * tokens
        if hasattr(module, "attention_flops"):  # custom attention (e.g. fixed patterns) counts itself
            attn = float(module.attention_flops(seq_len))
            sparse += attn
            dense += attn
        elif hasattr(module, "attention_head_size") and hasattr(module, "num_attention_heads"):
            attn = 2.0 * 2.0 * seq_len * seq_len * module.num_attention_heads * module.attention_head_size
            sparse += attn
            dense += attn
    return {"sparse": sparse, "dense_kernels": dense}


def _per_token(linear: nn.Linear, model: nn.Module) -> bool:
    heads = [getattr(model, "classifier", None), getattr(getattr(model, "base_model", None), "pooler", None)]
    return not any(h is not None and any(linear is m for m in h.modules()) for h in heads)
