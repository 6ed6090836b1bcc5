"""Task metrics as ``evaluate`` modules.

``evaluate.load("accuracy")`` fetches the metric's script from the hub, which this benchmark
must not depend on at run time; the metrics are therefore defined here as ``evaluate.Metric``
subclasses (same interface: ``compute(predictions=..., references=...)``), and tested on
known inputs. Accuracy, F1 and the SQuAD scores are fractions in [0, 1]; Matthews (CoLA),
Pearson and Spearman (STS-B) are coefficients in [-1, 1], 0 where undefined (constant
predictions or references). Records store every task metric with the unit ``fraction`` (the
record schema's dimensionless unit); ``METRIC_META`` gives each metric's range.

GLUE metrics (Wang et al. 2019): CoLA Matthews correlation (``matthews``: ``mcc`` and
``accuracy``), MRPC/QQP F1 of the positive class and accuracy (``accuracy_f1``), STS-B Pearson
and Spearman correlation (``pearson_spearman``), accuracy elsewhere. The numeric kernels live in
``prunebench.data.metric_kernels`` so that the statistics recompute exactly the same function on resamples.

SQuAD: exact match and token F1 with the answer normalisation of the official SQuAD v1.1
evaluation (lower-case, strip punctuation, articles a/an/the and extra whitespace), the
maximum over the gold answers (Rajpurkar et al. 2016).
"""

from __future__ import annotations

import collections
import re
import string
from dataclasses import dataclass

import datasets
import evaluate

from prunebench.data.metric_kernels import matthews, pearson, spearman


@dataclass(frozen=True)
class MetricMeta:
    unit: str
    higher_is_better: bool
    value_range: tuple[float, float] = (0.0, 1.0)


#: Metadata that drives tables and Pareto fronts (no plotting code guesses a direction).
METRIC_META: dict[str, MetricMeta] = {
    "accuracy": MetricMeta("fraction", True),
    "f1": MetricMeta("fraction", True),
    "exact_match": MetricMeta("fraction", True),
    "mcc": MetricMeta("fraction", True, (-1.0, 1.0)),
    "pearson": MetricMeta("fraction", True, (-1.0, 1.0)),
    "spearman": MetricMeta("fraction", True, (-1.0, 1.0)),
}

_LABEL_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})
_VALUE_FEATURES = datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")})


class Accuracy(evaluate.Metric):
    """Fraction of predictions equal to the reference label."""

    def _info(self):
        return evaluate.MetricInfo(
            description=self.__doc__, citation="", inputs_description="class indices", features=_LABEL_FEATURES
        )

    def _compute(self, predictions, references):
        if not references:
            raise ValueError("accuracy of an empty evaluation set is undefined")
        return {"accuracy": sum(int(p == r) for p, r in zip(predictions, references)) / len(references)}


class AccuracyF1(Accuracy):
    """Accuracy and binary F1 of the positive class (label 1), as GLUE reports QQP/MRPC."""

    def _compute(self, predictions, references):
        out = super()._compute(predictions, references)
        tp = sum(1 for p, r in zip(predictions, references) if p == 1 and r == 1)
        fp = sum(1 for p, r in zip(predictions, references) if p == 1 and r != 1)
        fn = sum(1 for p, r in zip(predictions, references) if p != 1 and r == 1)
        out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        return out


class Matthews(Accuracy):
    """Matthews correlation of binary labels (label 1 positive), as GLUE reports CoLA, and accuracy."""

    def _compute(self, predictions, references):
        out = super()._compute(predictions, references)
        bad = sorted({v for v in (*predictions, *references) if v not in (0, 1)})
        if bad:
            raise ValueError(f"Matthews correlation here is binary (labels 0/1), got label(s) {bad}")
        pairs = list(zip(predictions, references))
        tp, fp = pairs.count((1, 1)), pairs.count((1, 0))
        fn, tn = pairs.count((0, 1)), pairs.count((0, 0))
        return {"mcc": float(matthews(tp, fp, fn, tn)), "accuracy": out["accuracy"]}


class PearsonSpearman(evaluate.Metric):
    """Pearson and Spearman correlation of predicted and gold scores, as GLUE reports STS-B."""

    def _info(self):
        return evaluate.MetricInfo(
            description=self.__doc__, citation="", inputs_description="real-valued scores", features=_VALUE_FEATURES
        )

    def _compute(self, predictions, references):
        if len(references) < 2:
            raise ValueError("a correlation needs at least two examples")
        return {
            "pearson": float(pearson(predictions, references)),
            "spearman": float(spearman(predictions, references)),
        }


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 answer normalisation."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


class Squad(evaluate.Metric):
    """SQuAD v1.1 exact match and F1 (fractions; the paper tables print them x100)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=self.__doc__,
            citation="Rajpurkar et al. 2016",
            inputs_description="answer strings",
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references):
        if not references:
            raise ValueError("SQuAD metrics of an empty evaluation set are undefined")
        em = f1 = 0.0
        for pred, golds in zip(predictions, references):
            scores = squad_example_scores(pred, golds)
            em += scores["exact_match"]
            f1 += scores["f1"]
        return {"exact_match": em / len(references), "f1": f1 / len(references)}


def squad_example_scores(prediction: str, golds: list[str]) -> dict[str, float]:
    """One question's exact match and token F1: the maximum over its gold answers (SQuAD v1.1)."""
    if not golds:
        raise ValueError(f"a SQuAD question needs at least one gold answer (prediction {prediction!r})")
    return {
        "exact_match": max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds),
        "f1": max(_token_f1(prediction, g) for g in golds),
    }


_METRICS = {
    "accuracy": Accuracy,
    "accuracy_f1": AccuracyF1,
    "matthews": Matthews,
    "pearson_spearman": PearsonSpearman,
    "squad": Squad,
}


def load_metric(name: str) -> evaluate.Metric:
    try:
        return _METRICS[name]()
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known metrics are: {', '.join(sorted(_METRICS))}") from None
