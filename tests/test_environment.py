"""pyproject.toml and environment.yml name the same pinned dependencies."""

import re

import yaml

from tests.conftest import REPO


def _pins_pyproject():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["test"]
    return {re.split("==", d)[0].lower(): d for d in deps}


def _pins_conda():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {re.split("==", d)[0].lower(): d for d in pip if "==" in d}


def test_same_pins_in_both_files():
    assert _pins_pyproject() == _pins_conda()


def test_torch_is_pinned_exactly():
    assert _pins_pyproject()["torch"] == "torch==2.13.0"
