"""Times ONNX graphs in Neural Magic's DeepSparse engine: the worker the measure job runs in DeepSparse's
own environment (``make deepsparse-env``: ``.venv-deepsparse``, whose onnx and numpy pins conflict with
the project's), as a script, so it imports nothing but the standard library, numpy and deepsparse.

    .venv-deepsparse/bin/python prunebench/measure/deepsparse_worker.py JOB.json

JOB.json (written by ``prunebench.measure.deepsparse_backend``)::

    {"model": "model.onnx", "dense": "dense.onnx", "threads": 1, "warmup": 2, "repeats": 7,
     "min_time_s": 1.0, "batches": {"1": "b1.npz", "32": "b32.npz"}, "inputs": [...], "outputs": [...]}

Each batch file holds the int64 inputs by name and, under ``reference/<output name>``, PyTorch's outputs
of the measured model (``model_reference/...``) and of the dense model (``dense_reference/...``). Per
batch size three engines are compiled for that batch size: the measured model, the dense model and the
dense model again (the control: the dense model timed against itself, whose ratio shows the timing's own
noise). After ``warmup`` rounds they run in turn, one call each per round, for at least ``repeats`` rounds
and ``min_time_s`` seconds, so drift in the machine's speed affects all three alike. Printed as the last
line of stdout, JSON: the engine's version and CPU description, per batch size each engine's fraction of
natively supported ops, the max abs difference of its outputs from PyTorch's, and the latency samples
(ms) with their median. A failure is printed as ``{"error": "..."}`` with exit status 1.

Analytics: the caller sets ``NM_DISABLE_ANALYTICS=1`` (DeepSparse otherwise sends usage events on import);
the worker refuses to run without it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path


def _timed(engine, inputs) -> float:
    start = time.perf_counter()
    engine.run(inputs)
    return 1e3 * (time.perf_counter() - start)


def _max_diff(outputs, reference) -> float:
    import numpy as np

    return max(float(np.max(np.abs(o.astype(np.float64) - r.astype(np.float64)))) for o, r in zip(outputs, reference))


def measure(job: dict) -> dict:
    import deepsparse
    import numpy as np
    from deepsparse import Engine
    from deepsparse.cpu import cpu_architecture

    arch = cpu_architecture()
    out = {
        "engine_version": deepsparse.__version__,
        "cpu": {k: arch.get(k) for k in ("isa", "vnni", "bf16", "vendor_model", "available_num_cores")},
        "batches": {},
    }
    for bs, path in job["batches"].items():
        data = np.load(path)
        inputs = [data[name].astype(np.int64) for name in job["inputs"]]
        engines = {
            "model": Engine(job["model"], batch_size=int(bs), num_cores=int(job["threads"])),
            "dense": Engine(job["dense"], batch_size=int(bs), num_cores=int(job["threads"])),
            "dense_control": Engine(job["dense"], batch_size=int(bs), num_cores=int(job["threads"])),
        }
        entry: dict = {"supported_ops": {}, "max_abs_diff": {}, "samples_ms": {}, "median_ms": {}}
        for name, engine in engines.items():
            entry["supported_ops"][name] = float(engine.fraction_of_supported_ops)
            reference = "model_reference" if name == "model" else "dense_reference"
            expected = [data[f"{reference}/{o}"] for o in job["outputs"]]
            entry["max_abs_diff"][name] = _max_diff(engine.run(inputs), expected)
        for _ in range(int(job["warmup"])):
            for engine in engines.values():
                engine.run(inputs)
        samples = {name: [] for name in engines}
        start = time.perf_counter()
        while len(samples["model"]) < int(job["repeats"]) or time.perf_counter() - start < float(job["min_time_s"]):
            for name, engine in engines.items():
                samples[name].append(_timed(engine, inputs))
        entry["samples_ms"] = {k: [round(v, 4) for v in s] for k, s in samples.items()}
        entry["median_ms"] = {k: statistics.median(s) for k, s in samples.items()}
        out["batches"][bs] = entry
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(json.dumps({"error": "usage: deepsparse_worker.py JOB.json"}))
        return 2
    if os.environ.get("NM_DISABLE_ANALYTICS") != "1":
        print(json.dumps({"error": "NM_DISABLE_ANALYTICS=1 is not set: DeepSparse would send usage analytics"}))
        return 1
    try:
        result = measure(json.loads(Path(argv[0]).read_text()))
    except Exception as exc:  # noqa: BLE001 -- reported to the measure job, which records it
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
