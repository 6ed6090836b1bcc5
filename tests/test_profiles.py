"""The workflow's other profiles resolve and plan: the paper profile and the SLURM executor profile."""

import pytest
import yaml

from tests.conftest import REPO, snakemake_dry_run

_dry_run = snakemake_dry_run  # the name other test modules import


def _job_count(text, rule):
    for line in text.split("Job stats")[-1].splitlines():
        parts = line.split()
        if parts[:1] == [rule]:
            return int(parts[1])
    return 0


def test_paper_profile_plans_every_task_method_budget_and_seed(paper_dry_run):
    # `snakemake --dry-run --cores 2 --printshellcmds --config profile=paper` (tests/conftest.py, shared)
    text = paper_dry_run.text
    assert paper_dry_run.returncode == 0, text[-3000:]
    paper = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())["profiles"]["paper"]
    # every registered method (`methods: all`): element-wise ones at `budgets`, structured ones at their
    # `method_budgets`, budget-free ones (quantization, fixed attention) once
    import methods

    assert paper["methods"] == "all"
    paper["methods"] = methods.available()

    runs = sum(
        1 if methods.get(m).budget_free else len(paper["method_budgets"].get(m, paper["budgets"]))
        for m in paper["methods"]
    )
    assert runs >= 66
    assert _job_count(text, "finetune_dense") == 4 * 3  # tasks x seeds
    assert _job_count(text, "prune") == 4 * 3 * runs  # tasks x seeds x (method, budget) runs
    assert _job_count(text, "measure") == 4 * 3 * (1 + runs)  # every record, dense included
    assert "bert-base-uncased" in text and '"precision": "bf16"' in text
    assert '"max_seq_len": 384' in text  # SQuAD's task override reached its jobs


def test_slurm_profile_plans_the_smoke_workflow(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    out = _dry_run(
        "--workflow-profile",
        "none",
        "--profile",
        "workflow/profiles/slurm",
        "--config",
        "profile=smoke",
        f"results_dir={tmp_path}",
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    smoke = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())["profiles"]["smoke"]
    n_prune = len(smoke["methods"]) * len(smoke["budgets"]) * len(smoke["seeds"])
    assert n_prune >= 18  # the magnitude family, random and the methods beyond the survey, at two budgets
    assert _job_count(text, "prune") == n_prune
    assert _job_count(text, "measure") == n_prune + len(smoke["seeds"])  # every record (dense too) has its measure job
    assert "mem_mb=6000" in text and "runtime=120" in text  # rules declare their resources
