"""Metrics on known inputs, so a library upgrade cannot silently change evaluation."""

import pytest

from prunebench.metrics import load_metric, normalize_answer


def test_accuracy_known_values():
    assert load_metric("accuracy").compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {"accuracy": 0.75}


def test_accuracy_f1_known_values():
    out = load_metric("accuracy_f1").compute(predictions=[1, 1, 0, 0, 1], references=[1, 0, 1, 0, 1])
    # tp=2, fp=1, fn=1 -> F1 = 4 / 6
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["f1"] == pytest.approx(2 / 3)


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    out = load_metric("squad").compute(
        predictions=["the Eiffel Tower", "Paris France", "nothing"],
        references=[["Eiffel Tower"], ["Paris", "in Paris, France"], ["London"]],
    )
    assert out["exact_match"] == pytest.approx(1 / 3)
    # 1.0, max(F1 vs "paris" = 2/3, vs "in paris france" = 0.8), 0.0
    assert out["f1"] == pytest.approx((1.0 + 0.8 + 0.0) / 3)


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("bleu")
