"""Calibration batches for one-shot and second-order pruning methods.

Methods never see the trainer's batches (``prunebench.method.base``). The one-shot methods (Wanda,
Sun et al. 2023; SparseGPT, Frantar & Alistarh 2023) need input activations, and oBERT
(Kurtic et al. 2022) needs loss gradients, of examples of the task's **training split**.
The trainer hands them a ``CalibrationSource`` in ``TrainingPlan.calibration``: called with
a number of examples, it draws that many distinct training examples with the run's seed and
returns them tokenized and padded (``CalibrationSet``), together with the indices used, so a
method's ``describe()`` can say which examples it saw (count, indices, SHA-256 of the
indices).

Draws are reproducible: draw ``k`` of a run with seed ``s`` always returns the same
examples; successive draws (``draw=0, 1, ...``, e.g. one per oBERT pruning step) are
independent samples.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: Offset that keeps the calibration stream apart from the trainer's batch order.
_STREAM = 0xCA11B


@dataclass(frozen=True)
class CalibrationSet:
    """``batches`` of padded training examples (dicts as the model takes) and their ``indices``."""

    batches: list[dict[str, torch.Tensor]]
    indices: list[int]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def describe(self, list_limit: int = 64) -> dict:
        """Count, SHA-256 of the sorted indices and (up to ``list_limit``) the indices themselves."""
        return describe_indices(self.indices, list_limit)


def describe_indices(indices: list[int], list_limit: int = 64) -> dict:
    """Record of which training examples were used: count, hash, indices when few."""
    ordered = sorted(int(i) for i in indices)
    digest = hashlib.sha256(",".join(map(str, ordered)).encode()).hexdigest()
    return {
        "split": "train",
        "count": len(ordered),
        "indices_sha256": digest,
        "indices": ordered if len(ordered) <= list_limit else None,
    }


class CalibrationSource:
    """Draws calibration examples from the training split (what ``TrainingPlan.calibration`` holds).

    ``collate(indices)`` turns dataset indices into a padded batch (the trainer's ``_collate``).
    """

    def __init__(
        self,
        size: int,
        collate: Callable[[list[int]], dict[str, torch.Tensor]],
        seed: int,
        device: torch.device | str = "cpu",
    ):
        if size <= 0:
            raise ValueError(f"calibration needs a non-empty training split, got {size} examples")
        self.size, self.collate, self.seed, self.device = int(size), collate, int(seed), torch.device(device)

    def indices(self, n: int, draw: int = 0) -> list[int]:
        """``n`` distinct training indices of draw ``draw`` (all of them, shuffled, if ``n`` >= size)."""
        if n <= 0:
            raise ValueError(f"number of calibration examples must be positive, got {n}")
        rng = np.random.default_rng([self.seed, _STREAM, int(draw)])
        return [int(i) for i in rng.permutation(self.size)[: min(n, self.size)]]

    def __call__(self, n: int, batch_size: int = 16, draw: int = 0) -> CalibrationSet:
        """``n`` examples of draw ``draw`` in padded batches of ``batch_size``, on the training device."""
        if batch_size <= 0:
            raise ValueError(f"calibration batch_size must be positive, got {batch_size}")
        chosen = self.indices(n, draw)
        batches = [
            {k: v.to(self.device) for k, v in self.collate(chosen[i : i + batch_size]).items()}
            for i in range(0, len(chosen), batch_size)
        ]
        return CalibrationSet(batches, chosen)


def require_calibration(plan, method_name: str) -> CalibrationSource:
    """The plan's calibration source, or a clear error naming the method that needs it."""
    source = getattr(plan, "calibration", None)
    if source is None:
        raise ValueError(
            f"method {method_name!r} needs calibration data from the training split, but the "
            "TrainingPlan has none (the trainer fills TrainingPlan.calibration)"
        )
    return source


# ----- inputs of the encoder's Linear layers, one encoder layer at a time -------------------


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


def linears_by_layer(linears: dict[str, nn.Module]) -> list[dict[str, nn.Module]]:
    """Group the encoder's Linear modules by their encoder layer index (``encoder.layer.<i>.``)."""
    groups: dict[int, dict[str, nn.Module]] = {}
    for name, module in linears.items():
        found = _LAYER.search(name)
        if found is None:
            raise ValueError(f"linear {name!r} is not inside an encoder layer ('encoder.layer.<i>.')")
        groups.setdefault(int(found.group(1)), {})[name] = module
    return [groups[i] for i in sorted(groups)]


_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")


@torch.no_grad()
def collect_layer_inputs(
    model: nn.Module,
    layer: dict[str, nn.Module],
    calibration: CalibrationSet,
    accumulate: Callable[[str, torch.Tensor], None],
) -> None:
    """Feed every calibration batch through ``model`` and pass each Linear's inputs to ``accumulate``.

    ``accumulate(name, x)`` receives the inputs of Linear ``name`` at real tokens only (padding
    removed with the attention mask), as an fp32 matrix of shape (tokens, in_features). The
    forward pass stops right after the last of ``layer``'s modules has run, so layers above it
    cost nothing. Layers below run with their current (already pruned) weights: calling this
    layer after layer gives the sequential scheme of SparseGPT and Wanda. Dropout is off
    (eval mode) during collection; the model's mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    current: dict[str, torch.Tensor] = {}
    remaining = set(layer)

    def hook_for(name: str):
        def hook(module, inputs, output):
            x = inputs[0]
            real = current["mask"].reshape(-1).bool()
            accumulate(name, x.reshape(-1, x.shape[-1])[real].float())
            remaining.discard(name)
            if not remaining:
                raise _StopForward

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layer.items()]
    try:
        for batch in calibration:
            inputs = {k: v for k, v in batch.items() if k in _MODEL_INPUTS}
            current["mask"] = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
            remaining.clear()
            remaining.update(layer)
            try:
                model(**inputs)
            except _StopForward:
                pass
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
