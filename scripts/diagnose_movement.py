"""Diagnose hard movement pruning (Sanh et al. 2020) on the default profile.

Runs ``movement_hard`` from the dense checkpoint under the profile's fine-tuning budget in
one process, with variants that each test one hypothesis about its collapse to the majority
class, and prints per variant: the training loss every ``--log-every`` steps, the dev accuracy
of the masked model at a few steps, and what the pruned weights look like the first time a
check-point sees them (their |W| against the matrix's, how concentrated they are in columns,
i.e. input dimensions, and rows).

    .venv/bin/python scripts/diagnose_movement.py --dense-dir /tmp/shared/dense_seed0 \
        --experiment /tmp/shared/default_experiment.json --variants baseline,... --budget 0.5

Each variant is one 200-step training run plus a dev evaluation per probe step: ~2 minutes at
1 thread with bf16 autocast on an idle AVX512-BF16 CPU, 5-6 minutes on a shared 2-core
machine. ``--ablate-at N`` instead trains N steps and applies the mask (or parts
of it) to the dense weights without training (4-8 minutes there). Results go to stdout and,
as JSON, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import methods  # noqa: E402
from prunebench.checkpoints import store as checkpoints  # noqa: E402
from prunebench.measure.accuracy import predict  # noqa: E402
from prunebench.runner.jobs import load_context  # noqa: E402
from prunebench.training.trainer import train  # noqa: E402


def accuracy(model, ctx) -> float:
    """Dev accuracy of ``model`` (masked or plain) on the context's evaluation set."""
    preds = predict(model, ctx.eval, ctx.tokenizer, ctx.budget.eval_batch_size)
    labels = list(ctx.eval["label"])
    model.train()
    return sum(int(p == y) for p, y in zip(preds, labels)) / len(labels)


