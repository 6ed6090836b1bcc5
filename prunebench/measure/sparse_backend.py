"""Sparse-kernel inference on the CPU: run a pruned model's encoder matrices as CSR products.

Backend: PyTorch's compressed-sparse-row tensors (``Tensor.to_sparse_csr``) multiplied with
``torch.addmm(bias, W_csr, X^T)``, which on x86 CPU builds of PyTorch (built with MKL, as the
pip wheels are) runs MKL's sparse BLAS. Each encoder ``nn.Linear`` whose weight is at least
``min_sparsity`` zeros becomes a ``CSRLinear`` computing y = (W_csr · x^T)^T + b; denser
matrices stay dense, since there the dense GEMM is faster. Everything else (attention
products, LayerNorm, GELU, embeddings) is unchanged, so only the share of time spent in the
six encoder matrices can shrink.

Why CSR and not BSR: the methods here prune single weights, so at 90% sparsity almost every
16x16 block still holds a non-zero and block-sparse kernels do dense work on mostly-zero
blocks (measured: slower than dense at every sparsity tried). Why ``W · X^T`` and not
``X · W^T`` with a sparse right operand: the latter has no fast CPU kernel (measured: several
times slower than dense).

Where it pays off: only at high sparsity. Measured with ``python -m prunebench.measure.sparse_backend``
(median ms of one product, 2,048 tokens = batch 32 x 64, 2 threads, random unstructured masks,
PyTorch 2.11 on an otherwise idle Intel Xeon; CSR time / dense time, < 1 is faster):

    sparsity      0.5    0.7    0.9    0.95   0.97
    384x384       5.2    3.8    1.7    2.0    1.4
    1536x384      4.4    2.7    0.87   0.47   0.36
    384x1536      5.8    4.1    1.7    1.0    0.80

and for the whole MiniLM (batch 32 x 64, matrix-local magnitude masks, every encoder matrix
converted): 4.4x slower than dense at 50% sparsity, 2.7x at 70%, 1.4x at 90%, 1.3x *faster*
at 95%. Hence ``DEFAULT_MIN_SPARSITY = 0.95``: below it a matrix stays dense, so the backend is
never much slower than dense kernels, and the whole model gains only when most matrices are
at least 95% zeros. Attention products, LayerNorm and GELU are not sparse and bound the gain.
"""

from __future__ import annotations

import copy
import time
import warnings

import torch
from torch import nn

from prunebench.measure.latency import compare_latency, summarize
from prunebench.structure.budget import prunable_linears

BACKEND = "torch-csr-cpu (MKL sparse BLAS via torch.addmm)"
#: Default: matrices with fewer zeros than this stay dense (CSR is slower there; see above).
DEFAULT_MIN_SPARSITY = 0.95


