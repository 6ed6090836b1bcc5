"""``data.source: auto``: the staged local files where present, else the hub (patched here to a local mirror)."""

from __future__ import annotations

import json
import shutil

import datasets
import pytest
import torch

from prunebench.config import for_task, load_config_file, resolve
from prunebench.data import loading
from prunebench.data.loading import DataConfig, load_task_data
from prunebench.data.tasks import get_task
from tests.conftest import REPO, SST2_DEV, SST2_TRAIN, SUITE_THREADS
from tests.test_data import _tsv_rows, _write_hub_mirror

N_TRAIN = 400  # rows of the mirror's train split (the dev split is served whole: 872)


@pytest.fixture(scope="module")
def hub_mirror(tmp_path_factory):
    """A local copy of the hub's nyu-mll/glue sst2 layout: the first rows of train, all of dev."""
    root = tmp_path_factory.mktemp("hub") / "glue_mirror_auto"
    _write_hub_mirror(root, {"train": _tsv_rows(SST2_TRAIN, N_TRAIN), "validation": _tsv_rows(SST2_DEV, 10_000)})
    return root


@pytest.fixture
def hub_calls(monkeypatch, hub_mirror):
    """``datasets.load_dataset`` as the data loader calls it, serving ``nyu-mll/glue`` from the mirror
    (local files still load through ``datasets``' csv builder); the hub calls are listed."""
    calls = []
    real = datasets.load_dataset

    def load_dataset(path, name=None, *args, **kwargs):
        if path in ("csv", "json"):
            return real(path, name, *args, **kwargs)
        calls.append((path, name))
        assert path == "nyu-mll/glue", path
        return real(str(hub_mirror), name, *args, download_mode="force_redownload", **kwargs)

    monkeypatch.setattr(loading.datasets, "load_dataset", load_dataset)
    return calls


@pytest.fixture
def clone_without_data(tmp_path, monkeypatch):
    """A checkout's workflow/ in a folder with no ../shared/data beside it, as the working directory."""
    clone = tmp_path / "elsewhere" / "prunebench"
    clone.mkdir(parents=True)
    shutil.copytree(REPO / "workflow", clone / "workflow")
    monkeypatch.chdir(clone)
    assert not (clone.parent / "shared" / "data").exists()
    return clone


def test_auto_is_the_default_profiles_source():
    raw = load_config_file(REPO / "workflow" / "config.yaml")
    for name in ("default", "smoke", "glue"):
        assert raw["profiles"][name]["data"]["source"] == "auto", name


def test_auto_reads_the_local_files_when_they_are_present(monkeypatch, hub_calls):
    monkeypatch.chdir(REPO)
    data = for_task(resolve(load_config_file()), "sst2")["data"]
    assert data["source"] == "local" and data["train"] == "../shared/data/sst2/train.tsv"
    assert "source_note" not in data
    loaded = load_task_data(get_task("sst2"), DataConfig.from_dict({**data, "train_limit": 8}), eval_only=True)
    assert len(loaded["eval"]) == 872 and hub_calls == []


def test_auto_falls_back_to_the_hub_and_records_official_splits(clone_without_data, hub_calls, caplog):
    exp = resolve(load_config_file())  # the default profile, resolved where no data files are
    data = for_task(exp, "sst2")["data"]
    assert data["source"] == "hub" and "train" not in data and "eval" not in data
    assert data["train_split_kind"] == data["eval_split_kind"] == "official"
    assert "../shared/data/sst2/train.tsv not found" in data["source_note"]
    report = {}
    loaded = load_task_data(get_task("sst2"), DataConfig.from_dict(data), report=report)
    assert hub_calls == [("nyu-mll/glue", "sst2")]
    assert len(loaded["train"]) == N_TRAIN and len(loaded["eval"]) == 872
    assert report["source"] == "hub" and report["eval_split_kind"] == "official"
    assert report["files"]["eval"] == "nyu-mll/glue [validation]" and report["source_note"] == data["source_note"]
    local = load_task_data(get_task("sst2"), DataConfig(source="local", train=str(SST2_TRAIN), eval=str(SST2_DEV)))
    assert loaded["eval"]["sentence"] == local["eval"]["sentence"] and loaded["eval"]["label"] == local["eval"]["label"]


def test_local_source_with_a_missing_file_stays_an_error(clone_without_data):
    from prunebench.config import ConfigError

    raw = load_config_file()
    raw["data"] = {"source": "local"}
    with pytest.raises(ConfigError, match=r"task_data\.sst2\.train.*data file not found"):
        resolve(raw)


def test_files_named_in_the_config_are_read_not_replaced_by_the_hub(clone_without_data):
    from prunebench.config import ConfigError

    raw = load_config_file()
    raw["data"] = {"source": "auto", "train": "mine/{task}.tsv", "eval": "mine/{task}.tsv"}
    with pytest.raises(ConfigError, match=r"key 'data.train': data file not found for task 'sst2': mine/sst2.tsv"):
        resolve(raw)


def test_default_profiles_first_job_records_the_hub_without_the_data_folder(clone_without_data, hub_calls):
    """The dense fine-tuning job of the default profile (shortened), where ../shared/data is absent."""
    from prunebench.runner.cli import main

    raw = load_config_file()
    raw.update(finetune={"steps": 2}, data={"source": "auto", "train_limit": 64})
    exp = for_task(resolve(raw), "sst2")  # as the workflow hands a job its experiment
    summary = clone_without_data / "results" / "summaries" / "sst2" / "dense" / "1" / "seed0.json"
    args = ["dense", "--experiment", json.dumps(exp), "--task", "sst2", "--seed", "0", "--threads", "1"]
    args += ["--model-dir", str(clone_without_data / "results" / "models" / "sst2" / "dense" / "seed0")]
    assert main([*args, "--summary", str(summary)]) == 0
    torch.set_num_threads(SUITE_THREADS)  # the job set 1; restore the suite's setting
    record = json.loads(summary.read_text())
    assert record["config"]["data"]["source"] == "hub" and record["details"]["data"]["source"] == "hub"
    assert record["details"]["data"]["eval_split_kind"] == "official"
    assert record["details"]["data"]["train_split_kind"] == "sample"  # train_limit: a sample of the official split
    assert record["details"]["data"]["examples"]["eval"] == 872
    assert ("nyu-mll/glue", "sst2") in hub_calls
