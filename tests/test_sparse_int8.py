"""Compound rows (methods/sparse_int8.py): a pruned row's checkpoint quantized to int8, through the jobs."""

from __future__ import annotations

import pytest

import methods
from prunebench.config import ConfigError, budgets_of, check_semantics, for_task, load_config_file, resolve
from prunebench.quantization.int8 import is_quantized_model

SEQ = 16
MEASURE = {"seq_len": SEQ, "batch_sizes": [1, 4], "warmup": 0, "repeats": 2, "min_time_s": 0.0, "memory": False}


@pytest.fixture(scope="module")
def compound(tmp_path_factory):
    """Dense, magnitude_global at 0.1 and magnitude_global_int8 from it (tiny model, 4 steps), and its record."""
    from prunebench.runner.jobs import load_context, measure_and_record, run_dense, run_method

    root = tmp_path_factory.mktemp("compound")
    raw = load_config_file()
    raw.update(profile="smoke")
    exp = for_task(resolve(raw, check_files=False), "sst2")
    exp["data"] = {**exp["data"], "train_limit": 32, "eval_limit": 8}
    exp["finetune"] = {**exp["finetune"], "steps": 4, "batch_size": 8, "eval_batch_size": 8, "max_seq_len": SEQ}
    ctx = load_context(exp, "sst2", threads=1)
    run_dense(ctx, 0, root / "dense", root / "dense.json")
    base = run_method(ctx, "magnitude_global", 0.1, 0, root / "dense", root / "base", root / "base.json")
    summary = run_method(
        ctx, "magnitude_global_int8", 0.1, 0, None, root / "int8", root / "int8.json", start_dir=root / "base"
    )
    record = measure_and_record(root / "int8.json", root / "int8", root / "dense", root / "rec.json", MEASURE, 2)
    return {"root": root, "base": base, "summary": summary, "record": record}


def test_compound_row_quantizes_its_base_checkpoint_and_keeps_its_zeros(compound):
    from prunebench.checkpoints.store import load_model
    from prunebench.structure.budget import remaining_fraction

    info = compound["summary"]["details"]["method"]
    assert info["base_method"] == "magnitude_global" and info["starts_from"] == "pruned"
    base = remaining_fraction(load_model(compound["root"] / "base"))
    assert info["remaining_before_quantization"] == pytest.approx(base)
    assert info["remaining_before_quantization"] == pytest.approx(0.1, abs=1e-3)
    assert is_quantized_model(load_model(compound["root"] / "int8"))
    assert compound["summary"]["details"]["training"]["steps"] == 0  # post-training: no fine-tuning step


def test_compound_record_counts_the_base_pruning_not_the_rounding_and_is_timed_in_int8(compound):
    metrics = compound["record"]["metrics"]
    assert metrics["encoder_remaining"]["value"] == pytest.approx(0.1, abs=1e-3)
    assert metrics["encoder_stored_fraction"]["value"] == 1.0
    assert metrics["theoretical_speedup"]["value"] > 2  # the zeros a sparse engine could skip
    ort = compound["record"]["details"]["measurement"]["onnx_runtime"]
    assert ort["error"] is None and metrics["ort_speedup_b4"]["value"] > 0
    dense_disk = sum(f.stat().st_size for f in (compound["root"] / "dense").rglob("*") if f.is_file())
    assert metrics["disk_bytes_sparse_format"]["value"] < dense_disk


def test_compound_row_without_its_base_is_refused_and_takes_the_base_budgets():
    raw = load_config_file()
    raw.update(profile="smoke")
    exp = resolve(raw, check_files=False)
    with pytest.raises(ConfigError, match="'obert_int8' starts from the checkpoint of 'obert'.*add 'obert'"):
        check_semantics({**exp, "methods": ["magnitude_global", "obert_int8"]}, check_files=False)
    exp = {**exp, "methods": ["magnitude_2to4", "magnitude_global", "magnitude_global_int8"]}
    exp["method_budgets"] = {"magnitude_global": [0.1]}
    assert budgets_of(exp, "magnitude_global_int8") == [0.1]
    assert methods.get("magnitude_global_int8").quantizes and not methods.get("magnitude_global_int8").budget_free


def test_compound_job_without_a_start_checkpoint_is_one_clear_error(tmp_path):
    from prunebench.checkpoints.store import CheckpointError
    from prunebench.runner.jobs import Context, run_method

    ctx = Context({"method_settings": {}}, None, None, None, None, None, None, 1)
    with pytest.raises(CheckpointError, match="starts from 'sparsegpt''s checkpoint: give --start-dir"):
        run_method(ctx, "sparsegpt_int8", 0.1, 0, None, tmp_path / "m", tmp_path / "s.json")


def test_workflow_hands_the_compound_job_its_base_checkpoint(tmp_path):
    from tests.conftest import snakemake_dry_run

    out = snakemake_dry_run(
        "--cores",
        "2",
        "--printshellcmds",
        "--config",
        "profile=smoke",
        f"results_dir={tmp_path}",
        "methods=[magnitude_global,magnitude_global_int8]",
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    commands = [line for line in out.stdout.splitlines() if "--method magnitude_global_int8" in line]
    assert len(commands) == 2  # budgets 0.5 and 0.1, as its base
    for budget in ("0.5", "0.1"):
        (cmd,) = [c for c in commands if f"--budget {budget} " in c]
        assert f"--start-dir {tmp_path}/models/sst2/magnitude_global/{budget}/seed0 " in cmd
        assert "--dense-dir" not in cmd
