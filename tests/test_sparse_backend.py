"""CSR sparse-kernel backend: same outputs as the dense masked model, only sparse enough
matrices converted, the input model untouched, latency summary shaped like latency.py's."""

import pytest
import torch
from torch import nn

import methods
from prunebench.measure.sparse_backend import CSRLinear, sparse_latency, sparse_matrix_count, to_sparse_backend
from prunebench.method.base import TrainingPlan
from prunebench.structure.budget import prunable_linears

ATOL = 1e-5  # CSR (MKL sparse) and dense GEMM sum in different orders


def _pruned(model, remaining):
    method = methods.build("magnitude_local", remaining)
    method.prepare(model, TrainingPlan(total_steps=10, seed=0))
    method._update_masks(remaining)
    return method.finalize(model).eval()


def _batch(tokenizer):
    return dict(
        tokenizer(["a fine film", "dull , long and loud"], padding="max_length", max_length=16, return_tensors="pt")
    )


def test_sparse_outputs_equal_dense_masked_outputs(tiny_model, tokenizer):
    model = _pruned(tiny_model, 0.1)
    sparse = to_sparse_backend(model, min_sparsity=0.0)
    assert sparse_matrix_count(sparse) == len(prunable_linears(model)) == 12
    assert all(isinstance(m, nn.Linear) and not isinstance(m, CSRLinear) for m in prunable_linears(model).values())
    batch = _batch(tokenizer)
    with torch.inference_mode():
        expected, got = model(**batch).logits, sparse(**batch).logits
        hidden_expected = model.bert(**batch).last_hidden_state
        hidden_got = sparse.bert(**batch).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)
    torch.testing.assert_close(hidden_got, hidden_expected, rtol=0, atol=ATOL)


def test_csr_linear_matches_linear_on_3d_input():
    linear = nn.Linear(24, 40)
    with torch.no_grad():
        linear.weight.mul_(torch.rand(linear.weight.shape) > 0.8)
    x = torch.randn(3, 7, 24)
    torch.testing.assert_close(CSRLinear(linear)(x), linear(x), rtol=0, atol=ATOL)


def test_only_sparse_enough_matrices_are_converted(tiny_model):
    model = _pruned(tiny_model, 0.5)
    assert sparse_matrix_count(to_sparse_backend(model, min_sparsity=0.9)) == 0
    assert sparse_matrix_count(to_sparse_backend(model, min_sparsity=0.5)) == 12
    with pytest.raises(ValueError, match="min_sparsity"):
        to_sparse_backend(model, min_sparsity=1.5)


def test_sparse_latency_summary(tiny_model, tokenizer):
    model = _pruned(tiny_model, 0.05)
    timing = sparse_latency(model, _batch(tokenizer), threads=1, warmup=1, repeats=3, min_sparsity=0.9)
    assert {"median_ms", "iqr_ms", "samples_ms"} <= set(timing)
    assert len(timing["samples_ms"]) == 3 and timing["median_ms"] > 0
    assert timing["sparse_matrices"] == 12
