"""Torch-Pruning as a peer row: DepGraph structural pruning of whole attention heads and
feed-forward channels by weight magnitude (Fang et al. 2023, "DepGraph: Towards Any
Structural Pruning", CVPR 2023, arXiv 2301.12900; the PyPI package ``torch-pruning``,
pinned ``torch-pruning==1.6.1``, run as a library inside the benchmark).

What the library does here, configured as its BERT example
(``examples/transformers/prune_hf_bert.py`` in VainF/Torch-Pruning): a dependency graph is
traced from one forward pass of the model (``tp.pruner.BasePruner``, the class the example's
``MetaPruner`` is now an alias of), the coupled parameters of every prunable structure are
grouped, each group is scored by ``tp.importance.MagnitudeImportance(p=2,
group_reduction="mean")`` (the example's importance; Torch-Pruning's default ``normalizer=
"mean"``), and the lowest-scored structures are removed in one shot (``iterative_steps=1``,
as in the example) with ``prune_num_heads=True, prune_head_dims=False``: whole heads, found
through ``num_heads`` = {query, key, value: heads}. A channel's score is the L2 norm of its
rows/columns, averaged over the coupled matrices of its group (Q, K, V rows and attention-output
columns; intermediate rows and FFN-output columns) and divided by the group's mean; a head's
score is the mean over its channels. Larger weights are kept.

What is pruned, and what is not. Only whole heads (Q, K, V rows + attention-output columns)
and whole FFN channels (intermediate rows + output columns). Unlike the example, the hidden
size (the residual stream: embeddings, LayerNorms, every matrix's hidden side) is never
pruned -- ``prunebench.structure.surgery`` cannot express it and the budget's dense reference assumes it
-- nor are head dimensions: every module other than Q/K/V and the intermediate projection is in
``ignored_layers``, so the only groups rooted in the graph are the attention groups and the FFN
groups. Every group Torch-Pruning yields is checked to touch only those matrices on those sides
and to remove whole heads; anything else raises ``TorchPruningError``.

Budget, by the shared ruler (``prunebench.structure.budget``). The example prunes heads and channels with
one ratio (``pruning_ratio = head_pruning_ratio``); so does this method: with ``E`` the encoder
weights to remove (non-zero count minus target x dense reference) and ``r = E / prunable
weights`` (1 - target for a dense start), it removes ``r x heads`` heads (each 4 x hidden x
head size weights), rounded to the nearest whole head (halves up; down if rounding up would
overshoot the budget), then the fewest FFN channels (2 x hidden weights each) that bring the
remaining fraction to or below the target -- so the fraction reached is less than one FFN
channel (one per layer with layer-wise ranking) below the target: as close as possible from below. The
counts are handed to Torch-Pruning as ratios it turns back into exactly those counts
(``(n - 0.5) / total``); the FFN projections are one ranking scope of their own
(``pruning_ratio_dict``), so their count does not depend on the heads' scores. Floors: every
layer keeps at least one head and one FFN channel (Torch-Pruning refuses to empty a layer);
below that the budget is unreachable, the method prunes to the floor and says so
(``describe()`` -> ``torch_pruning.budget_reachable``, ``reached``); the record measures the
weights anyway. With MiniLM-L6-H384 the floor is 0.028, so 0.5 and 0.1 are both reachable.

Ranking: global (``global_pruning=True``, the example's setting), i.e. heads ranked across all
layers and FFN channels across all layers. Torch-Pruning silently skips a group whose pruning
would empty a layer (``DependencyGraph.check_pruning_group``), e.g. MiniLM at budget 0.1: the
global head threshold covers all 12 heads of one layer, that layer's group is refused and only
53 of the planned 65 heads go (the model would stay well above the budget). So the global plan
is first tried on a copy; when the counts it removes differ from the plan, the method falls back
to layer-wise ranking (``global_pruning=False``: the same share of heads and channels in every
layer, ranked within the layer) and reports ``ranking: "layer-wise"`` and the reason.
``global_ranking: false`` asks for layer-wise directly.

When: one shot at the start of fine-tuning (``prepare``), from the fine-tuned dense checkpoint
(``starts_from = "dense"``), then the compacted model is fine-tuned for the common budget --
DepGraph's prune-then-fine-tune protocol; the example prunes in one step. (Gradual pruning,
``iterative_steps > 1``, would replace parameters during training, which the shared trainer's
optimiser cannot follow.) ``finalize`` prunes nothing (``remaining_before_finalize`` is the
fraction the one-shot selection reached).

Reloading: the heads and channels Torch-Pruning removed (read from the groups it yields) are
recorded as ``prunebench.structure.surgery`` ops (``remove_heads``, ``remove_ffn_units``, dense indices)
with ``record_op``, and the attention modules' ``num_attention_heads``/``all_head_size`` are
updated as the example does. ``prepare`` replays the recorded ops on a copy of the unpruned
model and requires every tensor to equal Torch-Pruning's result, so
``prunebench.checkpoints.store.load_model`` rebuilds exactly this model.

transformers 5: BERT's attention reshapes with ``view(*shape, -1, head_size)`` and calls the
attention interface (``sdpa`` by default); Torch-Pruning traces through
``scaled_dot_product_attention``'s backward node as an element-wise op, which couples the
Q/K/V channels index by index -- correct for whole-head removal. Checked with torch 2.13,
transformers 5.23 (sdpa and eager).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import register
from prunebench.structure.budget import count_encoder_weights
from prunebench.structure.surgery import encoder_layers, record_op, recorded_ops, replay

#: The pin this method was written and checked against.
TORCH_PRUNING_PIN = "torch-pruning==1.6.1"


class TorchPruningError(RuntimeError):
    """Torch-Pruning is missing, or pruned something prunebench's surgery cannot express."""


