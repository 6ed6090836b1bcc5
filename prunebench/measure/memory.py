"""Peak memory during inference, measured in a fresh subprocess.

CPU tensors are invisible to ``tracemalloc`` and torch keeps no CPU allocation peak, so the
measurement runs in its own process: it imports everything it needs, resets the kernel's
peak-RSS counter (``/proc/self/clear_refs``, Linux; elsewhere the lifetime peak
``ru_maxrss`` is used), loads the saved checkpoint, runs one forward pass at the
measurement batch size and sequence length, and reports peak RSS minus the RSS before
loading: weights + activations + allocator overhead, in MiB.

Run as ``python -m prunebench.measure.memory MODEL_DIR --batch-size 32 --seq-len 64 --threads 2``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


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
    """Run the measurement subprocess on ``model_dir`` and return the peak growth in MiB."""
    cmd = [sys.executable, "-m", "prunebench.measure.memory", str(model_dir), "--batch-size", str(batch_size),
           "--seq-len", str(seq_len), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement of {model_dir} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    from prunebench.checkpoints import load_model

    from transformers import BertForSequenceClassification  # noqa: F401  (import cost is not the model's)

    torch.set_num_threads(args.threads)
    before = _status_mib("VmRSS") if _reset_peak() else _peak_rss_mib()
    model = load_model(args.model_dir).eval()
    ids = torch.full((args.batch_size, args.seq_len), 1000, dtype=torch.long)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    print(json.dumps({"peak_mib": _peak_rss_mib() - before}))


if __name__ == "__main__":
    main()
