"""Command-line entry points; each Snakemake rule calls exactly one of them.

    prunebench dense       --experiment JSON --task T --seed S --model-dir DIR --summary FILE
    prunebench prune       --experiment JSON --task T --method M --budget B --seed S --dense-dir DIR
                           [--start-dir DIR]
                           --model-dir DIR --summary FILE
    prunebench pretrain    --experiment JSON --method M --budget B --seed S --out-dir DIR
                           (MLM stage of a *_pretrain row)
    prunebench measure     --summary FILE --model-dir DIR --dense-dir DIR --measure JSON --record FILE
    prunebench leaderboard --records FILE... --markdown FILE --csv FILE
    prunebench report      --records FILE... --out FILE [--figure FILE]
    prunebench config      [--set KEY=VALUE ...]    (resolve and validate; print the experiment)
    prunebench head-ablation --experiment JSON --task T --dense-dir DIR --out FILE [--disable mask|uniform]

Known failures (bad config, data, checkpoint, record, a diverged run) print one clear line
and exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from prunebench.checkpoints.pretrained import ModelLoadError
from prunebench.checkpoints.store import CheckpointError
from prunebench.config import CONFIG_PATH, ConfigError, load_config_file, resolve
from prunebench.data.loading import DataError
from prunebench.method.registry import UnknownMethodError
from prunebench.records.record import RecordError
from prunebench.structure.budget import BudgetError
from prunebench.training.trainer import TrainingDiverged

KNOWN_ERRORS = (
    BudgetError,
    CheckpointError,
    ConfigError,
    DataError,
    ModelLoadError,
    RecordError,
    TrainingDiverged,
    UnknownMethodError,
)


def _experiment(value: str) -> dict:
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    return json.loads(text)


def _context(args):
    from prunebench.runner.jobs import load_context

    return load_context(_experiment(args.experiment), args.task, args.threads)


def cmd_dense(args) -> None:
    from prunebench.runner.jobs import run_dense

    run_dense(_context(args), args.seed, Path(args.model_dir), Path(args.summary))


def cmd_prune(args) -> None:
    from prunebench.runner.jobs import run_method

    run_method(
        _context(args),
        args.method,
        args.budget,
        args.seed,
        Path(args.dense_dir) if args.dense_dir else None,
        Path(args.model_dir),
        Path(args.summary),
        Path(args.reference_summary) if args.reference_summary else None,
        Path(args.pretrained_dir) if args.pretrained_dir else None,
        Path(args.start_dir) if args.start_dir else None,
    )


def cmd_pretrain(args) -> None:
    from prunebench.training.pretrain import run_pretrain

    run_pretrain(_experiment(args.experiment), args.method, args.budget, args.seed, Path(args.out_dir), args.threads)


def cmd_measure(args) -> None:
    from prunebench.runner.jobs import measure_and_record

    measure_and_record(
        Path(args.summary),
        Path(args.model_dir),
        Path(args.dense_dir),
        Path(args.record),
        _experiment(args.measure) if args.measure else None,
        args.threads,
    )


def cmd_leaderboard(args) -> None:
    from prunebench.report.leaderboard import write_leaderboard

    write_leaderboard(args.records, Path(args.markdown), Path(args.csv))


def cmd_report(args) -> None:
    from prunebench.report.render import render_report

    render_report(args.records, Path(args.out), Path(args.figure) if args.figure else None)


def cmd_head_ablation(args) -> None:
    from prunebench.analysis.head_ablation import head_ablation, write_head_ablation
    from prunebench.checkpoints import store as checkpoints
    from prunebench.runner.jobs import load_context

    ctx = load_context(_experiment(args.experiment), args.task, args.threads)
    model = checkpoints.load_model(args.dense_dir)
    examples = getattr(ctx, "eval_examples", None) if ctx.spec.kind != "classification" else None
    result = head_ablation(
        model, ctx.eval, ctx.tokenizer, ctx.spec, ctx.budget.eval_batch_size, examples, mode=args.disable
    )
    result["model_dir"] = str(args.dense_dir)
    result["threads"] = ctx.threads
    write_head_ablation(result, Path(args.out))
    logging.getLogger("prunebench.analysis").info(
        "head ablation of %s: baseline %.4f, %d evaluations, %.0f s",
        args.dense_dir,
        result["baseline"],
        result["evaluations"],
        result["wall_time_s"],
    )


def cmd_config(args) -> None:
    raw = load_config_file(args.file)
    for item in args.set or []:
        key, _, value = item.partition("=")
        raw[key] = yaml.safe_load(value)
    print(json.dumps(resolve(raw), indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunebench", description="BERT pruning benchmark")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def job(name, func, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--experiment", required=True, help="resolved experiment as JSON, or @FILE")
        p.add_argument("--task", required=True)
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--model-dir", required=True)
        p.add_argument(
            "--summary", required=True, help="training summary to write (the record minus timed measurements)"
        )
        p.add_argument("--threads", type=int, default=None)
        p.set_defaults(func=func)
        return p

    job("dense", cmd_dense, "fine-tune and evaluate the dense baseline")
    p = job("prune", cmd_prune, "prune with one method at one budget and seed, and evaluate it")
    p.add_argument("--method", required=True)
    p.add_argument("--budget", type=float, required=True)
    p.add_argument("--dense-dir", default=None, help="the dense checkpoint (methods that start from it)")
    p.add_argument(
        "--reference-summary", default=None, help="training summary of the reference method (methods that need one)"
    )
    p.add_argument(
        "--pretrained-dir",
        default=None,
        help="output of the pre-training stage (rows that compress during pre-training)",
    )
    p.add_argument(
        "--start-dir", default=None, help="the base row's checkpoint (rows that start from a pruned one, e.g. *_int8)"
    )

    p = sub.add_parser("pretrain", help="the pre-training stage of a *_pretrain row: MLM training with its method")
    p.add_argument(
        "--experiment", required=True, help="resolved experiment as JSON, or @FILE (with its pretrain block)"
    )
    p.add_argument("--method", required=True, help="the row (gordon_pretrain, rpp_pretrain, layerdrop_pretrain)")
    p.add_argument("--budget", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out-dir", required=True, help="folder for the pruned encoder, its MLM head and pretrain.json")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("measure", help="measure a trained model (memory, size, FLOPs, latency vs dense) and record it")
    p.add_argument("--summary", required=True, help="the training job's summary")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--dense-dir", required=True)
    p.add_argument("--record", required=True)
    p.add_argument(
        "--measure",
        default=None,
        help="measurement settings as JSON or @FILE (the config's `measure`); default: the configured ones",
    )
    p.add_argument("--threads", type=int, default=None, help="threads latency is timed with (default: threads.measure)")
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("leaderboard", help="rank records into Markdown and CSV")
    p.add_argument("--records", nargs="+", required=True)
    p.add_argument("--markdown", required=True)
    p.add_argument("--csv", required=True)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("report", help="render the HTML report from records")
    p.add_argument("--records", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--figure", default=None, help="also write the main figure (.svg/.pdf/.png)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("head-ablation", help="metric with single heads / one head per layer / layer attention disabled")
    p.add_argument("--experiment", required=True, help="resolved experiment as JSON, or @FILE")
    p.add_argument("--task", required=True)
    p.add_argument("--dense-dir", required=True, help="the dense fine-tuned checkpoint")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument(
        "--disable",
        choices=("mask", "uniform"),
        default="mask",
        help="how a head is disabled: mask its context (Michel et al.) or uniform attention (Kovaleva et al.)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_head_ablation)

    p = sub.add_parser("config", help="resolve and validate the configuration")
    p.add_argument("--file", default=str(CONFIG_PATH))
    p.add_argument("--set", nargs="*", help="KEY=VALUE overrides (YAML values)")
    p.set_defaults(func=cmd_config)
    return parser


def run_parsed(args, prog: str) -> int:
    """Run a parsed sub-command: known failures print one line and return 2 (shared by every CLI)."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except KNOWN_ERRORS as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_parsed(build_parser().parse_args(argv), "prunebench")


if __name__ == "__main__":
    sys.exit(main())
