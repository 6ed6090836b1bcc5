"""The method template (``methods/_template.py``): a working method, tested the way a new method's
test file (``tests/test_<name>.py``, docs/adding-a-method.md) tests its method:

- the budget is reached by the method's *own rule* (``remaining_before_finalize``, counted with
  ``prunebench.structure.budget``, is at the target, so finalize's enforcement did nothing);
- the finalized model saves and reloads (``prunebench.checkpoints.store``) with identical logits;
- ``describe()`` carries the guard's fields and the fields the method adds to the record.

The template is not imported by ``methods/__init__.py``. Importing it here registers
``template_example``; the ``template`` fixture does so in a copy of the registry and restores
the original afterwards, so other tests (e.g. the paper profile's "every registered method" checks)
never see it.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

import methods
from prunebench.checkpoints.store import load_model, save_model
from prunebench.method import registry
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import per_matrix_remaining, remaining_fraction
from prunebench.training.trainer import FinetuneBudget, train
from tests.conftest import logits, sample_batch

NAME = "template_example"
BUDGET = 0.2
MODULE = "methods._template"


@pytest.fixture(scope="module")
def template():
    """The template module, imported with ``template_example`` registered in a copy of the registry."""
    registry.available()  # the benchmark's own methods are registered in the real registry first
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        sys.modules.pop(MODULE, None)
        module = importlib.import_module(MODULE)
        try:
            yield module
        finally:
            sys.modules.pop(MODULE, None)
            if hasattr(methods, "_template"):
                delattr(methods, "_template")


@pytest.fixture(scope="module", params=["global", "local"])
def trained(request, template, tokenizer, sst2_small):
    """The template method (each scope) trained for 12 real steps with the shared trainer on the tiny
    random BERT, and its finalized model; trained once per scope for the tests below (read only)."""
    from prunebench.checkpoints.pretrained import load_pretrained

    model = load_pretrained("tiny-random", num_labels=2, seed=0, label_names=("negative", "positive"))
    method = methods.build(NAME, BUDGET, {"update_every": 2, "scope": request.param})
    assert isinstance(method, template.TemplateMagnitude)
    method.note_run({"model": "tiny-random", "task": "sst2", "steps": 12, "batch_size": 8})
    ft = FinetuneBudget(steps=12, batch_size=8, learning_rate=1e-3, max_seq_len=64, freeze_embeddings=False)
    train(model, sst2_small["train"], tokenizer, ft, method, seed=0, log_every=1000)
    return method, method.finalize(model)


def test_template_is_not_part_of_the_benchmark():
    init = (Path(methods.__file__).parent / "__init__.py").read_text()
    assert "_template" not in init
    if MODULE not in sys.modules:  # outside the fixture the real registry does not know it
        assert NAME not in methods.available()


def test_template_is_registered_in_the_fixture_only(template):
    assert methods.get(NAME) is template.TemplateMagnitude
    assert template.TemplateMagnitude.name == NAME


def test_budget_is_reached_by_the_method_own_rule(trained):
    method, model = trained
    # the schedule reached the target before finalize: its enforcement had nothing left to do
    assert method.remaining_before_finalize == pytest.approx(BUDGET, abs=0.005)
    assert remaining_fraction(model) == pytest.approx(BUDGET, abs=0.005)
    assert method.reached_at_step is not None and method.reached_at_step <= 12
    if method.settings.scope == "local":
        assert all(v == pytest.approx(BUDGET, abs=0.01) for v in per_matrix_remaining(model).values())


def test_schedule_prunes_gradually(template, tiny_model, tokenizer, sst2_small):
    method = methods.build(NAME, 0.1, {"update_every": 1, "warmup_fraction": 0.0, "cooldown_fraction": 0.25})
    seen = []
    original = method.after_step

    def spy(model, step):
        original(model, step)
        seen.append(remaining_fraction(model))

    method.after_step = spy
    ft = FinetuneBudget(steps=8, batch_size=8, learning_rate=1e-3, max_seq_len=64, freeze_embeddings=False)
    train(tiny_model, sst2_small["train"], tokenizer, ft, method, seed=0, log_every=1000)
    assert 0.1 < seen[0] < 1.0
    assert all(a >= b - 1e-9 for a, b in zip(seen, seen[1:])), "the remaining fraction only falls"
    assert seen[-1] == pytest.approx(0.1, abs=1e-3)


def test_finalized_model_reloads_with_identical_logits(trained, tokenizer, tmp_path):
    _, model = trained
    batch = sample_batch(tokenizer)
    before = logits(model, batch)
    save_model(model, tokenizer, tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert type(again) is type(model)
    assert torch.equal(logits(again, batch), before)
    assert remaining_fraction(again) == pytest.approx(remaining_fraction(model), abs=0)


def test_describe_carries_the_guard_and_the_method_fields(template, trained):
    method, model = trained
    info = method.describe()
    cls = template.TemplateMagnitude
    # the guard (prunebench.method.base): both fields, the second as the class says
    assert info["finalize_enforcement"] == cls.finalize_enforcement and cls.finalize_enforcement.strip()
    assert isinstance(info["remaining_before_finalize"], float)
    assert remaining_fraction(model) <= info["remaining_before_finalize"] + 1e-6
    # the base fields
    assert info["name"] == NAME and info["paper"] == cls.paper and "Eq. 1" in cls.paper
    assert info["starts_from"] == "dense" and info["granularity"] == "element"
    assert info["target_remaining"] == BUDGET
    scope = method.settings.scope
    assert info["settings"] == {"warmup_fraction": 0.1, "cooldown_fraction": 0.3, "update_every": 2, "scope": scope}
    assert info["calibration"] is None  # calibrated_on is None: nothing to compare
    # what the template adds to details.method of the record
    assert info["schedule"].startswith("cubic") and info["mask_updates"] > 0 and info["reached_at_step"] is not None
    json.dumps(info)  # the record stores it as JSON


def test_truncation_by_finalize_is_visible(template, tiny_model):
    """Without training the schedule prunes nothing: finalize's top-k does all of it, and the guard says so."""
    method = methods.build(NAME, 0.3)
    method.prepare(tiny_model, TrainingPlan(total_steps=100, seed=0))
    model = method.finalize(tiny_model)
    assert method.describe()["remaining_before_finalize"] == pytest.approx(1.0)
    assert remaining_fraction(model) == pytest.approx(0.3, abs=1e-3)


def test_settings_are_checked(template):
    with pytest.raises(ValueError, match="unknown setting"):
        methods.build(NAME, 0.5, {"warmup": 0.1})
    with pytest.raises(ValueError, match="scope"):
        methods.build(NAME, 0.5, {"scope": "row"})
    with pytest.raises(ValueError, match="update_every"):
        methods.build(NAME, 0.5, {"update_every": 0})
    fields = template.TemplateMagnitude.Settings.__dataclass_fields__.values()
    assert all(f.metadata.get("help") for f in fields), "every setting has a help string"
