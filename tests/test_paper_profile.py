"""The paper profile: every registered method, each at budgets its structure can reach on
BERT-base, and its rules shown to work on a CPU before a GPU run.

- the profile lists every registered method; element-wise ones at the papers' 10/3/1%, structured
  ones at their own budgets (``method_budgets``), budget-free ones once;
- those structured budgets are reachable on BERT-base's shape, by each method's own budget rule;
- a dry run of ``--config profile=paper`` plans a record per (task, method, budget, seed);
- real Snakemake runs of the paper profile, made tiny on the command line (tiny model, local data,
  3 fine-tuning steps, one budget per family), run every family's code path on a sentence classifier and
  the QA head, and every task's data path, through finetune_dense, prune, measure, leaderboard and report
  (marked ``workflow``);
- every method of the profile at its smallest paper budget, in process on the tiny model, reaches
  the budget or says its structure cannot.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

import methods
from prunebench.config import ConfigError, budget_label, budgets_of, load_config_file, resolve
from prunebench.data.tasks import get_task
from prunebench.method.base import TrainingPlan
from prunebench.records.record import read_record
from prunebench.structure.budget import remaining_fraction
from tests.background import background_fixture, run_captured
from tests.conftest import REPO, SMALL_SETTINGS, snakemake_env
from tests.test_profiles import _job_count
from tests.test_workflow import _records

TOLERANCE = 0.005  # the leaderboard's: an entry met its budget when remaining <= budget + 0.005
#: every metric each task records (prunebench/data/tasks.py), the primary one included
TASK_METRICS = {
    "mnli": {"accuracy", "accuracy_mismatched"},
    "qqp": {"accuracy", "f1"},
    "sst2": {"accuracy"},
    "squad": {"exact_match", "f1"},
}


def _paper_config() -> dict:
    """The paper profile as written, with ``methods: all`` expanded to the registry (as ``resolve`` does)."""
    paper = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())["profiles"]["paper"]
    assert paper["methods"] == "all"  # every registered method: a new method needs no profile edit
    return {**paper, "methods": methods.available()}


@pytest.fixture
def paper(monkeypatch):
    """The paper profile, resolved (hub model id accepted offline)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = load_config_file()
    raw["profile"] = "paper"
    return resolve(raw)


def test_paper_profile_lists_every_method_at_budgets_its_structure_reaches(paper):
    assert sorted(paper["methods"]) == sorted(methods.available())
    assert paper["tasks"] == ["mnli", "qqp", "sst2", "squad"] and paper["budgets"] == [0.1, 0.03, 0.01]
    for name in paper["methods"]:
        cls = methods.get(name)
        budgets = budgets_of(paper, name)
        if cls.budget_free:  # quantization rows and fixed_attention: once, at budget 1
            assert budgets == [1.0] and name not in paper["method_budgets"], name
        elif cls.starts_from == "pruned":  # compound rows: their base row's budgets
            assert budgets == budgets_of(paper, cls.base_method) and name not in paper["method_budgets"], name
        elif cls.granularity == "element" and name != "magnitude_2to4":
            assert budgets == [0.1, 0.03, 0.01] and name not in paper["method_budgets"], name
        else:  # structured: its own list, with a comment giving the reason in the profile
            assert name in paper["method_budgets"] or name == "flop", name
    assert budgets_of(paper, "flop") == [0.1, 0.03, 0.01]  # rank-one components, rank 0 allowed
    assert budgets_of(paper, "magnitude_2to4") == [0.5]
    for name in ("head_importance", "head_random", "head_magnitude", "head_l0"):
        assert min(budgets_of(paper, name)) >= 0.734  # above every head method's floor on BERT-base
    assert min(budgets_of(paper, "torch_pruning")) >= 0.028


