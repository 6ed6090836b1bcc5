"""Analyses on fine-tuned models; each Snakemake analysis rule calls exactly one of them.

    python -m prunebench.analysis head-ablation --experiment JSON --task T --dense-dir DIR --out FILE
                                                [--disable mask|uniform] [--threads N]

Known failures print one clear line and exit with status 2 (as ``python -m prunebench``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def cmd_head_ablation(args) -> None:
    from prunebench import checkpoints
    from prunebench.analysis.head_ablation import head_ablation, write_head_ablation
    from prunebench.cli import _experiment
    from prunebench.experiment import load_context

    ctx = load_context(_experiment(args.experiment), args.task, args.threads)
    model = checkpoints.load_model(args.dense_dir)
    examples = getattr(ctx, "eval_examples", None) if ctx.spec.kind != "classification" else None
    result = head_ablation(model, ctx.eval, ctx.tokenizer, ctx.spec, ctx.budget.eval_batch_size, examples,
                           mode=args.disable)
    result["model_dir"] = str(args.dense_dir)
    result["threads"] = ctx.threads
    write_head_ablation(result, Path(args.out))
    logging.getLogger("prunebench.analysis").info("head ablation of %s: baseline %.4f, %d evaluations, %.0f s",
                                                  args.dense_dir, result["baseline"], result["evaluations"],
                                                  result["wall_time_s"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prunebench.analysis", description="analyses of fine-tuned models")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("head-ablation", help="metric with single heads / one head per layer / layer attention disabled")
    p.add_argument("--experiment", required=True, help="resolved experiment as JSON, or @FILE")
    p.add_argument("--task", required=True)
    p.add_argument("--dense-dir", required=True, help="the dense fine-tuned checkpoint")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--disable", choices=("mask", "uniform"), default="mask",
                   help="how a head is disabled: mask its context (Michel et al.) or uniform attention (Kovaleva et al.)")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_head_ablation)
    return parser


def main(argv: list[str] | None = None) -> int:
    from prunebench.cli import run_parsed

    return run_parsed(build_parser().parse_args(argv), "prunebench.analysis")


if __name__ == "__main__":
    sys.exit(main())
