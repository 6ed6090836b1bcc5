"""Task specifications: where a task lives on the hub, its columns, labels and metric.

Label order follows the hub's ``ClassLabel`` features (GLUE on the hub: ``nyu-mll/glue``), so
a label index means the same thing whether the data came from the hub or from local files.
Local files may give labels as indices or as these names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "classification" or "extractive_qa"
    hub_path: str
    hub_config: str | None
    train_split: str
    eval_split: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] = ()
    metric: str = "accuracy"  # name in prunebench.metrics
    primary_metric: str = "accuracy"  # key of the metric's output the leaderboard ranks by

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("sst2", "classification", "nyu-mll/glue", "sst2", "train", "validation",
                 ("sentence",), ("negative", "positive")),
        TaskSpec("mnli", "classification", "nyu-mll/glue", "mnli", "train", "validation_matched",
                 ("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
        TaskSpec("qqp", "classification", "nyu-mll/glue", "qqp", "train", "validation",
                 ("question1", "question2"), ("not_duplicate", "duplicate"), metric="accuracy_f1"),
        TaskSpec("qnli", "classification", "nyu-mll/glue", "qnli", "train", "validation",
                 ("question", "sentence"), ("entailment", "not_entailment")),
        TaskSpec("squad", "extractive_qa", "rajpurkar/squad", None, "train", "validation",
                 ("question", "context"), metric="squad", primary_metric="f1"),
    ]
}


class UnknownTaskError(ValueError):
    pass


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks are: {', '.join(sorted(TASKS))}") from None
