"""Shared fixtures: the tiny random BERT, a small tokenized SST-2 slice, paths to the real data, and the
Snakemake runs that several test modules inspect (made once per session: each is minutes of CPU).
The whole-workflow runs are background fixtures (tests/background.py): made while the unit tests run."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from tests.background import (  # noqa: F401 -- the hook and the fixture that start the background runs
    background_fixture,
    background_runs,
    pytest_collection_modifyitems,
    pytest_terminal_summary,
    run_captured,
    start_process,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SST2_TRAIN = DATA / "sst2" / "train.tsv"
SST2_DEV = DATA / "sst2" / "dev.tsv"

#: torch threads of the pytest process: one, because the background workflow runs (tests/background.py) use the
#: other cores; a second OpenMP thread would spin-wait against them
SUITE_THREADS = 1
torch.set_num_threads(SUITE_THREADS)


#: method settings that keep a method's preparation small on the tiny model in tests that check what does not
#: depend on them: Q-BERT's Hessian power iterations (default 4 batches x 32 examples, up to 20 products per
#: layer and batch: a minute of double back-propagation on a 2-core CPU) only choose each layer's bits; 2
#: batches x 8 examples and 3 products still run the sensitivity, the bit allocation and the quantized training
SMALL_SETTINGS = {"qbert": {"hessian_batches": 2, "hessian_batch_size": 8, "hessian_iters": 3}}


def sample_batch(tokenizer):
    """Three short sentences of different lengths, padded: the batch the model-equality tests compare on."""
    return tokenizer(
        ["a fine film , warm and funny", "dull and long", "not bad at all"], padding=True, return_tensors="pt"
    )


def logits(model, batch):
    """The model's logits on ``batch`` in eval mode, without gradients."""
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.fixture(scope="session")
def tokenizer():
    from prunebench.checkpoints.pretrained import load_tokenizer

    return load_tokenizer("tiny-random")


@pytest.fixture
def tiny_model():
    from prunebench.checkpoints.pretrained import load_pretrained

    return load_pretrained("tiny-random", num_labels=2, seed=0, label_names=("negative", "positive")).eval()


@pytest.fixture
def wide_tiny_model(tiny_model):
    """The tiny model with larger random encoder weights (N(0, 0.2)), so that a wrongly loaded,
    masked or removed matrix changes the output visibly."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tiny_model.base_model.encoder.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return tiny_model


@pytest.fixture(scope="session")
def sst2_small(tokenizer):
    """256 training and 64 evaluation examples of the real SST-2 files, tokenized."""
    from prunebench.data.loading import DataConfig, load_task_data
    from prunebench.data.tasks import get_task
    from prunebench.training.trainer import tokenize

    spec = get_task("sst2")
    data = load_task_data(
        spec, DataConfig(source="local", train=str(SST2_TRAIN), eval=str(SST2_DEV), train_limit=256, eval_limit=64)
    )
    return {k: tokenize(v, tokenizer, spec.text_fields, 64) for k, v in data.items()}


# ----- Snakemake runs --------------------------------------------------------------------------------


def snakemake_env(**extra: str) -> dict[str, str]:
    """The environment of a Snakemake run: this interpreter's bin folder first on PATH (the jobs run `python`)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra}


