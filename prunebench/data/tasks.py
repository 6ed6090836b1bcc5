"""Task specifications: where a task lives on the hub, its columns, labels and metric.

Label order follows the hub's ``ClassLabel`` features (GLUE on the hub: ``nyu-mll/glue``), so
a label index means the same thing whether the data came from the hub or from local files.
Local files may give labels as indices or as these names.

Three kinds of task:

- ``classification``: a label index per example (``label_names`` in the hub's order);
- ``regression`` (STS-B): a float target per example (``label_range`` checked on loading),
  a one-output head trained with mean squared error, predictions are floats;
- ``extractive_qa`` (SQuAD v1.1): answer spans.

The metric each task ranks by (``primary_metric``) is the first metric GLUE lists for the task
(Wang et al. 2019, Table 1 and the GLUE leaderboard), every other metric of the task is recorded
beside it:

| task | recorded | primary (ranks by) |
|---|---|---|
| CoLA | Matthews correlation (``mcc``), accuracy | ``mcc`` |
| MRPC, QQP | ``f1`` (of the positive class, label 1), ``accuracy`` | ``f1`` (GLUE: "F1/Accuracy") |
| STS-B | ``pearson``, ``spearman`` | ``pearson`` (GLUE: "Pearson/Spearman") |
| SST-2, MNLI, QNLI, RTE, WNLI | ``accuracy`` | ``accuracy`` |
| SQuAD v1.1 | ``exact_match``, ``f1`` | ``f1`` |

(MRPC and QQP: F1 first as in Devlin et al. 2019, Table 1.)

GLUE's overall score averages F1 and accuracy (MRPC, QQP) and Pearson and Spearman (STS-B);
that average is not a primary metric here because a paired test or a bootstrap of one named
metric is easier to read than of a mix (both parts are in every record; the average can be
formed from them). Matthews, Pearson and Spearman are coefficients in [-1, 1]; they are 0 when
undefined (a constant prediction or reference set), as scikit-learn does for Matthews.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("classification", "regression", "extractive_qa")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # one of KINDS
    hub_path: str
    hub_config: str | None
    train_split: str
    eval_split: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] = ()
    metric: str = "accuracy"  # name in prunebench.data.metrics
    primary_metric: str = "accuracy"  # key of the metric's output the leaderboard ranks by
    #: further evaluation splits on the hub, (name, split): evaluated as ``<metric>_<name>``
    extra_eval_splits: tuple[tuple[str, str], ...] = ()
    #: (canonical column, its header in the GLUE-style local files) where the two differ
    local_columns: tuple[tuple[str, str], ...] = ()
    #: regression targets must lie in this closed interval
    label_range: tuple[float, float] | None = None
    #: text caveats (hub copy vs the local files)
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")

    @property
    def num_labels(self) -> int:
        """Outputs of the task head: one for regression, one per class for classification."""
        return 1 if self.kind == "regression" else len(self.label_names)

    def local_column(self, canonical: str) -> str:
        """The header of a canonical column in local files (``label`` of MRPC is ``Quality``)."""
        return dict(self.local_columns).get(canonical, canonical)


MRPC_NOTE = (
    "text: the local files keep the original MSR/GLUE text (\"doesn't\"); the hub's glue/mrpc takes its text "
    'from SentEval\'s re-tokenized copy ("doesn \'t", "company \'s"). Same examples, labels and order; the texts '
    "differ in whitespace only, so a model's numbers on the two sources are close but not identical."
)
MNLI_NOTE = (
    "text: the hub's MNLI dev splits are untokenized; the staged dev samples are PTB-tokenized (' .', 'n't' "
    "split off, -LRB-/-RRB-), undone at load when the task table says detokenize_eval: ptb."
)

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec(
            "sst2",
            "classification",
            "nyu-mll/glue",
            "sst2",
            "train",
            "validation",
            ("sentence",),
            ("negative", "positive"),
        ),
        TaskSpec(
            "cola",
            "classification",
            "nyu-mll/glue",
            "cola",
            "train",
            "validation",
            ("sentence",),
            ("unacceptable", "acceptable"),
            metric="matthews",
            primary_metric="mcc",
        ),
        TaskSpec(
            "mrpc",
            "classification",
            "nyu-mll/glue",
            "mrpc",
            "train",
            "validation",
            ("sentence1", "sentence2"),
            ("not_equivalent", "equivalent"),
            metric="accuracy_f1",
            primary_metric="f1",
            local_columns=(("sentence1", "#1 String"), ("sentence2", "#2 String"), ("label", "Quality")),
            note=MRPC_NOTE,
        ),
        TaskSpec(
            "qqp",
            "classification",
            "nyu-mll/glue",
            "qqp",
            "train",
            "validation",
            ("question1", "question2"),
            ("not_duplicate", "duplicate"),
            metric="accuracy_f1",
            primary_metric="f1",
        ),
        TaskSpec(
            "stsb",
            "regression",
            "nyu-mll/glue",
            "stsb",
            "train",
            "validation",
            ("sentence1", "sentence2"),
            metric="pearson_spearman",
            primary_metric="pearson",
            local_columns=(("label", "score"),),
            label_range=(0.0, 5.0),
        ),
        TaskSpec(
            "mnli",
            "classification",
            "nyu-mll/glue",
            "mnli",
            "train",
            "validation_matched",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            extra_eval_splits=(("mismatched", "validation_mismatched"),),
            note=MNLI_NOTE,
        ),
        TaskSpec(
            "qnli",
            "classification",
            "nyu-mll/glue",
            "qnli",
            "train",
            "validation",
            ("question", "sentence"),
            ("entailment", "not_entailment"),
        ),
        TaskSpec(
            "rte",
            "classification",
            "nyu-mll/glue",
            "rte",
            "train",
            "validation",
            ("sentence1", "sentence2"),
            ("entailment", "not_entailment"),
        ),
        TaskSpec(
            "wnli",
            "classification",
            "nyu-mll/glue",
            "wnli",
            "train",
            "validation",
            ("sentence1", "sentence2"),
            ("not_entailment", "entailment"),
        ),
        TaskSpec(
            "squad",
            "extractive_qa",
            "rajpurkar/squad",
            None,
            "train",
            "validation",
            ("question", "context"),
            metric="squad",
            primary_metric="f1",
        ),
    ]
}


class UnknownTaskError(ValueError):
    pass


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks are: {', '.join(sorted(TASKS))}") from None