def pruned_profile(method) -> dict[str, float]:
    """What the currently pruned weights look like, pooled over all matrices.

    ``below_median_abs``: share of pruned weights whose |W| is below their matrix's median
    (0.5 for a random choice, ~1 for magnitude pruning); ``top_col_share``: share of the pruned
    weights that lie in the 1% of columns (input dimensions) holding most of them (0.01 when
    spread evenly); ``top_row_share`` the same for rows (output dimensions).
    """
    below = pruned = col_top = row_top = 0
    for name, p in method.parametrizations.items():
        off = ~p.mask
        n = int(off.sum())
        if n == 0:
            continue
        w = method.linears[name].parametrizations.weight.original.detach().abs()
        below += int((w[off] < w.median()).sum())
        pruned += n
        k_col, k_row = max(1, w.shape[1] // 100), max(1, w.shape[0] // 100)
        col_top += int(off.sum(0).float().topk(k_col).values.sum())
        row_top += int(off.sum(1).float().topk(k_row).values.sum())
    if pruned == 0:
        return {"pruned_fraction": 0.0}
    return {
        "pruned_fraction": 1.0 - method.current_remaining(),
        "below_median_abs": below / pruned,
        "top_col_share": col_top / pruned,
        "top_row_share": row_top / pruned,
    }


def run_variant(
    ctx,
    dense_dir: Path,
    method_name: str,
    budget: float,
    settings: dict,
    probe_steps: set[int],
    patch: Callable | None = None,
    log_every: int = 10,
) -> dict:
    """Train one variant, probing accuracy and the pruned set at ``probe_steps``; finalize; evaluate."""
    model = checkpoints.load_model(dense_dir)
    method = methods.build(method_name, budget, settings)
    if patch is not None:
        patch(method)
    probes = {}
    original = method.after_step

    def probe(m, step):
        original(m, step)
        if step in probe_steps:
            probes[step] = {
                "accuracy": accuracy(m, ctx),
                **pruned_profile(method),
                "score_absmax": max(float(s.detach().abs().max()) for s in method.scores.values()),
            }
            print(f"    step {step}: {probes[step]}", flush=True)

    method.after_step = probe
    start = time.perf_counter()
    result = train(model, ctx.train, ctx.tokenizer, ctx.budget, method, seed=0, log_every=log_every)
    model = method.finalize(model)
    return {
        "loss_curve": result.loss_curve,
        "probes": probes,
        "final_accuracy": accuracy(model, ctx),
        "wall_s": time.perf_counter() - start,
    }


def _sgd_scores(method, scale: float = 1e4) -> None:
    """Scores accumulate the raw movement by plain SGD, S <- S - scale * lr_t * dL/dS, i.e.
    S = -scale * sum_t lr_t (dL/dW')_t * W_t (Sanh et al.'s Eq. for S, magnitude-weighted),
    instead of AdamW's per-score normalised update. The scores leave the trainer's AdamW (and
    its joint gradient clipping: the paper's formula is the unclipped gradient); ``lr_t`` is
    the weights' scheduled lr of the step just taken (``method.current_lr``), so the scores get
    the same warm-up/decay weighting. A top-k mask depends only on the ranking, so ``scale``
    (1e4: peak score lr 1.0 at the profile's lr 1e-4) only keeps the numbers readable."""
    method.parameter_groups = lambda model: []
    original = method.after_step
    state: dict = {}

    def after_step(model, step):
        if "opt" not in state:  # the scores exist only after prepare()
            state["opt"] = torch.optim.SGD(list(method.scores.values()), lr=0.0)
        opt = state["opt"]
        opt.param_groups[0]["lr"] = scale * method.current_lr
        opt.step()
        opt.zero_grad(set_to_none=True)
        original(model, step)

    method.after_step = after_step


VARIANTS: dict[str, dict] = {
    "baseline": {"settings": {}},
    # Raw (magnitude-weighted) movement instead of AdamW-normalised scores: tests "Adam turns
    # the score into sign consistency of dL/dW' * W, selecting gradient-aligned weights".
    "sgd_scores": {"settings": {}, "patch": _sgd_scores},
    # Scores accumulate for half the run before pruning starts (paper: a whole lr warm-up of
    # thousands of steps): tests "early scores are noise" against "weights are still large".
    "long_warmup": {"settings": {"warmup_fraction": 0.5, "cooldown_fraction": 0.2}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dense-dir", required=True)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--variants", default="baseline", help=f"comma-separated, from {sorted(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=None, help="override finetune.steps")
    ap.add_argument("--probe", default="30,60,100,160", help="steps at which to evaluate the masked model")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--out", default="/tmp/helper-C/diagnose_movement.json")
    ap.add_argument("--ablate-at", type=int, default=0, help="instead: mask ablation after this many steps")
    ap.add_argument("--detail", action="store_true", help="mask ablation: also per matrix type and per layer")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    exp = json.loads(Path(args.experiment).read_text())
    if args.steps:
        exp["finetune"]["steps"] = args.steps
    ctx = load_context(exp, "sst2", threads=1)
    if args.ablate_at:
        names = args.variants.split(",")
        if len(names) != 1 or names[0] not in VARIANTS or VARIANTS[names[0]].get("settings"):
            raise SystemExit("--ablate-at takes one variant without settings (e.g. baseline, sgd_scores)")
        res = mask_ablation(
            ctx, Path(args.dense_dir), args.budget, args.ablate_at, args.detail, VARIANTS[names[0]].get("patch")
        )
        res["variant"] = names[0]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
        return
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    out = {}
    for name in args.variants.split(","):
        spec = VARIANTS[name]
        print(f"== {name} (budget {args.budget})", flush=True)
        res = run_variant(
            ctx,
            Path(args.dense_dir),
            spec.get("method", "movement_hard"),
            args.budget,
            spec["settings"],
            {int(s) for s in args.probe.split(",")},
            spec.get("patch"),
            args.log_every,
        )
        losses = [f"{x:.3f}" for x in res["loss_curve"]]
        print(
            f"    loss {losses}\n    final accuracy {res['final_accuracy']:.4f} ({res['wall_s']:.0f} s)",
            flush=True,
        )
        out[name] = res
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"budget": args.budget, "variants": out}, indent=1))