@pytest.fixture(scope="module")
def bert_base_shape():
    """A randomly initialised model of BERT-base's encoder shape (12 layers, 12 heads, 768/3072)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=64,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def test_structured_paper_budgets_are_reachable_on_bert_base(bert_base_shape, paper):
    """Each structured method's own budget rule, on BERT-base's shape, at every paper budget."""
    from methods.head_importance import heads_for_budget
    from methods.head_l0 import HeadL0, head_weights, target_heads
    from methods.layerdrop import layers_for_budget
    from methods.torch_pruning_peer import plan_pruning
    from prunebench.structure.budget import dense_encoder_size

    model, config = bert_base_shape, bert_base_shape.config
    for name in ("head_importance", "head_random", "head_magnitude"):
        for b in budgets_of(paper, name):
            _, reached, reachable = heads_for_budget(model, b, methods.build(name, b).settings.min_heads_per_layer)
            assert reachable and b <= reached <= b + TOLERANCE, (name, b, reached)
    min_fraction = HeadL0.Settings().min_head_fraction
    for b in budgets_of(paper, "head_l0"):
        k = target_heads(config, b, min_fraction)  # the floor (min_head_fraction) would push it above b
        reached = 1 - (144 - k) * head_weights(config) / dense_encoder_size(config)
        assert b - TOLERANCE <= reached <= b, (b, k, reached)
    for name in ("layerdrop", "layer_prune"):
        for b in budgets_of(paper, name):
            keep, _, reached = layers_for_budget(model, b)
            assert abs(reached - b) <= TOLERANCE and keep == round(b * 12), (name, b, keep, reached)
    for b in budgets_of(paper, "torch_pruning"):
        for ranking in ("global", "layer-wise"):
            plan = plan_pruning(model, b, ranking)
            assert plan.reachable and b - TOLERANCE <= plan.reached <= b, (b, ranking, plan)
    assert not plan_pruning(model, 0.01, "layer-wise").reachable  # why 0.01 is not in its list


def test_paper_dry_run_plans_every_task_method_budget_and_seed(paper_dry_run):
    """(a) The dry run of the profile as written: a record per (task, method, its budgets, seed)
    (`snakemake --dry-run --cores 2 --printshellcmds --config profile=paper`, tests/conftest.py, shared)."""
    paper = _paper_config()
    text = paper_dry_run.text
    assert paper_dry_run.returncode == 0, text[-3000:]
    results = paper_dry_run.results
    planned = set(re.findall(rf"{re.escape(str(results))}/records/(\w+)/(\w+)/([0-9.]+)/seed(\d+)\.json", text))
    labels = {
        m: ["1"]
        if methods.get(m).budget_free
        else [budget_label(b) for b in paper.get("method_budgets", {}).get(m, paper["budgets"])]
        for m in paper["methods"]
    }
    expected = {
        (t, m, b, str(s)) for t in paper["task"] for m in paper["methods"] for b in labels[m] for s in paper["seeds"]
    }
    expected |= {(t, "dense", "1", str(s)) for t in paper["task"] for s in paper["seeds"]}
    assert planned == expected, (sorted(expected - planned)[:10], sorted(planned - expected)[:10])
    assert {t for t, *_ in planned} == {"mnli", "qqp", "sst2", "squad"}
    assert {m for _, m, *_ in planned} == set(methods.available()) | {"dense"}
    n_runs = sum(len(v) for v in labels.values())
    per_task_seed = len(paper["task"]) * len(paper["seeds"])
    assert _job_count(text, "prune") == per_task_seed * n_runs
    assert _job_count(text, "measure") == per_task_seed * (1 + n_runs)


def test_bad_method_budgets_on_the_paper_profile_is_a_clear_error(paper, monkeypatch):
    raw = load_config_file()
    raw.update(profile="paper", method_budgets={"int8_dynamic": [0.5]})
    with pytest.raises(ConfigError, match=r"key 'method_budgets.int8_dynamic': .*budget-free"):
        resolve(raw)
    # a command-line `methods` drops the profile's lists of the methods it leaves out
    raw = load_config_file()
    raw.update(profile="paper", methods=["magnitude_global", "layerdrop"])
    exp = resolve(raw)
    assert exp["method_budgets"] == {"layerdrop": [0.5, 0.25, 0.0833]}


# ----- (b) the paper profile's rules, for real, on the tiny model ----------------------------------

#: one method per family, each at one budget the tiny model (2 layers, 4 heads, hidden 64) reaches
FAMILIES = {
    "magnitude_global": 0.1,  # element-wise
    "head_importance": 0.75,  # attention heads (tiny: attention is 1/2 of the encoder)
    "layerdrop": 0.5,  # whole layers (1 of 2)
    "flop": 0.1,  # low-rank factorization (matrix-rank)
    "int8_dynamic": 1,
}  # budget-free (int8 weights)
#: the tasks every family runs on: a sentence classifier and the extractive-QA head
FAMILY_TASKS = ["sst2", "squad"]
#: the profile's sentence-pair tasks (MNLI's two evaluation sets, QQP's F1) run dense and one element-wise row
#: in a second run: their data path and metrics through every rule, without every family again
PAIR_TASKS = ["mnli", "qqp"]
PAIR_ROWS = {"magnitude_global": 0.1}


def _tiny_overrides(tasks: list[str], rows: dict[str, float]) -> list[str]:
    """The paper profile made tiny on the command line: ``tasks``, ``rows`` (method -> budget), the tiny model,
    a slice of the data, 3 fine-tuning steps, one timing pass without ONNX Runtime."""
    budgets = ", ".join(f"{m}: [{b}]" for m, b in rows.items() if m != "int8_dynamic")
    return [
        "model=tiny-random",
        "data={source: local, train_limit: 64, eval_limit: 32}",  # task_data: ../shared/data beside the checkout
        f"task=[{','.join(tasks)}]",
        f"methods=[{','.join(rows)}]",
        "method_budgets={" + budgets + "}",
        "seeds=[0]",
        "threads={train: 1, measure: 1}",
        "finetune={steps: 3, batch_size: 4, eval_batch_size: 32, max_seq_len: 64, doc_stride: 32, precision: fp32, "
        "device: cpu, freeze_embeddings: false}",
        "measure={seq_len: 16, batch_sizes: [1], warmup: 0, repeats: 1, min_time_s: 0, memory: false, onnx: false}",
        # the tiny model has 128 positions: SQuAD's 384-token windows of the profile do not fit
        "task_overrides={squad: {finetune: {max_seq_len: 64, doc_stride: 32}, measure: {seq_len: 32}}}",
        "head_ablation_modes=[]",
    ]


#: the two tiny runs: (tasks, rows) each
TINY_RUNS = {"families": (FAMILY_TASKS, FAMILIES), "pairs": (PAIR_TASKS, PAIR_ROWS)}


def _paper_snakemake(run: str, *args, results: Path):
    """`snakemake --cores 2 --config profile=paper ...` of the tiny run ``run`` (``TINY_RUNS``) into ``results``.
    `--resources timing=2000` lets two measure jobs run side by side: latency here means nothing."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--resources",
        "timing=2000",
        "--config",
        "profile=paper",
        f"results_dir={results}",
        *_tiny_overrides(*TINY_RUNS[run]),
        *args,
    ]
    return run_captured(cmd, env=snakemake_env(HF_HUB_OFFLINE="1"), timeout=3600)


