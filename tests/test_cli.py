"""The commands the rules call fail with one clear line on bad input."""

import json
import subprocess
import sys

from prunebench.config import load_config_file, resolve
from tests.conftest import REPO


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "prunebench", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def _smoke_experiment(**overrides):
    raw = load_config_file()
    raw.update(profile="smoke", **overrides)
    return json.dumps(resolve(raw, check_files=False))


def test_missing_data_file_is_one_clear_line(tmp_path):
    exp = _smoke_experiment(data={"train": str(tmp_path / "gone.tsv"), "eval": str(tmp_path / "gone.tsv")})
    out = _run(
        "dense",
        "--experiment",
        exp,
        "--task",
        "sst2",
        "--seed",
        "0",
        "--model-dir",
        str(tmp_path / "m"),
        "--summary",
        str(tmp_path / "s.json"),
    )
    assert out.returncode == 2
    assert "data file not found" in out.stderr and "gone.tsv" in out.stderr
    assert "Traceback" not in out.stderr


def test_corrupt_dense_checkpoint_is_one_clear_line(tmp_path):
    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / "config.json").write_text("{}")
    out = _run(
        "prune",
        "--experiment",
        _smoke_experiment(),
        "--task",
        "sst2",
        "--method",
        "random",
        "--budget",
        "0.5",
        "--seed",
        "0",
        "--dense-dir",
        str(tmp_path / "dense"),
        "--model-dir",
        str(tmp_path / "m"),
        "--summary",
        str(tmp_path / "s.json"),
    )
    assert out.returncode == 2
    assert "is incomplete" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s.json").exists()


def test_truncated_training_summary_is_one_clear_line(tmp_path):
    summary = tmp_path / "s.json"
    summary.write_text('{"task": "sst2", "method": "random", "bud')
    out = _run(
        "measure",
        "--summary",
        str(summary),
        "--model-dir",
        str(tmp_path / "m"),
        "--dense-dir",
        str(tmp_path / "d"),
        "--record",
        str(tmp_path / "r.json"),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "training summary" in out.stderr and "truncated" in out.stderr and "s.json" in out.stderr
    assert not (tmp_path / "r.json").exists()


def test_config_command_reports_bad_key(tmp_path):
    out = _run("config", "--set", "budgets=[2]")
    assert out.returncode == 2 and "budgets" in out.stderr


def test_dense_start_method_without_dense_checkpoint_is_one_clear_line(tmp_path):
    out = _run(
        "prune",
        "--experiment",
        _smoke_experiment(),
        "--task",
        "sst2",
        "--method",
        "magnitude_global",
        "--budget",
        "0.5",
        "--seed",
        "0",
        "--model-dir",
        str(tmp_path / "m"),
        "--summary",
        str(tmp_path / "s.json"),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "starts from the dense checkpoint" in out.stderr and "--dense-dir" in out.stderr
