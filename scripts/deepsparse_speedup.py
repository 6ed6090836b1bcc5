"""Does element-wise sparsity pay at inference? The dense and a 90%-sparse model on all three backends.

One run, one process: the default model (embedded MiniLM L6-H384), every encoder Linear pruned to
``--sparsity`` by per-matrix magnitude, real SST-2 dev sentences padded to ``--seq-len``, timed dense vs.
sparse in turn (the measure job's protocol and code: ``compare_latency``, ``OrtBackend``,
``DeepSparseBackend``) at each batch size, with the dense model timed against itself on each backend
(the control). Needs the DeepSparse environment (``make deepsparse-env``); without it that column says why.
``--int8`` adds the sparse model quantized to int8 (as the compound rows, ``methods/sparse_int8.py``), timed
against the same dense fp32 model: PyTorch's int8 kernel, ONNX Runtime's dynamic int8 graph and DeepSparse's
statically quantized graph (``deepsparse_backend.export_int8``).

    python scripts/deepsparse_speedup.py                       # 1 thread, batch 1 and 32, seq 64
    python scripts/deepsparse_speedup.py --threads 2 --batch-sizes 1 32
    python scripts/deepsparse_speedup.py --int8
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prune_per_matrix(model, sparsity: float):
    """A copy with every encoder Linear's smallest-magnitude weights zeroed, ``sparsity`` of each matrix."""
    import torch

    from prunebench.structure.budget import prunable_linears

    out = copy.deepcopy(model)
    with torch.no_grad():
        for module in prunable_linears(out).values():
            w = module.weight
            k = int(sparsity * w.numel())
            if k:
                threshold = w.abs().flatten().kthvalue(k).values
                w[w.abs() <= threshold] = 0.0
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--eval", default=str(REPO / "../shared/data/sst2/dev.tsv"), help="SST-2 dev TSV (sentences)")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--min-time-s", type=float, default=2.0)
    p.add_argument("--int8", action="store_true", help="also the sparse model quantized to int8 (sparse + int8)")
    args = p.parse_args(argv)

    import torch

    from prunebench.checkpoints.pretrained import load_pretrained, load_tokenizer
    from prunebench.data.loading import DataConfig, load_task_data
    from prunebench.data.tasks import get_task
    from prunebench.measure.deepsparse_backend import DeepSparseBackend
    from prunebench.measure.latency import compare_latency, fixed_length_batch
    from prunebench.measure.onnx_runtime import OrtBackend
    from prunebench.quantization.int8 import quantize_encoder_linears
    from prunebench.records.provenance import cpu_capability

    torch.set_num_threads(args.threads)
    spec = get_task("sst2")
    dense = load_pretrained(args.model, spec.num_labels, 0, spec.label_names).eval()
    models = {"sparse": prune_per_matrix(dense, args.sparsity).eval()}
    if args.int8:
        models["sparse + int8"] = quantize_encoder_linears(copy.deepcopy(models["sparse"])).eval()
    tokenizer = load_tokenizer(args.model)
    examples = load_task_data(spec, DataConfig.from_dict({"source": "local", "eval": args.eval}), eval_only=True)[
        "eval"
    ]
    batches = {
        bs: fixed_length_batch(examples, tokenizer, spec.text_fields, bs, args.seq_len) for bs in args.batch_sizes
    }
    print(
        f"CPU capability {cpu_capability()} (torch: {torch.backends.cpu.get_cpu_capability()}); {args.model}, "
        f"every encoder Linear {100 * args.sparsity:.0f}% sparse by magnitude; seq {args.seq_len}, "
        f"{args.threads} thread(s); dense vs. sparse timed in turn, control = dense vs. dense"
    )
    rows = {bs: {} for bs in args.batch_sizes}  # batch -> (model, engine) -> (dense ms, model ms, control)
    for label, model in models.items():
        for bs, batch in batches.items():
            t = compare_latency(
                {"model": model, "dense": dense, "control": dense},
                batch,
                args.threads,
                args.warmup,
                args.repeats,
                args.min_time_s,
            )
            rows[bs][(label, "PyTorch eager")] = (
                t["dense"]["median_ms"],
                t["model"]["median_ms"],
                t["dense"]["median_ms"] / t["control"]["median_ms"],
            )
        with tempfile.TemporaryDirectory() as tmp:
            ort = OrtBackend(args.threads).prepare(model, dense, Path(tmp) / "model", Path(tmp) / "dense", args.seq_len)
            for bs, batch in batches.items():
                t = ort.time_batch(bs, batch, args.warmup, args.repeats, args.min_time_s)
                if t is not None:
                    control = t["dense"]["median_ms"] / t["dense_control"]["median_ms"]
                    rows[bs][(label, "ONNX Runtime")] = (t["dense"]["median_ms"], t["model"]["median_ms"], control)
        engine = DeepSparseBackend(args.threads).measure(
            model, dense, batches, args.warmup, args.repeats, args.min_time_s
        )
        for key, timing in engine.details["latency"].items():
            med = timing["median_ms"]
            rows[int(key[1:])][(label, "DeepSparse")] = (
                med["dense"],
                med["model"],
                med["dense"] / med["dense_control"],
            )
        if engine.details["error"]:
            print(f"DeepSparse, {label}: {engine.details['error']}")
        else:
            ops = {k: v["model"] for k, v in engine.details["supported_ops"].items()}
            print(
                f"DeepSparse {engine.details['engine_version']}, {label}: CPU {engine.details['cpu']}, natively "
                f"supported ops {ops}"
                + (f"; int8 graph: {engine.details['int8']['quantizer']}" if engine.details["int8"] else "")
            )
    print(
        "\n| model | engine | batch | dense fp32 ms | model ms | speed-up | control (dense/dense) |"
        "\n|---|---|---|---|---|---|---|"
    )
    for bs, found in rows.items():
        for (label, name), (d, m, c) in found.items():
            print(f"| {label} | {name} | {bs} | {d:.1f} | {m:.1f} | {d / m:.2f}x | {c:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
