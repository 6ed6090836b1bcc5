"""Budget accounting: the remaining fraction is counted from the weights, not from a method."""

import pytest
import torch

from prunebench.structure.budget import (
    DENSE_SIZE_ATTR,
    BudgetError,
    check_budget,
    count_encoder_weights,
    dense_encoder_size,
    encoder_weights,
    remaining_fraction,
)


def test_dense_reference_matches_bert_formula(tiny_model):
    c = tiny_model.config
    expected = c.num_hidden_layers * (4 * c.hidden_size**2 + 2 * c.hidden_size * c.intermediate_size)
    assert dense_encoder_size(c) == expected
    # BERT-base: 84.9M encoder weights, as Sanh et al. 2020 count (3% = 2.6M, 10% = 8.5M)
    from transformers import BertConfig

    assert dense_encoder_size(BertConfig()) == 84_934_656


def test_only_encoder_matrices_count(tiny_model):
    names = encoder_weights(tiny_model)
    assert names and all("encoder.layer." in n for n in names)
    assert not any("embeddings" in n or "classifier" in n or "bias" in n or "LayerNorm" in n for n in names)
    assert remaining_fraction(tiny_model) == pytest.approx(1.0)


def test_zeros_set_by_hand_are_counted(tiny_model):
    weights = encoder_weights(tiny_model)
    total = sum(w.numel() for w in weights.values())
    first = next(iter(weights.values()))
    with torch.no_grad():
        first.view(-1)[:100] = 0.0
        tiny_model.bert.embeddings.word_embeddings.weight.zero_()  # excluded from the budget
        tiny_model.classifier.weight.zero_()
    count = count_encoder_weights(tiny_model)
    assert count.nonzero == total - 100
    assert count.remaining_fraction == pytest.approx((total - 100) / total)


def test_compacted_model_counts_against_recorded_dense_size(tiny_model):
    full = dense_encoder_size(tiny_model.config)
    setattr(tiny_model.config, DENSE_SIZE_ATTR, 2 * full)  # as if surgery had halved the model
    assert remaining_fraction(tiny_model) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "half", None])
def test_budget_outside_unit_interval_is_refused(bad):
    with pytest.raises(BudgetError, match="budget"):
        check_budget(bad)


def test_valid_budgets_pass():
    assert check_budget(1) == 1.0
    assert check_budget("0.3") == 0.3


def test_per_matrix_fraction_of_an_emptied_matrix_is_zero(tiny_model):
    from prunebench.structure.budget import per_matrix_remaining
    from prunebench.structure.surgery import remove_heads

    remove_heads(tiny_model, {0: list(range(tiny_model.config.num_attention_heads))})
    fractions = per_matrix_remaining(tiny_model)
    assert all(0.0 <= v <= 1.0 for v in fractions.values())
    assert any(v == 0.0 for v in fractions.values())
