"""The one definition of a pruning budget: the fraction of encoder weights remaining.

Following Sanh et al. 2020 (movement pruning, Sec. 5), a budget counts only the weight
*matrices* of the Transformer encoder: in each layer the query, key, value and attention
output projections and the two feed-forward matrices. Embeddings, the pooler, the
classifier, biases and LayerNorm parameters are excluded. In BERT-base this is
12 x (4 x 768^2 + 2 x 768 x 3072) = 84.9M weights, so "10% remaining" is 8.5M weights.

The count is independent of the method: it walks the model's parameters and counts
non-zero entries of every 2-D parameter under the encoder, whatever module holds it. A
structurally compacted model (heads or layers removed, a matrix stored as two factors)
is counted the same way, against the *dense reference* size computed from the original
architecture, so every method is measured with the same ruler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Parameter-name fragment that marks the Transformer encoder in BERT-style models.
ENCODER_PREFIX = "encoder.layer."
# Config attribute where model surgery records the dense reference size.
DENSE_SIZE_ATTR = "prunebench_dense_encoder_weights"


class BudgetError(ValueError):
    """A budget outside (0, 1] or otherwise unusable."""


def check_budget(remaining: float) -> float:
    """Return ``remaining`` as a float if it is a valid budget, else raise ``BudgetError``."""
    try:
        value = float(remaining)
    except (TypeError, ValueError) as exc:
        raise BudgetError(
            f"budget {remaining!r} is not a number; a budget is the fraction of encoder weights remaining, in (0, 1]"
        ) from exc
    if not 0.0 < value <= 1.0:
        raise BudgetError(
            f"budget {remaining!r} is outside (0, 1]; a budget is the fraction of encoder weights remaining"
        )
    return value


def is_encoder_weight(name: str, param: torch.Tensor) -> bool:
    """True for a 2-D parameter inside the Transformer encoder (the budget's denominator)."""
    return ENCODER_PREFIX in name and param.dim() == 2


def encoder_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """All encoder weight matrices of ``model`` by parameter name."""
    return {name: p for name, p in model.named_parameters() if is_encoder_weight(name, p)}


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The encoder's ``nn.Linear`` modules whose weights element-wise methods prune."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and ENCODER_PREFIX in name + "."
    }


def dense_encoder_size(config) -> int:
    """Number of encoder weights of the *unpruned* architecture described by ``config``.

    Model surgery that changes shapes (removing heads, layers or feed-forward units)
    stores the original count in ``config.prunebench_dense_encoder_weights`` so a
    compacted model is compared with the model it came from.
    """
    recorded = getattr(config, DENSE_SIZE_ATTR, None)
    if recorded:
        return int(recorded)
    h = config.hidden_size
    return (4 * h * h + 2 * h * config.intermediate_size) * config.num_hidden_layers


@dataclass(frozen=True)
class WeightCount:
    """Result of counting encoder weights."""

    nonzero: int
    stored: int  # entries physically stored (shape-based)
    dense_reference: int

    @property
    def remaining_fraction(self) -> float:
        """Non-zero encoder weights over the dense reference: the budget's measure."""
        return self.nonzero / self.dense_reference

    @property
    def stored_fraction(self) -> float:
        """Stored encoder weights over the dense reference (what a dense kernel computes)."""
        return self.stored / self.dense_reference


@torch.no_grad()
def count_encoder_weights(model: nn.Module) -> WeightCount:
    """Count non-zero and stored encoder weights of ``model`` against its dense reference."""
    weights = encoder_weights(model)
    if not weights:
        raise BudgetError(
            "the model has no encoder weight matrices under 'encoder.layer.'; is it a BERT-style encoder?"
        )
    nonzero = sum(int(torch.count_nonzero(w)) for w in weights.values())
    stored = sum(w.numel() for w in weights.values())
    return WeightCount(nonzero=nonzero, stored=stored, dense_reference=dense_encoder_size(model.config))


def remaining_fraction(model: nn.Module) -> float:
    """Fraction of encoder weights remaining (non-zero) in ``model``."""
    return count_encoder_weights(model).remaining_fraction


@torch.no_grad()
def per_matrix_remaining(model: nn.Module) -> dict[str, float]:
    """Fraction of non-zero entries of each encoder weight matrix, by parameter name."""
    # a matrix removed entirely by surgery (e.g. a layer without heads) has no entries: 0 remain
    return {
        name: float(torch.count_nonzero(w)) / w.numel() if w.numel() else 0.0
        for name, w in encoder_weights(model).items()
    }
