"""fp32 vs the two int8 kernels of ``Int8DynamicLinear`` (engine, ``_int_mm``), measured in one run.

Not a test: a benchmark script to run by hand on the machine whose numbers you want
(``torch.utils.benchmark``; the int8 kernels are described in ``prunebench/quantization/int8.py``). Prints

- the CPU class (``torch.backends.cpu.get_cpu_capability()``, plus the bf16/AMX/VNNI extensions),
  the quantized engine, whether ``torch._int_mm`` is exact here, threads and the load average
  (a busy machine makes every number noisy: the timings of one round are taken in turn, so a
  load change hits all three alike, and the median over ``--rounds`` rounds is reported);
- the encoder matrix products of the embedded MiniLM (in x out: 384x1536, 1536x384, 384x384) at
  ``batch * seq_len`` rows for each batch size: fp32 ``nn.Linear`` vs ``Int8DynamicLinear`` with
  ``kernel="engine"`` and ``kernel="int_mm"``, median ms and speed-up over fp32;
- the whole model (``--model``: ``embedded`` MiniLM-L6-H384 or ``tiny-random``) at each batch size,
  ``--seq-len`` tokens: fp32 vs int8 engine vs int8 ``_int_mm``, and how far each int8 model's logits
  are from fp32's (max abs difference over the logit scale).

``--emulate-avx2`` re-runs the script with the CPU capped to AVX2 in every library that
dispatches on it (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2``): the kernels an AVX2-only CPU runs, on this CPU's cores, caches and
clock -- an approximation of an AVX2 machine, not a measurement of one.

    python benchmarks/int8_kernels.py                      # embedded MiniLM, batch 1 and 32, seq 64
    python benchmarks/int8_kernels.py --threads 1 --rounds 5 --json out.json
    python benchmarks/int8_kernels.py --emulate-avx2
    python benchmarks/int8_kernels.py --threads 1 --clock process   # a busy machine: CPU time, not wall time
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AVX2_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
#: The embedded MiniLM's encoder matrices as (in_features, out_features).
SHAPES = [(384, 1536), (1536, 384), (384, 384)]
VARIANTS = ("fp32", "engine", "int_mm")


def machine() -> dict:
    import torch

    from prunebench.quantization.int8 import engine_unavailable, int_mm_is_exact
    from prunebench.training.trainer import cpu_capability

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_class": cpu_capability(),
        "avx512_vnni": bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)()),
        "capped_to_avx2": os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS") == "AVX2",
        "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
        "engine_unavailable": engine_unavailable("cpu"),
        "int_mm_exact": int_mm_is_exact("cpu"),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def time_in_rounds(fns: dict, rounds: int, min_run_time: float, clock: str = "wall") -> dict[str, float]:
    """Median over ``rounds`` of each callable's ``blocked_autorange`` median (ms), taken in turn,
    on the ``clock`` (``wall``: elapsed time; ``process``: CPU time of this process, all threads)."""
    from torch.utils import benchmark

    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            m = benchmark.Timer(stmt="fn()", globals={"fn": fn}, timer=CLOCKS[clock]).blocked_autorange(
                min_run_time=min_run_time
            )
            samples[name].append(m.median * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def bench_layers(batch_sizes, seq_len, rounds, min_run_time, clock="wall") -> list[dict]:
    import torch
    from torch import nn

    from prunebench.quantization.int8 import Int8DynamicLinear

    out = []
    g = torch.Generator().manual_seed(0)
    for k, n in SHAPES:
        lin = nn.Linear(k, n).eval()
        with torch.no_grad():
            lin.weight.normal_(0, 0.05, generator=g)
        q = {kern: Int8DynamicLinear.from_float(lin, kernel=kern) for kern in ("engine", "int_mm")}
        for bs in batch_sizes:
            x = torch.randn(bs * seq_len, k, generator=g)
            with torch.inference_mode():
                fns = {"fp32": lambda: lin(x), "engine": lambda: q["engine"](x), "int_mm": lambda: q["int_mm"](x)}
                ms = time_in_rounds(fns, rounds, min_run_time, clock)
            out.append(
                {
                    "shape": f"{k}x{n}",
                    "rows": bs * seq_len,
                    "batch": bs,
                    "ms": ms,
                    "speedup": {v: ms["fp32"] / ms[v] for v in ("engine", "int_mm")},
                }
            )
    return out


def bench_model(model_name, batch_sizes, seq_len, rounds, min_run_time, clock="wall") -> list[dict]:
    import copy

    import torch

    from prunebench.checkpoints.pretrained import load_pretrained
    from prunebench.quantization.int8 import kernel_report, quantize_encoder_linears

    fp32 = load_pretrained(model_name, num_labels=2, seed=0, label_names=("negative", "positive")).eval()
    q = {kern: quantize_encoder_linears(copy.deepcopy(fp32), kernel=kern) for kern in ("engine", "int_mm")}
    models = {"fp32": fp32, **q}
    out = []
    g = torch.Generator().manual_seed(1)
    for bs in batch_sizes:
        ids = torch.randint(1000, fp32.config.vocab_size, (bs, seq_len), generator=g)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        with torch.inference_mode():
            hidden = {k: m.base_model(**batch).last_hidden_state for k, m in models.items()}
            fns = {k: (lambda m=m: m(**batch)) for k, m in models.items()}
            ms = time_in_rounds(fns, rounds, min_run_time, clock)
        ref = hidden["fp32"]
        out.append(
            {
                "model": model_name,
                "batch": bs,
                "seq_len": seq_len,
                "ms": ms,
                "speedup": {v: ms["fp32"] / ms[v] for v in ("engine", "int_mm")},
                "encoder_output_mean_rel_diff": {
                    v: float((hidden[v] - ref).abs().mean() / ref.abs().mean()) for v in ("engine", "int_mm")
                },
                "kernels": {v: kernel_report(q[v])["used"] for v in ("engine", "int_mm")},
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="embedded (MiniLM-L6-H384) or tiny-random")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (measure jobs use threads.measure: 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per blocked_autorange")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time (as the measure job); process: CPU time of this process -- on a busy "
        "machine with --threads 1 it leaves out the time other processes ran, not their cache effects",
    )
    parser.add_argument("--skip-model", action="store_true", help="only the matrix products")
    parser.add_argument("--skip-layers", action="store_true", help="only the whole model")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--emulate-avx2", action="store_true", help="re-run with the CPU capped to AVX2 (docstring)")
    args = parser.parse_args(argv)
    if args.emulate_avx2 and os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS") != "AVX2":
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--emulate-avx2"]
        return subprocess.call([sys.executable, __file__, *rest], env={**os.environ, **AVX2_ENV})

    import torch

    sys.stdout.reconfigure(line_buffering=True)  # progress shows when the output goes to a file
    torch.set_num_threads(args.threads)
    info = machine()
    print(
        f"CPU class: {info['cpu_capability']} ({info['cpu_class']}, AVX512-VNNI: {info['avx512_vnni']})"
        + (
            "  [capped to AVX2 by environment variables: emulated, see --emulate-avx2]"
            if info["capped_to_avx2"]
            else ""
        )
    )
    print(
        f"torch {info['torch']}, quantized engine {info['quantized_engine']!r}"
        f"{' (unavailable: ' + info['engine_unavailable'] + ')' if info['engine_unavailable'] else ''}, "
        f"torch._int_mm exact here: {info['int_mm_exact']}, threads {info['threads']}, "
        f"load average {' '.join(f'{v:.2f}' for v in info['load_average'])}"
    )
    print(
        f"median of {args.rounds} rounds, each variant timed in turn (blocked_autorange, {args.min_run_time} s, "
        f"{args.clock} clock); speed-up = fp32 ms / int8 ms"
    )
    layers = (
        []
        if args.skip_layers
        else bench_layers(args.batch_sizes, args.seq_len, args.rounds, args.min_run_time, args.clock)
    )
    if layers:
        print("\nencoder matrix products (in x out, rows = batch x seq_len)")
        print(
            f"{'shape':>10} {'rows':>6} {'fp32 ms':>9} {'engine ms':>10} {'int_mm ms':>10} {'engine x':>9} "
            f"{'int_mm x':>9}"
        )
    for r in layers:
        print(
            f"{r['shape']:>10} {r['rows']:>6} {r['ms']['fp32']:>9.3f} {r['ms']['engine']:>10.3f} "
            f"{r['ms']['int_mm']:>10.3f} {r['speedup']['engine']:>9.2f} {r['speedup']['int_mm']:>9.2f}"
        )
    model = []
    if not args.skip_model:
        model = bench_model(args.model, args.batch_sizes, args.seq_len, args.rounds, args.min_run_time, args.clock)
        print(f"\nwhole model: {args.model}, seq_len {args.seq_len}")
        print(
            f"{'batch':>6} {'fp32 ms':>9} {'engine ms':>10} {'int_mm ms':>10} {'engine x':>9} {'int_mm x':>9} "
            f"{'engine diff':>12} {'int_mm diff':>12}"
        )
        for r in model:
            print(
                f"{r['batch']:>6} {r['ms']['fp32']:>9.2f} {r['ms']['engine']:>10.2f} {r['ms']['int_mm']:>10.2f} "
                f"{r['speedup']['engine']:>9.2f} {r['speedup']['int_mm']:>9.2f} "
                f"{r['encoder_output_mean_rel_diff']['engine']:>12.4f} "
                f"{r['encoder_output_mean_rel_diff']['int_mm']:>12.4f}"
            )
        print("(diff: mean |int8 - fp32| / mean |fp32| of the encoder's last hidden state, random token ids)")
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "clock": args.clock, "layers": layers, "model": model}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
