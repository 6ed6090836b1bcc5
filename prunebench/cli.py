"""Command-line entry points; each Snakemake rule calls exactly one of them.

    prunebench dense       --experiment JSON --task T --seed S --model-dir DIR --summary FILE
    prunebench prune       --experiment JSON --task T --method M --budget B --seed S --dense-dir DIR --model-dir DIR --summary FILE
    prunebench pretrain    --experiment JSON --method M --budget B --seed S --out-dir DIR   (MLM stage of a *_pretrain row)
    prunebench measure     --summary FILE --model-dir DIR --dense-dir DIR --measure JSON --record FILE
    prunebench leaderboard --records FILE... --markdown FILE --csv FILE
    prunebench report      --records FILE... --out FILE [--figure FILE]
    prunebench config      [--set KEY=VALUE ...]    (resolve and validate; print the experiment)

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

from prunebench.budget import BudgetError
from prunebench.checkpoints import CheckpointError
from prunebench.config import ConfigError, CONFIG_PATH, load_config_file, resolve
from prunebench.data import DataError
from prunebench.modeling import ModelLoadError
from prunebench.records import RecordError
from prunebench.trainer import TrainingDiverged
from methods.registry import UnknownMethodError

KNOWN_ERRORS = (BudgetError, CheckpointError, ConfigError, DataError, ModelLoadError, RecordError, TrainingDiverged,
                UnknownMethodError)


def _experiment(value: str) -> dict:
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    return json.loads(text)


def _context(args):
    from prunebench.experiment import load_context

    return load_context(_experiment(args.experiment), args.task, args.threads)


def cmd_dense(args) -> None:
    from prunebench.experiment import run_dense

    run_dense(_context(args), args.seed, Path(args.model_dir), Path(args.summary))


def cmd_prune(args) -> None:
    from prunebench.experiment import run_method

    run_method(_context(args), args.method, args.budget, args.seed, Path(args.dense_dir) if args.dense_dir else None,
               Path(args.model_dir),
               Path(args.summary), Path(args.reference_summary) if args.reference_summary else None,
               Path(args.pretrained_dir) if args.pretrained_dir else None)


def cmd_pretrain(args) -> None:
    from prunebench.pretrain import run_pretrain

    run_pretrain(_experiment(args.experiment), args.method, args.budget, args.seed, Path(args.out_dir), args.threads)


def cmd_measure(args) -> None:
    from prunebench.experiment import measure_and_record

    measure_and_record(Path(args.summary), Path(args.model_dir), Path(args.dense_dir), Path(args.record),
                       _experiment(args.measure) if args.measure else None, args.threads)


def cmd_leaderboard(args) -> None:
    from reports.leaderboard import write_leaderboard

    write_leaderboard(args.records, Path(args.markdown), Path(args.csv))


def cmd_report(args) -> None:
    from reports.render import render_report

    render_report(args.records, Path(args.out), Path(args.figure) if args.figure else None)


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
        p.add_argument("--summary", required=True, help="training summary to write (the record minus timed measurements)")
        p.add_argument("--threads", type=int, default=None)
        p.set_defaults(func=func)
        return p

    job("dense", cmd_dense, "fine-tune and evaluate the dense baseline")
    p = job("prune", cmd_prune, "prune with one method at one budget and seed, and evaluate it")
    p.add_argument("--method", required=True)
    p.add_argument("--budget", type=float, required=True)
    p.add_argument("--dense-dir", default=None, help="the dense checkpoint (methods that start from it)")
    p.add_argument("--reference-summary", default=None,
                   help="training summary of the reference method (methods that need one)")
    p.add_argument("--pretrained-dir", default=None,
                   help="output of the pre-training stage (rows that compress during pre-training)")

    p = sub.add_parser("pretrain", help="the pre-training stage of a *_pretrain row: MLM training with its method")
    p.add_argument("--experiment", required=True, help="resolved experiment as JSON, or @FILE (with its pretrain block)")
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
    p.add_argument("--measure", default=None,
                   help="measurement settings as JSON or @FILE (the config's `measure`); default: the configured ones")
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

    p = sub.add_parser("config", help="resolve and validate the configuration")
    p.add_argument("--file", default=str(CONFIG_PATH))
    p.add_argument("--set", nargs="*", help="KEY=VALUE overrides (YAML values)")
    p.set_defaults(func=cmd_config)
    return parser


def run_parsed(args, prog: str) -> int:
    """Run a parsed sub-command: known failures print one line and return 2 (shared by every CLI)."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
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