@dataclass(frozen=True)
class TorchPruningSettings:
    global_ranking: bool = field(
        default=True,
        metadata={
            "help": "rank heads and FFN channels across layers "
            "(Torch-Pruning's global_pruning, the example's setting); "
            "falls back to layer-wise where global ranking would empty a layer"
        },
    )
    p: int = field(default=2, metadata={"help": "norm of MagnitudeImportance (the example: 2)"})
    group_reduction: str = field(
        default="mean", metadata={"help": "how MagnitudeImportance reduces a group's scores (the example: 'mean')"}
    )
    trace_tokens: int = field(
        default=16, metadata={"help": "length of the dummy input that traces the dependency graph"}
    )

    def __post_init__(self):
        if self.p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {self.p!r}")
        if self.group_reduction not in ("mean", "sum", "max", "prod", "first"):
            raise ValueError(f"group_reduction {self.group_reduction!r} is not one of Torch-Pruning's reductions")
        if self.trace_tokens < 2:
            raise ValueError("trace_tokens must be >= 2")


def _import_tp():
    try:
        import torch_pruning as tp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TorchPruningError(
            f"method 'torch_pruning' needs the PyPI package torch-pruning ({TORCH_PRUNING_PIN}): "
            f"pip install {TORCH_PRUNING_PIN}"
        ) from exc
    return tp


def torch_pruning_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch-pruning")
    except PackageNotFoundError:
        return None


# ----- the plan: how many heads and channels ------------------------------------------------


@dataclass(frozen=True)
class Plan:
    ranking: str  # "global" or "layer-wise"
    heads: int  # heads removed in all (layer-wise: per layer x layers)
    units: int  # FFN channels removed in all
    head_ratio: float  # what Torch-Pruning is given (gives back exactly ``heads``)
    ffn_ratio: float
    reached: float  # remaining fraction the plan reaches (structural count)
    reachable: bool


def _shape(model: nn.Module) -> dict[str, Any]:
    layers = encoder_layers(model)
    heads = [int(layer.attention.self.num_attention_heads) for layer in layers]
    units = [int(layer.intermediate.dense.out_features) for layer in layers]
    size = int(layers[0].attention.self.attention_head_size)
    hidden = int(layers[0].attention.output.dense.out_features)
    return {
        "layers": len(layers),
        "heads": heads,
        "units": units,
        "head_size": size,
        "hidden": hidden,
        "per_head": 4 * hidden * size,
        "per_unit": 2 * hidden,
    }