@background_fixture
def tiny_paper_run(results: Path) -> Path:
    """Every family on ``FAMILY_TASKS``: the paper profile made tiny, run to its end into ``results``."""
    out = _paper_snakemake("families", results=results)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return results


@background_fixture
def tiny_paper_pairs_run(results: Path) -> Path:
    """Dense and ``PAIR_ROWS`` on ``PAIR_TASKS``: the paper profile made tiny, run to its end into ``results``."""
    out = _paper_snakemake("pairs", results=results)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return results


@pytest.fixture
def tiny_paper_runs(tiny_paper_run, tiny_paper_pairs_run) -> dict[str, Path]:
    return {"families": tiny_paper_run, "pairs": tiny_paper_pairs_run}


@pytest.mark.workflow
def test_tiny_paper_run_records_every_task_and_family(tiny_paper_runs):
    assert sorted(FAMILY_TASKS + PAIR_TASKS) == sorted(_paper_config()["task"])  # every task of the profile runs
    records = {}
    for run, (tasks, rows) in TINY_RUNS.items():
        expected = {(t, m, budget_label(b)) for t in tasks for m, b in rows.items()}
        expected |= {(t, "dense", "1") for t in tasks}
        folder = tiny_paper_runs[run] / "records"
        made = {tuple(p.relative_to(folder).parts[:3]): read_record(p) for p in _records(folder)}
        assert set(made) == expected, run
        records |= made
    for (task, method, budget), rec in records.items():
        assert (rec["task"], rec["method"], budget_label(rec["budget"]), rec["seed"]) == (task, method, budget, 0)
        assert rec["config"]["profile"] == "paper" and rec["config"]["model"] == "tiny-random"
        assert rec["config"]["finetune"]["steps"] == 3
        names = TASK_METRICS[task]
        assert get_task(task).primary_metric in names and names <= set(rec["metrics"]), (
            task,
            method,
            sorted(rec["metrics"]),
        )
        for name in names:
            assert 0.0 <= rec["metrics"][name]["value"] <= 1.0, (task, method, name)
        remaining = rec["metrics"]["encoder_remaining"]["value"]
        assert remaining <= float(budget) + TOLERANCE, (task, method, budget, remaining)
        assert rec["metrics"]["latency_b1"]["value"] > 0
        assert rec["config"]["data"]["eval_split_kind"] == "stand-in"  # eval_limit: never an official number


