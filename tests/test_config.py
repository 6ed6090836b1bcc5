"""Configuration: profiles, overrides and errors that name the key and the value."""

import pytest

from prunebench.config import ConfigError, load_config_file, resolve


@pytest.fixture
def raw(monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)  # data paths are relative to the repository root, as in Snakemake
    return load_config_file()


def test_profiles_resolve(raw):
    default = resolve(raw)
    assert default["model"] == "embedded" and default["profile"] == "default"
    raw["profile"] = "smoke"
    smoke = resolve(raw)
    assert smoke["model"] == "tiny-random"


def test_overrides_merge_into_profile(raw):
    raw.update(profile="smoke", budgets=[0.7], finetune={"steps": 3})
    exp = resolve(raw)
    assert exp["budgets"] == [0.7]
    assert exp["finetune"]["steps"] == 3 and exp["finetune"]["batch_size"] == 16  # merged, not replaced


@pytest.mark.parametrize(
    "override, message",
    [
        ({"methods": ["magnitude_global", "movment"]}, r"key 'methods': unknown method 'movment'"),
        ({"budgets": [0.5, 1.5]}, r"key 'budgets.1': 1.5 is greater than the maximum of 1"),
        ({"budgets": [0]}, r"key 'budgets.0': 0 is less than or equal to the minimum of 0"),
        (
            {"data": {"train": "../shared/data/{task}/no_such.tsv"}},
            r"key 'data.train': data file not found for task 'sst2': .*sst2/no_such.tsv",
        ),
        (
            {"task": ["sst2", "mnli"], "data": {"train": "../shared/data/{task}/train_subset_9k.tsv"}},
            r"data file not found for task 'sst2'",
        ),
        ({"budgest": [0.5]}, r"'budgest' was unexpected"),
        ({"finetune": {"stpes": 3}}, r"key 'finetune'.*'stpes' was unexpected"),
        ({"profile": "fast"}, r"unknown profile 'fast'"),
        ({"task": "colaa"}, r"key 'task': 'colaa' is not one of"),
        (
            {"method_settings": {"magnitude_global": {"warmup": 1}}},
            r"method_settings.magnitude_global.*unknown setting",
        ),
        ({"model": "./no/such/folder"}, r"key 'model': local model folder not found"),
    ],
)
def test_bad_config_names_key_and_value(raw, override, message):
    raw.update(override)
    with pytest.raises(ConfigError, match=message):
        resolve(raw)


def test_unknown_hub_model_id_is_refused(raw, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    def not_found(self, repo_id, **kw):
        import httpx2

        request = httpx2.Request("GET", f"https://hub.invalid/api/models/{repo_id}")
        raise RepositoryNotFoundError(f"{repo_id} not found", response=httpx2.Response(404, request=request))

    monkeypatch.setattr(HfApi, "model_info", not_found)
    raw["model"] = "nobody/no-such-bert"
    with pytest.raises(ConfigError, match="unknown model id 'nobody/no-such-bert'"):
        resolve(raw)


def test_malformed_model_id_is_refused(raw):
    raw["model"] = "bert base uncased!"
    with pytest.raises(ConfigError, match="neither a local folder nor a valid hub id"):
        resolve(raw)


def test_unreachable_hub_accepts_a_well_formed_id(raw, monkeypatch):
    from huggingface_hub import HfApi

    def offline(self, repo_id, **kw):
        raise OSError("Name or service not known")

    monkeypatch.setattr(HfApi, "model_info", offline)
    raw["model"] = "bert-base-uncased"
    assert resolve(raw)["model"] == "bert-base-uncased"


def test_steps_list_is_swept_and_precision_auto_accepted(raw):
    from prunebench.config import finetune_steps, steps_suffix

    raw.update(profile="smoke", finetune={"steps": [3, 5], "precision": "auto"})
    exp = resolve(raw)
    assert finetune_steps(exp) == [3, 5]
    assert [steps_suffix(s, True) for s in (3, 5)] == ["_steps3", "_steps5"]
    assert steps_suffix(200, False) == ""  # one length: paths as before
    raw["profile"] = "convergence"
    raw.pop("finetune")
    assert finetune_steps(resolve(raw)) == [200, 800, 1600]


@pytest.mark.parametrize(
    "steps, needle", [([200, 0], "finetune.steps"), ([], "finetune.steps"), ([5, 5], "non-unique")]
)
def test_bad_steps_list_is_a_clear_error(raw, steps, needle):
    raw.update(profile="smoke", finetune={"steps": steps})
    with pytest.raises(ConfigError, match=needle):
        resolve(raw)


def test_unknown_precision_is_a_clear_error(raw):
    raw.update(profile="smoke", finetune={"precision": "fp16"})
    with pytest.raises(ConfigError, match=r"finetune\.precision.*'fp16'"):
        resolve(raw)


def test_method_budgets_replace_budgets_for_their_methods(raw):
    from prunebench.config import budgets_of, normalize_cli_values

    raw.update(normalize_cli_values({"method_budgets": {"head_importance": ["0.8", "0.75"]}}))  # as --config gives it
    exp = resolve(raw)  # default profile: budgets [0.5, 0.1]
    assert budgets_of(exp, "head_importance") == [0.8, 0.75]
    assert budgets_of(exp, "magnitude_global") == [0.5, 0.1]
    assert budgets_of(exp, "int8_dynamic") == [1.0]  # budget-free: once
    raw["method_budgets"] = None  # `method_budgets=` (empty) clears every list
    assert budgets_of(resolve(raw), "head_importance") == [0.5, 0.1]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"movment": [0.5]}, r"key 'method_budgets.movment': unknown method 'movment'"),
        ({"wanda": [0.5]}, r"key 'method_budgets.wanda': method 'wanda' is not in 'methods'"),
        ({"int8_dynamic": [0.5]}, r"key 'method_budgets.int8_dynamic': method 'int8_dynamic' is budget-free"),
        ({"fixed_attention": [0.8]}, r"key 'method_budgets.fixed_attention': .*budget-free"),
        ({"layerdrop": [0.5, 1.5]}, r"key 'method_budgets.layerdrop.1': 1.5 is greater than the maximum of 1"),
        ({"layerdrop": [0]}, r"key 'method_budgets.layerdrop.0': 0 is less than or equal to the minimum of 0"),
        ({"layerdrop": []}, r"key 'method_budgets.layerdrop'.*should be non-empty"),
        ({"layerdrop": 0.5}, r"key 'method_budgets.layerdrop': 0.5 is not of type 'array'"),
        ({"layerdrop": [0.5, 0.50000001]}, r"key 'method_budgets.layerdrop': repeated budget"),
    ],
)
def test_bad_method_budgets_names_key_and_value(raw, entry, message):
    raw["method_budgets"] = entry
    with pytest.raises(ConfigError, match=message):
        resolve(raw)


def test_methods_all_is_every_registered_method(raw):
    from prunebench.method import registry

    raw.update(profile="smoke", methods="all", method_budgets={})
    assert resolve(raw, check_files=False)["methods"] == registry.available()
    raw.update(methods="everything")
    with pytest.raises(ConfigError, match="methods"):
        resolve(raw, check_files=False)