def plan_pruning(model: nn.Module, target: float, ranking: str) -> Plan:
    """Heads and FFN channels to remove so the remaining fraction is at or just below ``target``.

    One ratio ``r`` for both (the example's ``pruning_ratio = head_pruning_ratio``): ``r x heads``
    rounded to the nearest head, then the fewest channels that reach the target. Every layer keeps >= 1 head
    and >= 1 channel; ``reachable`` is false when those floors stop the plan above the target.
    """
    s = _shape(model)
    count = count_encoder_weights(model)
    L, a, b = s["layers"], s["per_head"], s["per_unit"]
    excess = count.nonzero - target * count.dense_reference  # weights to remove
    prunable = sum(s["heads"]) * a + sum(s["units"]) * b
    r = min(1.0, max(0.0, excess / prunable)) if prunable else 0.0
    if ranking == "global":
        H, U = sum(s["heads"]), sum(s["units"])
        cap_h, cap_u, step = H - L, U - L, 1
        n_h = min(math.floor(r * H + 0.5), cap_h)
        if excess - n_h * a < 0:
            n_h = min(math.floor(r * H), cap_h)
    else:
        if len(set(s["heads"])) != 1 or len(set(s["units"])) != 1:
            raise TorchPruningError(
                f"layer-wise ranking needs the same heads and FFN width in every layer, got "
                f"heads {s['heads']}, FFN {s['units']}"
            )
        H, U = s["heads"][0], s["units"][0]
        cap_h, cap_u, step = H - 1, U - 1, L
        n_h = min(math.floor(r * H + 0.5), cap_h)
        if excess - n_h * a * L < 0:
            n_h = min(math.floor(r * H), cap_h)
    n_h = max(0, n_h)
    need = math.ceil((excess - n_h * a * step) / (b * step) - 1e-9) if excess > 0 else 0
    n_u = min(max(0, need), cap_u)
    removed = (n_h * a + n_u * b) * step
    reached = (count.nonzero - removed) / count.dense_reference
    return Plan(
        ranking, n_h * step, n_u * step, _ratio(n_h, H), _ratio(n_u, U), reached, reachable=reached <= target + 1e-12
    )


def _ratio(n: int, total: int) -> float:
    """The ratio Torch-Pruning turns back into exactly ``n`` of ``total`` (it floors/ceils ``total x ratio``)."""
    return 0.0 if n <= 0 else (n - 0.5) / total


# ----- running Torch-Pruning ---------------------------------------------------------------