@pytest.mark.workflow
def test_tiny_paper_run_int8_row_is_the_dense_checkpoint_quantized(tiny_paper_run):
    """int8_dynamic trains no step: its model is the same task and seed's dense checkpoint, quantized."""
    import torch

    from prunebench.checkpoints.store import load_model
    from prunebench.quantization.int8 import quantize_encoder_linears

    for task in FAMILY_TASKS:  # a classification and the extractive-QA head
        rec = read_record(tiny_paper_run / f"records/{task}/int8_dynamic/1/seed0.json")
        assert rec["details"]["training"]["steps"] == 0 and rec["details"]["training"]["loss_curve"] == []
        assert rec["details"]["training"]["examples_per_s"] is None
        int8 = load_model(tiny_paper_run / f"models/{task}/int8_dynamic/1/seed0").state_dict()
        dense = quantize_encoder_linears(load_model(tiny_paper_run / f"models/{task}/dense/seed0")).state_dict()
        assert int8.keys() == dense.keys()
        for k, v in int8.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, dense[k]), k


@pytest.mark.workflow
def test_tiny_paper_run_has_leaderboard_and_report_of_every_task_and_method(tiny_paper_runs):
    from prunebench.report.cross_task import STANDIN_MARK

    for run, (tasks, rows) in TINY_RUNS.items():
        board = (tiny_paper_runs[run] / "leaderboard.md").read_text()
        html = (tiny_paper_runs[run] / "report.html").read_text()
        for task in tasks:  # several tasks: a stand-in evaluation split is marked
            found = re.findall(rf"^\| {task}(?:{re.escape(STANDIN_MARK)})? \| ([0-9.]+) \| [^|]* \| (\w+)", board, re.M)
            assert {(budget_label(float(b)), m) for b, m in found} >= {(budget_label(b), m) for m, b in rows.items()}, (
                task,
                found,
            )
            assert task in html
        for method in rows:
            assert method in html, method
        assert (tiny_paper_runs[run] / "leaderboard.csv").exists()


@pytest.mark.workflow
def test_tiny_paper_run_has_nothing_left_to_do(tiny_paper_runs):
    for run, results in tiny_paper_runs.items():
        out = _paper_snakemake(run, "--dry-run", results=results)
        assert "Nothing to be done" in out.stdout + out.stderr, run


# ----- (c) every method of the profile at its smallest paper budget, in process ----------------------


