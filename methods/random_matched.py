"""Random pruning with matched per-layer proportions (Blalock, Gonzalez Ortiz, Frankle & Guttag
2020, "What is the state of neural network pruning?", arXiv 2003.03033).

Blalock et al. recommend comparing a pruning method with random pruning that removes, in
every layer, the same fraction of weights the method removed there: it separates what a
method gains from *where* it prunes (its per-layer allocation) from what it gains from
*which* weights it picks. Here: in each encoder matrix m, a fixed random score per weight,
and the top-r_m weights by that score are kept, where r_m is the fraction the reference
method's model kept in that matrix (``details.per_matrix_remaining`` of its result record
at the same task, budget and seed, written by ``prunebench.runner.jobs``).

Schedule: the gradual cubic schedule of ``random`` (``methods.magnitude``), applied per
matrix, r_m(t) = r_m + (1 − r_m)(1 − p_t)^3, so every matrix starts dense, ends at its
reference fraction, and the total follows the usual cubic curve; masks are nested (fixed
scores). The fraction reached is the reference's achieved remaining fraction (within a few
weights per matrix of rounding), which for element-wise references is the budget.

The reference is the ``reference`` setting (default ``movement_soft``, the method whose
per-layer allocation is free); the workflow makes its record an input of this job.

Guard (``prunebench.method.base``): ``finalize`` applies the matched end point if the schedule has not
reached it; ``remaining_before_finalize`` is the encoder remaining fraction of the masked
model when ``finalize`` starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from methods.magnitude import GradualSettings, RandomPruning
from prunebench.method.registry import register
from prunebench.structure.budget import remaining_fraction
from prunebench.structure.masks import apply_masks


@dataclass(frozen=True)
class MatchedSettings(GradualSettings):
    reference: str = field(
        default="movement_soft",
        metadata={"help": "method whose per-matrix remaining fractions (same task, budget, seed) are matched"},
    )


class ReferenceRecordError(ValueError):
    """A reference record that cannot be matched; the message says why."""


@register("random_matched")
class RandomMatched(RandomPruning):
    """Random pruning keeping, per encoder matrix, the fraction the reference method kept."""

    paper = "random baseline with matched per-layer proportions (Blalock et al. 2020, arXiv 2003.03033)"
    scope = "local"
    needs_reference: ClassVar[bool] = True
    Settings = MatchedSettings
    finalize_enforcement = "the matched per-matrix fractions applied at once if the schedule had not reached them"

    def use_reference(self, record: dict[str, Any]) -> None:
        ref = self.settings.reference
        if record.get("method") != ref:
            raise ReferenceRecordError(
                f"random_matched: the reference record is for method {record.get('method')!r}, "
                f"but the 'reference' setting is {ref!r}"
            )
        if "budget" in record and abs(float(record["budget"]) - self.target_remaining) > 1e-9:
            raise ReferenceRecordError(
                f"random_matched: the reference record is at budget {record['budget']}, "
                f"this run at {self.target_remaining}"
            )
        granularity = record.get("details", {}).get("method", {}).get("granularity", "element")
        if granularity != "element":
            raise ReferenceRecordError(
                f"random_matched: reference {ref!r} prunes at {granularity!r} granularity; "
                "matched proportions need an element-wise reference with the dense shapes"
            )
        fractions = record.get("details", {}).get("per_matrix_remaining")
        if not isinstance(fractions, dict) or not fractions:
            raise ReferenceRecordError(f"random_matched: the {ref!r} record has no details.per_matrix_remaining")
        bad = {n: v for n, v in fractions.items() if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0}
        if bad:
            raise ReferenceRecordError(
                f"random_matched: per_matrix_remaining values must be fractions in [0, 1]; got {bad}"
            )
        self.reference_fractions = {n: float(v) for n, v in fractions.items()}

    def prepare(self, model, plan) -> None:
        if not hasattr(self, "reference_fractions"):
            raise ReferenceRecordError("random_matched: no reference record given (use_reference was not called)")
        super().prepare(model, plan)
        wanted = {f"{name}.weight" for name in self.linears}
        missing = sorted(wanted - set(self.reference_fractions))
        extra = sorted(set(self.reference_fractions) - wanted)
        if missing or extra:
            raise ReferenceRecordError(
                f"random_matched: the reference's matrices do not match this model's "
                f"(missing: {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unknown: {extra[:3]}{'...' if len(extra) > 3 else ''})"
            )
        self.matched = {name: self.reference_fractions[f"{name}.weight"] for name in self.linears}
        # What "remaining" means for this method: the reference's overall fraction.
        self.final_remaining = sum(self.matched[n] * m.weight.numel() for n, m in self.linears.items()) / sum(
            m.weight.numel() for m in self.linears.values()
        )

    def remaining_at(self, step: int) -> float:
        remaining = super().remaining_at(step)
        # Express the schedule against the matched end point instead of the nominal budget.
        progress = (1.0 - remaining) / (1.0 - self.target_remaining) if self.target_remaining < 1.0 else 1.0
        return 1.0 - progress * (1.0 - self.final_remaining)

    def _update_masks(self, remaining: float) -> None:
        # Cubic factor f = (1 - p)^3 recovered from the overall scheduled fraction.
        f = (remaining - self.final_remaining) / (1.0 - self.final_remaining) if self.final_remaining < 1.0 else 1.0
        f = min(1.0, max(0.0, f))
        self.masks = {}
        for name, module in self.linears.items():
            r = self.matched[name] + (1.0 - self.matched[name]) * f
            scores = self.score(name, module)
            k = round(r * scores.numel())
            mask = torch.zeros(scores.numel(), dtype=torch.bool)
            if k > 0:
                mask[torch.topk(scores.flatten(), k, sorted=False).indices] = True
            self.masks[name] = mask.view_as(scores)
        apply_masks(self.linears, self.masks)

    def finalize(self, model):
        apply_masks(self.linears, self.masks)
        self.remaining_before_finalize = remaining_fraction(model)
        if self._current_remaining() > self.final_remaining + 1e-12:
            self._update_masks(self.final_remaining)
        apply_masks(self.linears, self.masks)
        return model

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["matched_remaining"] = getattr(self, "final_remaining", None)
        return info