class CSRLinear(nn.Module):
    """Inference-only replacement of ``nn.Linear`` whose weight is stored in CSR format."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach()
        self.nnz = int(torch.count_nonzero(weight))
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            csr = weight.to_sparse_csr()
        self.register_buffer("weight_csr", csr, persistent=False)
        bias = linear.bias.detach() if linear.bias is not None else torch.zeros(self.out_features, dtype=weight.dtype)
        # addmm adds a broadcast (out, 1) column to the (out, tokens) product.
        self.register_buffer("bias_column", bias.reshape(-1, 1).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, self.in_features)
        out = torch.addmm(self.bias_column, self.weight_csr, tokens.t())
        return out.t().reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        density = self.nnz / (self.in_features * self.out_features)
        return f"in_features={self.in_features}, out_features={self.out_features}, density={density:.3f}"


def to_sparse_backend(model: nn.Module, min_sparsity: float = DEFAULT_MIN_SPARSITY) -> nn.Module:
    """A deep copy of ``model`` (in eval mode, on the CPU) whose encoder ``nn.Linear`` modules
    with at least ``min_sparsity`` zeros compute with CSR kernels (``CSRLinear``).

    ``min_sparsity=0`` converts every encoder matrix. The input model is not changed.
    """
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity must lie in [0, 1], got {min_sparsity}")
    sparse = copy.deepcopy(model).cpu().eval()
    for name, linear in prunable_linears(sparse).items():
        zeros = 1.0 - int(torch.count_nonzero(linear.weight)) / linear.weight.numel()
        if zeros + 1e-9 >= min_sparsity:
            parent_name, _, child = name.rpartition(".")
            setattr(sparse.get_submodule(parent_name), child, CSRLinear(linear))
    return sparse


def sparse_matrix_count(model: nn.Module) -> int:
    """Number of ``CSRLinear`` modules in ``model``."""
    return sum(isinstance(m, CSRLinear) for m in model.modules())


def sparse_latency(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    threads: int,
    warmup: int,
    repeats: int,
    min_sparsity: float = DEFAULT_MIN_SPARSITY,
) -> dict:
    """Latency of ``model`` on ``batch`` with the CSR backend (``to_sparse_backend``).

    Returns ``prunebench.measure.latency``'s summary (``median_ms``, ``iqr_ms``,
    ``samples_ms``) plus ``backend``, ``min_sparsity`` and ``sparse_matrices`` (how many
    encoder matrices ran sparse; 0 means the timing is of dense kernels only).
    """
    sparse = to_sparse_backend(model, min_sparsity)
    timing = compare_latency({"sparse": sparse}, batch, threads, warmup, repeats)["sparse"]
    return {**timing, "backend": BACKEND, "min_sparsity": min_sparsity, "sparse_matrices": sparse_matrix_count(sparse)}


# ----- microbenchmark: python -m prunebench.measure.sparse_backend ------------------------


def _median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return summarize(samples)["median_ms"]


@torch.inference_mode()
def benchmark(
    shapes=((384, 384), (1536, 384), (384, 1536)),
    sparsities=(0.5, 0.7, 0.9, 0.95, 0.97),
    tokens: int = 32 * 64,
    threads: int = 2,
    warmup: int = 3,
    repeats: int = 20,
    seed: int = 0,
) -> list[dict]:
    """Median ms of dense ``F.linear`` vs ``CSRLinear`` (and 16x16 BSR) on random unstructured masks."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    try:
        for out_features, in_features in shapes:
            x = torch.randn(tokens, in_features, generator=generator)
            for sparsity in sparsities:
                linear = nn.Linear(in_features, out_features)
                with torch.no_grad():
                    linear.weight.mul_(torch.rand(linear.weight.shape, generator=generator) >= sparsity)
                csr = CSRLinear(linear)
                bsr = linear.weight.detach().to_sparse_bsr((16, 16))
                bias = linear.bias.detach().reshape(-1, 1)
                dense_ms = _median_ms(lambda: linear(x), warmup, repeats)
                csr_ms = _median_ms(lambda: csr(x), warmup, repeats)
                bsr_ms = _median_ms(lambda: torch.addmm(bias, bsr, x.t()), warmup, repeats)
                rows.append(
                    {
                        "shape": f"{out_features}x{in_features}",
                        "sparsity": sparsity,
                        "dense_ms": dense_ms,
                        "csr_ms": csr_ms,
                        "bsr16_ms": bsr_ms,
                        "csr_speedup": dense_ms / csr_ms,
                        "max_abs_err": float((csr(x) - linear(x)).abs().max()),
                    }
                )
    finally:
        torch.set_num_threads(previous)
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="dense vs CSR (vs BSR) matrix products on MiniLM-sized matrices")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32 * 64, help="rows of the input (batch x sequence length)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {args.threads} threads, {args.tokens} tokens; median ms")
    print(f"{'shape':>9} {'sparsity':>8} {'dense':>8} {'csr':>8} {'bsr16':>8} {'csr speed-up':>12} {'max err':>9}")
    for r in benchmark(tokens=args.tokens, threads=args.threads, repeats=args.repeats):
        print(
            f"{r['shape']:>9} {r['sparsity']:>8.2f} {r['dense_ms']:>8.2f} {r['csr_ms']:>8.2f} {r['bsr16_ms']:>8.2f} "
            f"{r['csr_speedup']:>11.2f}x {r['max_abs_err']:>9.1e}"
        )
