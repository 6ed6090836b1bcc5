"""A missing or malformed task file stops a run before any training:
``prunebench.data.check`` unit-tested, then the workflow's ``onstart`` check through Snakemake."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prunebench.config import load_config_file, resolve
from prunebench.data.check import CACHE_NAME, check_experiment_data
from prunebench.data.loading import DataError
from tests.conftest import REPO

MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _experiment(tmp_path: Path, files: dict[str, tuple[str, str]]) -> dict:
    """The smoke profile on the given tasks, each with its own (train, eval) files."""
    raw = load_config_file()
    raw["profile"] = "smoke"
    raw["task"] = list(files)
    raw["results_dir"] = str(tmp_path / "results")
    raw["task_data"] = {task: {"train": train, "eval": eval_} for task, (train, eval_) in files.items()}
    return resolve(raw, check_files=True)


@pytest.fixture
def good_sst2(tmp_path):
    rows = "".join(f"a {'good' if i % 2 else 'bad'} film number {i}\t{i % 2}\n" for i in range(6))
    return _write(tmp_path / "sst2.tsv", "sentence\tlabel\n" + rows)


def test_good_files_are_checked_once_and_cached(tmp_path, good_sst2):
    exp = _experiment(tmp_path, {"sst2": (good_sst2, good_sst2)})
    checked = check_experiment_data(exp, tmp_path / "results")
    assert checked == {"sst2": {"eval": 6, "train": 6}}
    assert json.loads((tmp_path / "results" / CACHE_NAME).read_text())["sst2"]["examples"]["train"] == 6
    assert check_experiment_data(exp, tmp_path / "results") == {}  # cached: nothing re-read
    Path(good_sst2).write_text(Path(good_sst2).read_text() + "one more film\t1\n")  # changed file: re-checked
    assert check_experiment_data(exp, tmp_path / "results")["sst2"]["train"] == 7


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "is empty"),
        ("text\tlabel\nsome film\t1\n", "lacks column(s) ['sentence']"),
        ("sentence\tlabel\nsome film\tgreat\n", "label 'great' is neither an index nor one of"),
        ("sentence\tlabel\nsome film\t7\n", "is not a valid class index"),
    ],
)
def test_a_malformed_file_is_named_with_its_problem(tmp_path, good_sst2, content, problem):
    bad = _write(tmp_path / "bad.tsv", content)
    exp = _experiment(tmp_path, {"sst2": (bad, good_sst2)})
    with pytest.raises(DataError) as err:
        check_experiment_data(exp, tmp_path / "results")
    assert "bad.tsv" in str(err.value) and problem in str(err.value) and "task 'sst2'" in str(err.value)


def test_every_bad_task_is_listed_in_one_error(tmp_path, good_sst2):
    bad_mrpc = _write(tmp_path / "mrpc.tsv", MRPC_HEADER + "maybe\t1\t2\tA said.\tB said.\n")
    empty = _write(tmp_path / "empty.tsv", "")
    exp = _experiment(tmp_path, {"sst2": (empty, good_sst2), "mrpc": (bad_mrpc, bad_mrpc)})
    with pytest.raises(DataError) as err:
        check_experiment_data(exp, tmp_path / "results")
    text = str(err.value)
    assert "task 'sst2'" in text and "empty.tsv" in text
    assert "task 'mrpc'" in text and "label 'maybe'" in text
    assert not (tmp_path / "results" / CACHE_NAME).exists()


@pytest.mark.workflow
def test_the_workflow_stops_before_any_training_on_a_bad_task_file(tmp_path, good_sst2):
    bad = _write(tmp_path / "rte_train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tperhaps\n")
    overrides = tmp_path / "bad_data.yaml"
    overrides.write_text(yaml.safe_dump({"task_data": {"rte": {"train": bad, "eval": bad}}}))
    results = tmp_path / "results"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--configfile",
        str(overrides),
        "--config",
        "profile=smoke",
        "task=[sst2,rte]",
        "methods=[magnitude_global]",
        "budgets=[0.5]",
        f"results_dir={results}",
    ]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "rte_train.tsv" in text and "label 'perhaps'" in text and "nothing was trained" in text
    assert not (results / "models").exists() and not (results / "summaries").exists()
