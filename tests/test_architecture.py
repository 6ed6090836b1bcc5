"""The package's import direction: runner -> methods -> core, no cycles (import-linter contracts).

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); ``lint-imports`` checks them
on the source tree. A second test adds a forbidden import to a copy of the tree and checks that
the same contracts then fail, so the check is known to bite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    for name in ("prunebench", "methods"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_import_contracts_hold():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_core_import_of_methods_breaks_the_contracts(tmp_path):
    root = _copy_tree(tmp_path)
    assert _lint(root).returncode == 0
    budget = root / "prunebench" / "structure" / "budget.py"
    budget.write_text(budget.read_text() + "\nfrom methods import magnitude  # noqa: E402,F401\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "the core never imports methods/ or the job runner BROKEN" in result.stdout
    assert "prunebench.structure.budget -> methods" in result.stdout


def test_an_import_cycle_breaks_the_contracts(tmp_path):
    root = _copy_tree(tmp_path)
    surgery = root / "prunebench" / "structure" / "surgery.py"
    budget = root / "prunebench" / "structure" / "budget.py"
    assert "from prunebench.structure.budget import" in surgery.read_text()  # surgery -> budget already
    budget.write_text(budget.read_text() + "\nfrom prunebench.structure import surgery  # noqa: E402,F401\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "no import cycle between sibling subpackages or modules BROKEN" in result.stdout