def _says_unreachable(info: dict, remaining: float) -> bool:
    """The method's own account that its structure cannot reach the budget (the tiny model's floors are
    higher than BERT-base's): a ``budget_reachable``/``budget_met`` false, or a layer rule at one layer."""
    for part in info.values():
        if not isinstance(part, dict):
            continue
        if part.get("budget_reachable") is False or part.get("budget_met") is False:
            return abs(part.get("reached", part.get("reached_remaining", remaining)) - remaining) <= 1e-6
        if part.get("kept") == 1 and "total" in part and part.get("reached") is not None:  # layers: 1 of N
            return abs(part["reached"] - remaining) <= 1e-6
    return False


def _smallest_paper_budgets() -> list[tuple[str, float]]:
    paper = _paper_config()
    out = []
    for name in paper["methods"]:
        cls = methods.get(name)
        budgets = [1.0] if cls.budget_free else paper.get("method_budgets", {}).get(name, paper["budgets"])
        out.append((name, min(budgets)))
    return out


def _reference_record(model, budget: float) -> dict:
    """An element-wise reference record for random_matched (the reference method's job, stood in)."""
    from prunebench.structure.budget import per_matrix_remaining

    return {
        "method": "movement_soft",
        "budget": budget,
        "details": {
            "method": {"granularity": "element"},
            "per_matrix_remaining": {n: budget for n in per_matrix_remaining(model)},
        },
    }


def _pretrain_stage_model(name: str, budget: float, folder: Path, monkeypatch):
    """A row that compresses during pre-training starts from its stage's output: a 4-step MLM stage on the
    tiny model (prunebench.training.pretrain), loaded with a task head as the prune job does."""
    from prunebench.checkpoints.pretrained import load_pretrained
    from prunebench.training.pretrain import run_pretrain

    monkeypatch.chdir(REPO)
    raw = load_config_file()
    raw.update(profile="smoke", data={"source": "local", "train_limit": 200, "eval_limit": 32})
    exp = resolve(raw)
    exp["pretrain"] = {
        "steps": 4,
        "batch_size": 8,
        "max_seq_len": 32,
        "heldout_sentences": 16,
        "eval_points": 1,
        "precision": "fp32",
    }
    summary = run_pretrain(exp, name, budget, 0, folder, threads=1)
    return load_pretrained(str(folder), 2, seed=0, label_names=("negative", "positive")), summary


@pytest.mark.parametrize("name, budget", _smallest_paper_budgets())
def test_every_paper_method_at_its_smallest_budget_reaches_it_or_says_so(
    name, budget, tiny_model, tokenizer, sst2_small, tmp_path, monkeypatch
):
    from prunebench.training.trainer import FinetuneBudget, train

    # SMALL_SETTINGS: Q-BERT's Hessian on a few examples (a budget-free row: its remaining fraction is the
    # quantized weights' non-zeros, whatever bits the sensitivity gives each layer)
    method = methods.build(name, budget, SMALL_SETTINGS.get(name))
    if method.starts_from == "pretrain":
        tiny_model, summary = _pretrain_stage_model(name, budget, tmp_path / "pretrained", monkeypatch)
        method.use_pretrain(summary)  # as the prune job does (prunebench.runner.jobs.run_method)
    if method.needs_reference:
        method.use_reference(_reference_record(tiny_model, budget))
    method.note_run({"model": "tiny-random", "task": "sst2", "steps": 3, "batch_size": 8})
    budget_3 = FinetuneBudget(steps=3, batch_size=8, learning_rate=1e-4, max_seq_len=64)
    if method.starts_from == "pruned":  # a compound row: its base row's checkpoint, then no training (as the job)
        base = methods.build(method.base_method, budget, SMALL_SETTINGS.get(method.base_method))
        train(tiny_model, sst2_small["train"], tokenizer, budget_3, base, seed=0, log_every=1000)
        tiny_model = base.finalize(tiny_model)
        method.prepare(tiny_model, TrainingPlan(total_steps=0, seed=0))
    else:
        train(tiny_model, sst2_small["train"], tokenizer, budget_3, method, seed=0, log_every=1000)
    model = method.finalize(tiny_model)
    remaining = remaining_fraction(model)
    info = method.describe()
    assert remaining <= budget + TOLERANCE or _says_unreachable(info, remaining), (name, budget, remaining, info)
