"""Speed of the benchmark's training jobs, in one run: random vs. length-grouped batches, per-batch padding vs.
the pre-padded batches.

Prints (1 thread, as a default-profile training job runs):

- batching: the padded share of the token positions of a whole epoch's batches, and real (attention-mask)
  tokens/s of training steps, with random batches (padded to their longest example) and with the trainer's
  length-grouped batches (``finetune.batching``), at each precision, and the ratio;

- the optimizer step: real tokens/s with AdamW's per-tensor loop and with its fused kernel (the trainer's),
  and the old trainer (random batches, per-tensor loop) against the current one;

- job start-up: importing prunebench, loading the model, loading and tokenizing the task data;
- batch building: ``_collate`` (``dataset[indices]`` + ``tokenizer.pad``) vs. ``PrePadded.batch``
  (the split padded once into numpy arrays), per batch, and whether the tensors are identical;
- training throughput (examples/s) of the whole step with each collator, fp32 and bf16, and the ratio;
- same seed -> same model: the smoke budget trained with each collator gives identical weights.

    python scripts/train_throughput.py                     # embedded MiniLM on SST-2, batch 32
    python scripts/train_throughput.py --steps 10 --model tiny-random
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def import_time() -> float:
    """Seconds a fresh interpreter takes to import what a training job imports."""
    code = (
        "import time; t = time.perf_counter(); import prunebench.runner.jobs, methods; print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def collate_times(dataset, tokenizer, batch_size: int, n: int) -> dict:
    """Per-batch seconds of the two collators on the same index batches; checks equal tensors."""
    import torch

    from prunebench.training.trainer import PrePadded, _collate, length_grouped_batches

    padded, prepad_s = timed(PrePadded, dataset, tokenizer)
    stream = length_grouped_batches(dataset.with_format("arrow")["length"].to_pylist(), batch_size, seed=0)
    batches = [next(stream) for _ in range(n)]
    old, old_s = timed(lambda: [_collate(dataset, b, tokenizer) for b in batches])
    new, new_s = timed(lambda: [padded.batch(b) for b in batches])
    same = all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(old, new))
    return {"old_ms": 1e3 * old_s / n, "new_ms": 1e3 * new_s / n, "prepad_s": prepad_s, "identical": same}


def train_steps(
    model_name,
    spec,
    dataset,
    tokenizer,
    steps: int,
    batch_size: int,
    precision: str,
    old: bool = False,
    batching: str = "length_grouped",
    fused: bool = True,
):
    """``TrainResult`` of ``steps`` training steps of a fresh model (old = ``_collate`` batches; fused = the
    trainer's fused AdamW, else torch's per-tensor loop)."""
    from prunebench.checkpoints.pretrained import load_pretrained
    from prunebench.training import trainer

    model = load_pretrained(model_name, spec.num_labels, 0, spec.label_names, spec.kind)
    budget = trainer.FinetuneBudget(
        steps=steps, batch_size=batch_size, learning_rate=1e-4, precision=precision, batching=batching
    )
    original, devices = trainer._collator, trainer.FUSED_ADAMW_DEVICES
    if old:
        trainer._collator = lambda ds, tok: lambda idx: trainer._collate(ds, idx, tok)
    if not fused:
        trainer.FUSED_ADAMW_DEVICES = ()
    try:
        return trainer.train(model, dataset, tokenizer, budget, None, seed=0, log_every=10**9)
    finally:
        trainer._collator, trainer.FUSED_ADAMW_DEVICES = original, devices


def epoch_padding(lengths: list[int], batch_size: int, batching: str) -> float:
    """The padded share of the token positions of one epoch's batches, each padded to its longest example."""
    from prunebench.training.trainer import training_batches

    stream = training_batches(lengths, batch_size, 0, batching)
    real = computed = 0
    for _ in range(-(-len(lengths) // batch_size)):
        batch = [lengths[i] for i in next(stream)]
        real, computed = real + sum(batch), computed + max(batch) * len(batch)
    return 1.0 - real / computed


def same_model_check(dataset, tokenizer, spec) -> bool:
    """The smoke budget (tiny model, 30 steps) with each collator: identical weights."""
    import torch

    from prunebench.checkpoints.pretrained import load_pretrained
    from prunebench.training import trainer

    budget = trainer.FinetuneBudget(
        steps=30, batch_size=16, learning_rate=2e-3, freeze_embeddings=False, precision="fp32"
    )
    weights = []
    for old in (True, False):
        model = load_pretrained("tiny-random", spec.num_labels, 0, spec.label_names, spec.kind)
        original = trainer._collator
        if old:
            trainer._collator = lambda ds, tok: lambda idx: trainer._collate(ds, idx, tok)
        try:
            trainer.train(model, dataset, tokenizer, budget, None, seed=0, log_every=10**9)
        finally:
            trainer._collator = original
        weights.append(model.state_dict())
    return all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model to time (default: the default profile's)")
    p.add_argument("--train", default=str(REPO / "../shared/data/sst2/train.tsv"), help="SST-2 training TSV")
    p.add_argument("--eval", default=str(REPO / "../shared/data/sst2/dev.tsv"), help="SST-2 dev TSV")
    p.add_argument("--steps", type=int, default=15, help="timed training steps per variant")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size")
    p.add_argument("--max-seq-len", type=int, default=128, help="truncation length")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="precisions to time")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from prunebench.checkpoints.pretrained import load_pretrained, load_tokenizer
    from prunebench.data.loading import DataConfig, load_task_data
    from prunebench.data.tasks import get_task
    from prunebench.training.trainer import cpu_capability, resolve_precision, tokenize

    spec = get_task("sst2")
    print(
        f"CPU capability: {cpu_capability()}; precision 'auto' resolves to "
        f"{resolve_precision('auto', torch.device('cpu'))}; 1 thread"
    )
    print("\n== job start-up ==")
    print(f"import prunebench.runner.jobs + methods (fresh interpreter): {import_time():.2f} s")
    tokenizer, t_tok = timed(load_tokenizer, args.model)
    _, t_model = timed(load_pretrained, args.model, spec.num_labels, 0, spec.label_names, spec.kind)
    data, t_data = timed(
        load_task_data, spec, DataConfig.from_dict({"source": "local", "train": args.train, "eval": args.eval})
    )
    train_ds, t_tokenize = timed(tokenize, data["train"], tokenizer, spec.text_fields, args.max_seq_len)
    print(
        f"load tokenizer {t_tok:.2f} s, load model {t_model:.2f} s, load data {t_data:.2f} s, "
        f"tokenize {len(train_ds)} training examples {t_tokenize:.2f} s"
    )

    print("\n== batch building (per batch) ==")
    c = collate_times(train_ds, tokenizer, args.batch_size, 200)
    print(
        f"_collate (dataset[idx] + tokenizer.pad): {c['old_ms']:.2f} ms; PrePadded.batch: {c['new_ms']:.3f} ms "
        f"(ratio {c['old_ms'] / c['new_ms']:.0f}x; padding the split once: {c['prepad_s']:.2f} s); "
        f"identical tensors: {c['identical']}"
    )

    lengths = train_ds.with_format("arrow")["length"].to_pylist()
    print(
        f"\n== batching: random vs. length-grouped, {args.model}, batch {args.batch_size}, {args.steps} steps, "
        f"{len(lengths)} training examples (mean {sum(lengths) / len(lengths):.1f} tokens) =="
    )
    for batching in ("random", "length_grouped"):
        padding = epoch_padding(lengths, args.batch_size, batching)
        print(f"{batching}: padding is {100 * padding:.1f}% of an epoch's token positions")
    for precision in args.precisions:
        runs = {
            b: train_steps(args.model, spec, train_ds, tokenizer, args.steps, args.batch_size, precision, batching=b)
            for b in ("random", "length_grouped")
        }
        rnd, grp = runs["random"], runs["length_grouped"]
        print(
            f"{precision}: random {rnd.tokens_per_s:.0f} real tokens/s ({100 * rnd.padded_fraction:.1f}% padding), "
            f"length-grouped {grp.tokens_per_s:.0f} real tokens/s ({100 * grp.padded_fraction:.1f}% padding), "
            f"ratio {grp.tokens_per_s / rnd.tokens_per_s:.2f}x"
        )

    print(
        f"\n== the optimizer step: AdamW's per-tensor loop vs. its fused kernel, {args.model}, batch "
        f"{args.batch_size}, {args.steps} steps, length-grouped batches; and both changes together =="
    )
    for precision in args.precisions:
        loop, fused, before = (
            train_steps(args.model, spec, train_ds, tokenizer, args.steps, args.batch_size, precision, **kw)
            for kw in ({"fused": False}, {}, {"fused": False, "batching": "random"})
        )
        print(
            f"{precision}: per-tensor loop {loop.tokens_per_s:.0f} real tokens/s, fused {fused.tokens_per_s:.0f} "
            f"(ratio {fused.tokens_per_s / loop.tokens_per_s:.2f}x); random batches + per-tensor loop "
            f"{before.tokens_per_s:.0f} -> length-grouped + fused {fused.tokens_per_s:.0f} "
            f"(ratio {fused.tokens_per_s / before.tokens_per_s:.2f}x)"
        )

    print(f"\n== training step, {args.model}, batch {args.batch_size}, {args.steps} steps: batch building ==")
    for precision in args.precisions:
        old = train_steps(args.model, spec, train_ds, tokenizer, args.steps, args.batch_size, precision, old=True)
        new = train_steps(args.model, spec, train_ds, tokenizer, args.steps, args.batch_size, precision)
        old, new = old.examples_per_s, new.examples_per_s
        print(f"{precision}: _collate {old:.1f} examples/s, pre-padded {new:.1f} examples/s, ratio {new / old:.3f}")

    print("\n== same seed, same model ==")
    small = tokenize(
        load_task_data(
            spec,
            DataConfig.from_dict(
                {"source": "local", "train": args.train, "eval": args.eval, "train_limit": 4000, "eval_limit": 64}
            ),
        )["train"],
        load_tokenizer("tiny-random"),
        spec.text_fields,
        64,
    )
    same = same_model_check(small, load_tokenizer("tiny-random"), spec)
    print(f"tiny model, 30 steps, _collate vs pre-padded batches: identical weights: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