def smoke_command(*args: str, results: Path) -> list[str]:
    """`snakemake --cores 2 --config profile=smoke results_dir=RESULTS ARGS...` (run in the checkout)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--config",
        "profile=smoke",
        f"results_dir={results}",
        *args,
    ]


def snakemake_smoke(*args: str, results: Path, timeout: int = 1800) -> subprocess.CompletedProcess:
    """``smoke_command(*args)`` run to its end in the checkout, output captured."""
    return run_captured(smoke_command(*args, results=results), env=snakemake_env(), timeout=timeout)


def records_under(folder: Path) -> list[Path]:
    """The result records under ``folder`` (not their ``*.predictions.json`` companions)."""
    return sorted(p for p in folder.rglob("*.json") if not p.name.endswith(".predictions.json"))


def smoke_profile() -> dict:
    """The smoke profile as written in workflow/config.yaml."""
    return yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())["profiles"]["smoke"]


#: the rows that compress during pre-training (methods/pretrain_stage.py), added to the shared smoke run at one
#: budget: their pre-training stage, fine-tuning, measure and report section run beside the smoke methods
PRETRAIN_ROWS = ("gordon_pretrain", "rpp_pretrain", "layerdrop_pretrain")
PRETRAIN_BUDGET = 0.5

#: smoke methods run at the smoke profile's lowest budget only in the shared run (magnitude_global and random run
#: at both budgets, so the leaderboard, report and random-baseline tests see two budgets); each method's own tests
#: cover it at other budgets
ONE_BUDGET = (
    "magnitude_local",
    "magnitude_oneshot",
    "wanda",
    "wanda_oneshot",
    "sparsegpt",
    "obert",
    "magnitude_2to4",
    "torch_pruning",
)

#: a FLOP row whose gates cannot move (tiny gate learning rate, no Lagrangian) from a 0.1% initial keep: its own rule
#: stops far short of the budget and finalize fills the rest up to it, which the leaderboard must flag († fill-up)
FILL_UP_ROW = ("flop", 0.5, {"init_keep": 0.001, "gate_lr": 1e-6, "lagrangian_lr": 0.0})


@dataclass(frozen=True)
class SmokeRun:
    """A finished Snakemake run of the smoke profile: its results folder and the records it was asked for."""

    results: Path
    #: the command-line values it was made with (``snakemake_smoke(*args, results=results)`` is its command;
    #: further options go after them: a value after an option such as --dry-run would be taken for a target)
    args: tuple[str, ...]
    #: (method, budget label, seed) of every record the run makes: dense, the smoke methods at the smoke budgets,
    #: the pre-training rows at PRETRAIN_BUDGET and FILL_UP_ROW, each at every smoke seed
    expected: frozenset[tuple[str, str, int]]


@background_fixture
def smoke_run(results: Path) -> SmokeRun:
    """The one smoke run of the whole workflow (tests/test_workflow.py, tests/test_pretrain.py,
    tests/test_deepsparse.py): the smoke profile's methods (``ONE_BUDGET`` at its lowest budget only) plus the
    three pre-training rows and ``FILL_UP_ROW`` at one budget each, 1 seed.

    Shared by the session: tests that read it must not change it, except tests/test_workflow.py's
    resume test, which deletes one job's outputs and has them made again (the run is complete after it)."""
    from prunebench.config import budget_label

    smoke = smoke_profile()
    fill_method, fill_budget, fill_settings = FILL_UP_ROW
    run_methods = (*smoke["methods"], *PRETRAIN_ROWS, fill_method)
    low = min(smoke["budgets"])
    budgets = {m: ([low] if m in ONE_BUDGET else smoke["budgets"]) for m in smoke["methods"]}
    budgets |= {**{row: [PRETRAIN_BUDGET] for row in PRETRAIN_ROWS}, fill_method: [fill_budget]}
    runs = [("dense", 1.0)] + [(m, b) for m, bs in budgets.items() for b in bs]
    expected = {(m, budget_label(b), s) for m, b in runs for s in smoke["seeds"]}
    settings = ", ".join(f"{k}: {v:f}" for k, v in fill_settings.items())  # 0.000001, not 1e-06 (a YAML string)
    listed = [f"{m}: [{', '.join(map(str, bs))}]" for m, bs in budgets.items() if bs != smoke["budgets"]]
    args = (
        f"methods=[{','.join(run_methods)}]",
        "method_budgets={" + ", ".join(listed) + "}",
        f"method_settings={{{fill_method}: {{{settings}}}}}",
    )
    out = snakemake_smoke(*args, results=results)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return SmokeRun(results, args, frozenset(expected))


def snakemake_dry_run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`snakemake --dry-run ARGS...` in the checkout, offline (a hub model id is accepted), output captured."""
    cmd = [sys.executable, "-m", "snakemake", "--dry-run", *args]
    return run_captured(cmd, env=snakemake_env(HF_HUB_OFFLINE="1"), timeout=timeout)


@dataclass(frozen=True)
class DryRun:
    """A finished `snakemake --dry-run`: the results folder it planned into, its exit status and output."""

    results: Path
    returncode: int
    text: str  # stdout and stderr


@background_fixture
def paper_dry_run(results: Path) -> DryRun:
    """The dry run of the paper profile as written (shell commands printed), into a temporary results folder:
    read by tests/test_profiles.py and tests/test_paper_profile.py."""
    out = snakemake_dry_run("--cores", "2", "--printshellcmds", "--config", "profile=paper", f"results_dir={results}")
    return DryRun(results, out.returncode, out.stdout + out.stderr)