def _example_inputs(model: nn.Module, tokens: int) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    vocab = int(getattr(model.config, "vocab_size", 1000))
    ids = (torch.arange(tokens) * 7 + 1000) % vocab
    ids = ids.unsqueeze(0).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _sum_outputs(out) -> torch.Tensor:
    """A scalar of every floating output (logits, or start/end logits), for graph tracing."""
    values = out.values() if hasattr(out, "values") else (out if isinstance(out, (tuple, list)) else [out])
    tensors = [v for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return sum(t.sum() for t in tensors)


def run_torch_pruning(
    model: nn.Module, head_ratio: float, ffn_ratio: float, global_ranking: bool, settings: TorchPruningSettings
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Prune ``model`` in place with Torch-Pruning; returns ``(removed heads, removed FFN units)`` by layer.

    Heads and units are indices of the model as it was before the call. Raises
    ``TorchPruningError`` when a group touches anything but whole heads and FFN channels.
    """
    tp = _import_tp()
    layers = encoder_layers(model)
    size = int(layers[0].attention.self.attention_head_size)
    num_heads: dict[nn.Module, int] = {}
    allowed: dict[tuple[int, bool], tuple[int, str]] = {}  # (id(module), out side?) -> (layer, role)
    for l, layer in enumerate(layers):
        att = layer.attention.self
        for role, lin in (("query", att.query), ("key", att.key), ("value", att.value)):
            num_heads[lin] = int(att.num_attention_heads)
            allowed[(id(lin), True)] = (l, role)
        allowed[(id(layer.attention.output.dense), False)] = (l, "attention_output")
        allowed[(id(layer.intermediate.dense), True)] = (l, "intermediate")
        allowed[(id(layer.output.dense), False)] = (l, "output")
    ffn = tuple(layer.intermediate.dense for layer in layers)
    roots = set(num_heads) | set(ffn)
    # every other module holding parameters is ignored: no group may be rooted in it, so the
    # hidden size (embeddings, attention output, FFN output, LayerNorms, pooler, head) stays
    ignored = [
        m
        for m in model.modules()
        if m not in roots and not list(m.children()) and any(True for _ in m.parameters(recurse=False))
    ]
    was_training = model.training
    try:
        with torch.enable_grad():
            pruner = tp.pruner.BasePruner(
                model,
                _example_inputs(model, settings.trace_tokens),
                importance=tp.importance.MagnitudeImportance(p=settings.p, group_reduction=settings.group_reduction),
                global_pruning=global_ranking,
                iterative_steps=1,
                pruning_ratio=head_ratio,  # attention groups' scope (head dims are not pruned)
                pruning_ratio_dict={ffn: ffn_ratio},  # FFN channels: a scope of their own
                num_heads=num_heads,
                prune_num_heads=True,
                prune_head_dims=False,
                head_pruning_ratio=head_ratio,
                in_channel_groups={},
                out_channel_groups={},  # fresh dicts: the library's defaults are shared
                output_transform=_sum_outputs,
                ignored_layers=ignored,
            )
        is_out = pruner.DG.is_out_channel_pruning_fn
        is_in = pruner.DG.is_in_channel_pruning_fn
        removed: dict[tuple[int, str], set[int]] = {}
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                module = dep.target.module
                if not isinstance(module, nn.Module) or not any(True for _ in module.parameters(recurse=False)):
                    continue  # reshape / element-wise nodes of the graph
                if not (is_out(dep.handler) or is_in(dep.handler)):
                    continue
                key = (id(module), bool(is_out(dep.handler)))
                if key not in allowed:
                    name = pruner.DG._module2name.get(module, type(module).__name__)
                    side = "output" if key[1] else "input"
                    raise TorchPruningError(
                        f"Torch-Pruning pruned the {side} side of {name}, which is neither a whole "
                        "head nor an FFN channel; prunebench's surgery cannot express it"
                    )
                plain = [int(getattr(i, "idx", i)) for i in idxs]
                removed.setdefault(allowed[key], set()).update(plain)
            group.prune()
    finally:
        model.train(was_training)
    heads: dict[int, list[int]] = {}
    units: dict[int, list[int]] = {}
    for l, layer in enumerate(layers):
        dims = {role: removed.get((l, role), set()) for role in ("query", "key", "value", "attention_output")}
        if len({frozenset(v) for v in dims.values()}) != 1:
            raise TorchPruningError(
                f"layer {l}: Torch-Pruning removed different channels of Q, K, V and the "
                f"attention output: { {k: sorted(v) for k, v in dims.items()} }"
            )
        hs = sorted({i // size for i in dims["query"]})
        if set(dims["query"]) != {h * size + j for h in hs for j in range(size)}:
            raise TorchPruningError(f"layer {l}: Torch-Pruning removed head dimensions, not whole heads")
        ffn_in, ffn_out = removed.get((l, "intermediate"), set()), removed.get((l, "output"), set())
        if ffn_in != ffn_out:
            raise TorchPruningError(f"layer {l}: Torch-Pruning removed different FFN channels on the two sides")
        if hs:
            heads[l] = hs
        if ffn_in:
            units[l] = sorted(ffn_in)
        att = layer.attention.self  # as the example: heads and width follow the new Q shape
        att.num_attention_heads = att.query.out_features // size
        att.all_head_size = att.query.out_features
    return heads, units


def _removed_counts(heads: dict, units: dict) -> tuple[int, int]:
    return sum(len(v) for v in heads.values()), sum(len(v) for v in units.values())


@register("torch_pruning")
class TorchPruningPeer(PruningMethod):
    """Torch-Pruning (DepGraph, MagnitudeImportance): one-shot removal of whole heads and FFN channels."""

    paper = "Fang et al. 2023, DepGraph (arXiv 2301.12900), via torch-pruning 1.6.1"
    starts_from = "dense"
    granularity = "head+ffn-channel"
    Settings = TorchPruningSettings
    finalize_enforcement = "none: Torch-Pruning removes the heads and FFN channels in prepare, finalize prunes nothing"

    def prepare(self, model: nn.Module, plan: TrainingPlan) -> None:
        s = self.settings
        self.fallback_reason = None
        self.removed_heads: dict[int, list[int]] = {}
        self.removed_units: dict[int, list[int]] = {}
        self.plan = plan_pruning(model, self.target_remaining, "global" if s.global_ranking else "layer-wise")
        if self.plan.heads == 0 and self.plan.units == 0:
            self.reached = count_encoder_weights(model).remaining_fraction
            return
        if self.plan.ranking == "global":
            trial = copy.deepcopy(model)
            heads, units = run_torch_pruning(trial, self.plan.head_ratio, self.plan.ffn_ratio, True, s)
            del trial
            got = _removed_counts(heads, units)
            if got != (self.plan.heads, self.plan.units):
                self.fallback_reason = (
                    f"global ranking removed {got[0]} heads and {got[1]} FFN channels instead of "
                    f"{self.plan.heads} and {self.plan.units} (Torch-Pruning skips a group that "
                    "would empty a layer)"
                )
                self.plan = plan_pruning(model, self.target_remaining, "layer-wise")
        reference = copy.deepcopy(model)  # the unpruned model, to check the recorded surgery ops
        before = len(recorded_ops(model))
        heads, units = run_torch_pruning(
            model, self.plan.head_ratio, self.plan.ffn_ratio, self.plan.ranking == "global", s
        )
        if _removed_counts(heads, units) != (self.plan.heads, self.plan.units):
            raise TorchPruningError(
                f"Torch-Pruning ({self.plan.ranking} ranking) removed {_removed_counts(heads, units)} "
                f"heads/FFN channels, the plan asked for {(self.plan.heads, self.plan.units)}"
            )
        if heads:
            record_op(model, "remove_heads", {"heads": {str(l): hs for l, hs in heads.items()}})
        if units:
            record_op(model, "remove_ffn_units", {"units": {str(l): us for l, us in units.items()}})
        self._check_replay(reference, model, recorded_ops(model)[before:])
        del reference
        self.removed_heads, self.removed_units = heads, units
        self.reached = count_encoder_weights(model).remaining_fraction

    @staticmethod
    @torch.no_grad()
    def _check_replay(reference: nn.Module, pruned: nn.Module, ops: list[dict]) -> None:
        """The recorded ops, replayed on the unpruned model, must give Torch-Pruning's model exactly."""
        replay(reference, ops)
        got, want = pruned.state_dict(), reference.state_dict()
        if set(got) != set(want):
            raise TorchPruningError(
                f"replaying the surgery ops gives other tensors: {sorted(set(got) ^ set(want))[:5]}"
            )
        for name, tensor in want.items():
            if got[name].shape != tensor.shape or not torch.equal(got[name], tensor):
                raise TorchPruningError(
                    f"replaying the surgery ops does not rebuild Torch-Pruning's model: {name} "
                    f"{tuple(got[name].shape)} vs {tuple(tensor.shape)}"
                )
        for a, b in zip(encoder_layers(pruned), encoder_layers(reference)):
            if (a.attention.self.num_attention_heads, a.attention.self.all_head_size) != (
                b.attention.self.num_attention_heads,
                b.attention.self.all_head_size,
            ):
                raise TorchPruningError("attention head counts differ between Torch-Pruning's model and the replay")

    def finalize(self, model: nn.Module) -> nn.Module:
        self.remaining_before_finalize = count_encoder_weights(model).remaining_fraction
        return model

    def describe(self) -> dict:
        out = super().describe()
        plan = getattr(self, "plan", None)
        out["torch_pruning"] = {
            "package": TORCH_PRUNING_PIN,
            "installed": torch_pruning_version(),
            "importance": f"MagnitudeImportance(p={self.settings.p}, "
            f"group_reduction={self.settings.group_reduction!r}, normalizer='mean')",
            "schedule": "one-shot before fine-tuning (iterative_steps=1)",
            "ranking": plan.ranking if plan else None,
            "fallback_reason": getattr(self, "fallback_reason", None),
            "head_pruning_ratio": plan.head_ratio if plan else None,
            "ffn_pruning_ratio": plan.ffn_ratio if plan else None,
            "heads_removed": plan.heads if plan else None,
            "ffn_channels_removed": plan.units if plan else None,
            "removed_heads": {str(l): hs for l, hs in getattr(self, "removed_heads", {}).items()},
            "removed_ffn_units_per_layer": {str(l): len(us) for l, us in getattr(self, "removed_units", {}).items()},
            "reached": getattr(self, "reached", None),
            "budget_reachable": plan.reachable if plan else None,
        }
        return out
