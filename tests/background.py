"""Background fixtures: whole-workflow runs made while the rest of the test session runs.

A background fixture (``background_fixture``) is a session fixture whose value is made by a function of an empty
folder, typically a Snakemake run. When collection ends, the tests that read one move to the end of the session
and the runs they read are noted; the session's first test starts them, ``WORKERS`` at a time on background
threads (``BackgroundRuns``), and each waiting test blocks until its run is made. The unit tests run meanwhile in
the pytest process: each workflow job is its own process, so the two cores stay busy instead of waiting for one
another.

Its state lives here, not in conftest.py: pytest imports conftest.py as ``conftest`` while test modules import
``tests.conftest``, two module objects; this module is imported once, as ``tests.background``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

#: background fixture name -> the function that makes its value in an empty folder (on the background thread)
_BACKGROUND: dict[str, Callable[[Path], Any]] = {}
#: the background fixtures the selected tests use, in the order they are made
_NEEDED = pytest.StashKey[list[str]]()


def background_fixture(make: Callable[[Path], Any]):
    """A session fixture named after ``make``: its value, ``make(folder)``, is made on the background thread
    from the start of the session (``BackgroundRuns``); a test that uses it waits for it. ``make`` runs its
    commands with ``run_captured``/``start_process`` so that a session that ends early stops them."""
    _BACKGROUND[make.__name__] = make

    @pytest.fixture(scope="session", name=make.__name__)
    def wait_for_run(background_runs: BackgroundRuns):
        return background_runs.result(make.__name__)

    wait_for_run.__doc__ = make.__doc__
    return wait_for_run


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(config, items):
    """Tests that read a background run go last, ordered by when their runs are made (in the order the fixtures
    were defined: conftest.py's first); the runs they read are noted for ``background_runs``."""
    order = {name: i for i, name in enumerate(_BACKGROUND)}

    def ready_at(item) -> int:  # the position of the last run the test reads; -1: none
        return max((order[n] for n in getattr(item, "fixturenames", ()) if n in order), default=-1)

    items.sort(key=ready_at)  # stable: the unit tests first, each group in its collection order
    used = {n for item in items for n in getattr(item, "fixturenames", ()) if n in order}
    config.stash[_NEEDED] = [name for name in _BACKGROUND if name in used]


#: background runs made at once: two, so that one run's serial stretches (Snakemake's start and DAG, a single
#: job that the rest depends on) are filled by the other's jobs once the unit tests are done
WORKERS = 2


class BackgroundRuns:
    """The session's background workflow runs, made ``WORKERS`` at a time in the order they are listed."""

    def __init__(self, names: list[str], tmp_path_factory: pytest.TempPathFactory):
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="background-run")
        self._runs: dict[str, Future] = {
            name: self._pool.submit(self._timed, name, tmp_path_factory.mktemp(name)) for name in names
        }

    def _timed(self, name: str, folder: Path):
        start = time.perf_counter()
        try:
            return _BACKGROUND[name](folder)
        finally:
            _SECONDS[name] = time.perf_counter() - start

    def result(self, name: str):
        """The run's value, once it is made (its error, re-raised, if it failed)."""
        return self._runs[name].result()

    def close(self) -> None:
        """Stop what is still running (a session that ended early, -x or Ctrl-C) without waiting for it."""
        _STOPPED.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in list(_LIVE):
            if proc.poll() is None:  # a finished process's group id may be reused
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session", autouse=True)
def background_runs(request, tmp_path_factory):
    """Starts the background runs the selected tests need, with the session's first test."""
    runs = BackgroundRuns(request.config.stash.get(_NEEDED, []), tmp_path_factory)
    yield runs
    runs.close()


#: wall seconds of each background run made this session (for the terminal summary)
_SECONDS: dict[str, float] = {}
#: processes started by ``start_process`` and not yet finished
_LIVE: set[subprocess.Popen] = set()
#: set when the session ends: no further process starts
_STOPPED = threading.Event()


def start_process(cmd: list[str], *, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """``cmd`` started in the checkout in a process group of its own (the session can stop it and its jobs)."""
    if _STOPPED.is_set():
        raise RuntimeError(f"the test session has ended: not starting {cmd[:4]}")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, **popen)
    _LIVE.add(proc)
    return proc


def run_captured(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float) -> subprocess.CompletedProcess:
    """``cmd`` run to its end by ``start_process``, text output captured; past ``timeout`` its group is killed."""
    proc = start_process(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        _LIVE.discard(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def pytest_terminal_summary(terminalreporter):
    """How long each background run took (beside the unit tests, so its wall time includes their share)."""
    if _SECONDS:
        runs = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in _SECONDS.items())
        terminalreporter.write_line(f"background workflow runs: {runs}")
