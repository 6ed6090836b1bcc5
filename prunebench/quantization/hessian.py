"""Top Hessian eigenvalue of the loss w.r.t. a block of parameters, by power iteration on
Hessian-vector products: the sensitivity measure of Q-BERT (Shen et al. 2020, arXiv 1909.05840,
``methods/qbert.py``).

Hessian-vector product (Pearlmutter 1994), by double back-propagation: with ``g = dL/dw`` computed
with ``create_graph=True``, ``H v = d(g . v)/dw`` -- one extra backward pass, the Hessian is never
formed. The block ``w`` is a list of tensors (e.g. the six weight matrices of one encoder layer)
treated as one flat vector: the Hessian is the diagonal block of the full Hessian for those tensors.

Power iteration: ``v_0`` random (standard normal from a seeded ``torch.Generator``, normalised);
``lambda_k = v_k . H v_k`` (Rayleigh quotient), ``v_{k+1} = H v_k / ||H v_k||``; it stops after
``max_iter`` products or when ``|lambda_k - lambda_{k-1}| <= tol * |lambda_{k-1}|`` (the same group's
PyHessian stops at a relative change below 1e-3, at most 100 iterations; ``../shared/PAPERS-2.md``
section 1, tag V for PyHessian). The eigenvalue it converges to is the one of largest *magnitude*
(it may be negative where the loss is not locally convex; Q-BERT therefore takes ``|mean|``).

Q-BERT's sensitivity of encoder layer i (PAPERS-2.md section 1, tag U: recalled, the body was not
readable): the top eigenvalue lambda_i is computed on several random subsets of the training data
(recalled: 10% of it), and ``Omega_i = |mean(lambda_i)| + std(lambda_i)``. ``layer_eigenvalues``
computes lambda_i once per calibration batch (each batch is one subset) and returns the values per
batch, their mean, std (population std, ``ddof=0``; one batch gives std 0) and Omega.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class EigenResult:
    """Top eigenvalue found by ``top_eigenvalue``, with how the iteration went."""

    eigenvalue: float
    iterations: int
    converged: bool
    history: list[float] = field(default_factory=list)


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x.double() * y.double()).sum() for x, y in zip(a, b))


def _normalize(v: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    norm = math.sqrt(float(_dot(v, v)))
    if norm == 0.0 or not math.isfinite(norm):
        raise FloatingPointError(f"power iteration: vector norm is {norm}")
    return [x / norm for x in v]


def random_unit_vector(params: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A standard-normal vector shaped like ``params`` (drawn on the CPU from ``generator``), unit norm."""
    v = [
        torch.randn(p.shape, generator=generator, dtype=torch.float32).to(device=p.device, dtype=p.dtype)
        for p in params
    ]
    return _normalize(v)


def top_eigenvalue(
    hvp: Callable[[list[torch.Tensor]], list[torch.Tensor]],
    params: Sequence[torch.Tensor],
    max_iter: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
) -> EigenResult:
    """Power iteration with the Hessian-vector product ``hvp(v) -> H v`` (lists shaped like ``params``).

    Returns the Rayleigh quotient of the last iterate; ``converged`` when the relative change of the
    eigenvalue estimate fell to ``tol`` or below before ``max_iter`` products.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    generator = torch.Generator().manual_seed(int(seed))
    v = random_unit_vector(params, generator)
    history: list[float] = []
    previous = None
    for k in range(1, max_iter + 1):
        hv = [h.detach() for h in hvp(v)]
        eig = float(_dot(v, hv))
        history.append(eig)
        if not math.isfinite(eig):
            raise FloatingPointError(f"power iteration: eigenvalue estimate {eig} at iteration {k}")
        if previous is not None and abs(eig - previous) <= tol * abs(previous):
            return EigenResult(eig, k, True, history)
        previous = eig
        if float(_dot(hv, hv)) == 0.0:  # H v = 0: v is in the null space, eigenvalue 0 exactly
            return EigenResult(0.0, k, True, history)
        v = _normalize(hv)
    return EigenResult(history[-1], max_iter, False, history)


def loss_hvp(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """``v -> H v`` for the Hessian of ``loss`` w.r.t. ``params`` (double back-propagation).

    The gradient graph is built once (``create_graph=True``) and reused for every product.
    """
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        gv = _dot(grads, v)
        return list(torch.autograd.grad(gv, params, retain_graph=True))

    return hvp


def _model_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    out = model(**batch)
    loss = out.loss if hasattr(out, "loss") else out[0]
    if loss is None:
        raise ValueError("the model returned no loss: the calibration batches need labels")
    return loss


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Run ``model`` with transformers' eager attention inside the block: PyTorch's fused CPU attention
    (``sdpa``, the default) has no double backward ("derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"). The same
    function, computed without fusion; the previous implementation is restored afterwards."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = before not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


def layer_eigenvalues(
    model: nn.Module,
    blocks: dict[str, list[nn.Parameter]],
    batches: Iterable[dict],
    max_iter: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
    loss_fn: Callable[[nn.Module, dict], torch.Tensor] = _model_loss,
) -> dict[str, dict]:
    """Top Hessian eigenvalue of each parameter block, per batch; mean, std and ``omega`` per block.

    ``blocks`` maps a name (e.g. ``"layer.3"``) to its parameters. For every batch the loss and its
    gradient graph are built once; then a power iteration per block runs on that batch's loss (seed
    ``seed + 1000 * batch + block index``). Dropout is off (eval mode) so each product is
    deterministic; the model's mode is restored. Attention runs eager (``eager_attention``).
    Returns, per block: ``per_batch`` (eigenvalues), ``mean``, ``std`` (ddof 0),
    ``omega = |mean| + std``, ``iterations`` and ``converged`` per batch.
    """
    names = list(blocks)
    if not names:
        raise ValueError("layer_eigenvalues: no parameter blocks")
    out = {n: {"per_batch": [], "iterations": [], "converged": []} for n in names}
    was_training = model.training
    model.eval()
    frozen = {}
    try:
        for name in names:  # the blocks need gradients even where fine-tuning freezes them
            for p in blocks[name]:
                if not p.requires_grad:
                    frozen[id(p)] = p
                    p.requires_grad_(True)
        n_batches = 0
        for b, batch in enumerate(batches):
            n_batches += 1
            with torch.enable_grad(), eager_attention(model):
                loss = loss_fn(model, batch)
                params = [p for n in names for p in blocks[n]]
                grads = torch.autograd.grad(loss, params, create_graph=True)
                start = 0
                for i, name in enumerate(names):
                    block = list(blocks[name])
                    g = grads[start : start + len(block)]
                    start += len(block)

                    def hvp(v, g=g, block=block):
                        return list(torch.autograd.grad(_dot(g, v), block, retain_graph=True))

                    res = top_eigenvalue(hvp, block, max_iter=max_iter, tol=tol, seed=seed + 1000 * b + i)
                    out[name]["per_batch"].append(res.eigenvalue)
                    out[name]["iterations"].append(res.iterations)
                    out[name]["converged"].append(res.converged)
                del grads, loss
        if n_batches == 0:
            raise ValueError("layer_eigenvalues: no calibration batches")
    finally:
        for p in frozen.values():
            p.requires_grad_(False)
        model.train(was_training)
    for name in names:
        values = torch.tensor(out[name]["per_batch"], dtype=torch.float64)
        mean, std = float(values.mean()), float(values.std(unbiased=False))
        out[name].update({"mean": mean, "std": std, "omega": abs(mean) + std})
    return out
