"""Peak memory during inference: weights + activations + allocator overhead, in MiB.

CPU tensors are invisible to ``tracemalloc`` and torch keeps no CPU allocation peak, so the
kernel's peak-RSS counter is used: reset it (``/proc/self/clear_refs``, Linux; elsewhere the
lifetime peak ``ru_maxrss`` is used), load the saved checkpoint, run one forward pass at the
measurement batch size and sequence length, and report peak RSS minus the RSS before loading.

It must run first in a fresh process, before any model is loaded: the measure job
(``prunebench measure``) calls ``peak_inference_memory_mib`` before anything else, and
``python -m prunebench.measure.memory MODEL_DIR --batch-size 32 --seq-len 64`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import resource


def _status_mib(field: str) -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS; False where the OS does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    hwm = _status_mib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_inference_memory_mib(model_dir: str, batch_size: int, seq_len: int, threads: int) -> float:
    """Peak RSS growth (MiB) while loading ``model_dir`` and running one forward pass.

    Call it in a fresh process before any other model is loaded (see the module docstring).
    """
    import torch
    from transformers import BertForQuestionAnswering, BertForSequenceClassification  # noqa: F401

    from prunebench.checkpoints.store import load_model

    # the imports above are done before the baseline: code is not the model's memory
    torch.set_num_threads(threads)
    before = _status_mib("VmRSS") if _reset_peak() else _peak_rss_mib()
    model = load_model(model_dir).eval()
    ids = torch.full((batch_size, seq_len), 1000, dtype=torch.long)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    peak = _peak_rss_mib() - before
    del model
    return peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    print(
        json.dumps({"peak_mib": peak_inference_memory_mib(args.model_dir, args.batch_size, args.seq_len, args.threads)})
    )


if __name__ == "__main__":
    main()
