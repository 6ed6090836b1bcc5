"""Metrics on known inputs, so a library upgrade cannot silently change evaluation."""

import pytest

from prunebench.data.metrics import load_metric, normalize_answer


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


# ----- GLUE metrics of the other tasks: hand-computed values --------------------------------------------


def test_matthews_on_a_hand_computed_confusion_matrix():
    # tp=6, fp=2, fn=1, tn=3: (6*3 - 2*1) / sqrt((6+2)(6+1)(3+2)(3+1)) = 16 / sqrt(1120)
    preds = [1] * 6 + [1] * 2 + [0] * 1 + [0] * 3
    refs = [1] * 6 + [0] * 2 + [1] * 1 + [0] * 3
    out = load_metric("matthews").compute(predictions=preds, references=refs)
    assert out["mcc"] == pytest.approx(16 / 1120**0.5, abs=1e-12)
    assert out["accuracy"] == pytest.approx(9 / 12)


def test_matthews_extremes_and_undefined_case():
    m = load_metric("matthews")
    assert m.compute(predictions=[1, 0, 1, 0], references=[1, 0, 1, 0])["mcc"] == pytest.approx(1.0)
    assert m.compute(predictions=[0, 1, 0, 1], references=[1, 0, 1, 0])["mcc"] == pytest.approx(-1.0)
    # one predicted class only: a zero margin, the coefficient is undefined and reported as 0
    assert m.compute(predictions=[1, 1, 1, 1], references=[1, 0, 1, 0])["mcc"] == 0.0
    with pytest.raises(ValueError, match="binary"):
        m.compute(predictions=[2, 0], references=[1, 0])


def test_pearson_and_spearman_on_lines_and_known_values():
    m = load_metric("pearson_spearman")
    x = [0.0, 1.0, 2.0, 3.5, 5.0]
    line = m.compute(predictions=[2 * v + 1 for v in x], references=x)
    assert line["pearson"] == pytest.approx(1.0, abs=1e-12) and line["spearman"] == pytest.approx(1.0, abs=1e-12)
    falling = m.compute(predictions=[-3 * v for v in x], references=x)
    assert falling["pearson"] == pytest.approx(-1.0, abs=1e-12) and falling["spearman"] == pytest.approx(
        -1.0, abs=1e-12
    )
    # a monotone curve: Spearman 1, Pearson below 1
    cubic = m.compute(predictions=[v**3 for v in x], references=x)
    assert cubic["spearman"] == pytest.approx(1.0) and cubic["pearson"] < 0.99
    # x = 1,2,3,4 and y = 1,3,2,4: deviations (-1.5,-.5,.5,1.5), (-1.5,.5,-.5,1.5): sxy = 4, sxx = syy = 5 -> 0.8
    out = m.compute(predictions=[1, 3, 2, 4], references=[1, 2, 3, 4])
    assert out["pearson"] == pytest.approx(0.8) and out["spearman"] == pytest.approx(0.8)
    # ties get the average rank: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    tied = m.compute(predictions=[1, 2, 2, 3], references=[1, 2, 3, 4])
    assert tied["spearman"] == pytest.approx(3 / 10**0.5, abs=1e-12)


def test_correlation_of_a_constant_prediction_is_zero():
    out = load_metric("pearson_spearman").compute(predictions=[0.1, 0.1, 0.1], references=[1.0, 2.0, 4.0])
    assert out == {"pearson": 0.0, "spearman": 0.0}


def test_average_ranks_by_hand():
    from prunebench.data.metric_kernels import average_ranks

    assert average_ranks([3.0, 1.0, 2.0, 2.0, 5.0]).tolist() == [4.0, 1.0, 2.5, 2.5, 5.0]
    assert average_ranks([[1.0, 1.0, 1.0], [3.0, 2.0, 1.0]]).tolist() == [[2.0, 2.0, 2.0], [3.0, 2.0, 1.0]]


def test_metric_meta_gives_the_range_of_correlations():
    from prunebench.data.metrics import METRIC_META

    assert METRIC_META["mcc"].value_range == (-1.0, 1.0) and METRIC_META["pearson"].higher_is_better
    assert METRIC_META["accuracy"].value_range == (0.0, 1.0)