# ----- which pruned weights break the model? ---------------------------------------------


def _apply(model, masks: dict[str, torch.Tensor], linears) -> None:
    for name, mask in masks.items():
        w = linears[name].weight
        w.data.mul_(mask.to(w.dtype))


def _quantile_masks(scores: dict[str, torch.Tensor], fraction: float, lowest: bool) -> dict[str, torch.Tensor]:
    """Masks pruning the ``fraction`` lowest (or highest) scores of each matrix."""
    out = {}
    for name, s in scores.items():
        k = int(round(fraction * s.numel()))
        order = s.flatten().argsort(descending=not lowest)
        keep = torch.ones(s.numel(), dtype=torch.bool)
        keep[order[:k]] = False
        out[name] = keep.view_as(s)
    return out


def mask_ablation(
    ctx, dense_dir: Path, budget: float, step: int, detail: bool = True, patch: Callable | None = None
) -> dict:
    """Train movement_hard for ``step`` steps, then apply its mask (or parts of it) to the dense
    weights, with no further training, and compare with a random mask of the same per-matrix
    fractions: does the *choice* of pruned weights break the model, and where are they?"""
    from prunebench.structure.budget import prunable_linears

    model = checkpoints.load_model(dense_dir)
    method = methods.build("movement_hard", budget, {})
    if patch is not None:
        patch(method)
    try:
        train(model, ctx.train, ctx.tokenizer, ctx.budget, _stop_after(method, step), seed=0)
    except _Stop:
        pass
    masks = {n: p.mask.clone() for n, p in method.parametrizations.items()}
    scores = {n: s.detach().clone() for n, s in method.scores.items()}
    gen = torch.Generator().manual_seed(0)
    random_masks = {
        n: (torch.randperm(m.numel(), generator=gen) >= int((~m).sum())).view_as(m) for n, m in masks.items()
    }
    out = {}

    def score(label, chosen):
        m = checkpoints.load_model(dense_dir)
        _apply(m, chosen, prunable_linears(m))
        out[label] = accuracy(m, ctx)
        print(f"    {label}: {out[label]:.4f}", flush=True)

    score("dense", {})
    score(f"movement mask of step {step}", masks)
    score("random mask, same per-matrix fractions", random_masks)
    for q in (0.005, 0.01, 0.02):
        score(f"lowest {q:.1%} scores per matrix", _quantile_masks(scores, q, lowest=True))
    pruned = 1.0 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    score(f"highest {pruned:.1%} scores per matrix", _quantile_masks(scores, pruned, lowest=False))
    if not detail:
        return {"step": step, "accuracies": out}
    for part in (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ):
        chosen = {
            n: m for n, m in masks.items() if n.endswith(part) and not (part == "output.dense" and "attention" in n)
        }
        score(f"movement mask on {part} only", chosen)
    for layer in sorted({n.split(".layer.")[1].split(".")[0] for n in masks}, key=int):
        score(f"movement mask on layer {layer} only", {n: m for n, m in masks.items() if f".layer.{layer}." in n})
    return {
        "step": step,
        "accuracies": out,
        "scores": {n: [float(s.min()), float(s.max()), float(s.abs().mean())] for n, s in scores.items()},
    }


class _Stop(Exception):
    """Raised to end a training run early (the schedule stays the full run's)."""


def _stop_after(method, step: int):
    """Stop training right after ``step`` (masks then are those of the full-length schedule at that step)."""
    original = method.after_step

    def after_step(model, s):
        original(model, s)
        if s >= step:
            raise _Stop

    method.after_step = after_step
    return method


if __name__ == "__main__":
    main()
