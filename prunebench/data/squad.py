"""Extractive question answering (SQuAD v1.1): features, labels and answer extraction.

The standard BERT recipe (Devlin et al. 2019, Sec. 4.2): question and context are encoded as
one pair, contexts longer than ``max_seq_len`` are split into overlapping windows (``stride``
tokens of overlap); training labels are the start/end token positions of the first gold
answer, or the [CLS] position when the answer is not inside the window. At evaluation the
best span over all windows of an example maximises start_logit + end_logit among the
``n_best`` candidates of each, with end >= start and at most ``max_answer_tokens`` tokens;
the answer is the context substring under the span's character offsets.

Questions longer than ``max_question_tokens`` (BERT's ``max_query_length``, 64) are cut to it, and
further if needed so that every window keeps more than ``stride`` context tokens (the tokenizer
cannot window a context otherwise); no staged SQuAD question is longer than 38 tokens.
"""

from __future__ import annotations

import collections

import numpy as np

#: BERT's max_query_length (Devlin et al. 2019, run_squad.py)
MAX_QUESTION_TOKENS = 64


def question_limit(max_seq_len: int, stride: int, max_question_tokens: int = MAX_QUESTION_TOKENS) -> int:
    """The most question tokens a window can hold while keeping more than ``stride`` context tokens
    ([CLS] question [SEP] context [SEP]); a clear error where no question fits."""
    limit = min(max_question_tokens, max_seq_len - 3 - stride - 1)
    if limit < 1:
        raise ValueError(
            f"doc_stride {stride} leaves no room for a question in {max_seq_len}-token windows: "
            f"use doc_stride < max_seq_len - 4 (e.g. max_seq_len 384, doc_stride 128)"
        )
    return limit


def _cut_questions(questions, tokenizer, limit: int) -> list[str]:
    """Each question cut after its ``limit``-th token (at that token's character offset)."""
    enc = tokenizer(list(questions), add_special_tokens=False, return_offsets_mapping=True)
    return [
        q if len(offsets) <= limit else q[: offsets[limit - 1][1]]
        for q, offsets in zip(questions, enc["offset_mapping"])
    ]


def train_features(examples, tokenizer, max_seq_len: int, stride: int):
    """Tokenized training windows with ``start_positions``/``end_positions`` and ``length``."""
    limit = question_limit(max_seq_len, stride)

    def encode(rows):
        enc = tokenizer(
            _cut_questions(rows["question"], tokenizer, limit),
            rows["context"],
            truncation="only_second",
            max_length=max_seq_len,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        starts, ends = [], []
        for i, offsets in enumerate(enc["offset_mapping"]):
            answers = rows["answers"][enc["overflow_to_sample_mapping"][i]]
            seq = enc.sequence_ids(i)
            ctx_start = seq.index(1)
            ctx_end = len(seq) - 1 - seq[::-1].index(1)
            if not answers["text"]:
                starts.append(0), ends.append(0)
                continue
            a_start = answers["answer_start"][0]
            a_end = a_start + len(answers["text"][0])
            if offsets[ctx_start][0] > a_start or offsets[ctx_end][1] < a_end:
                starts.append(0), ends.append(0)  # answer outside this window: point at [CLS]
                continue
            s = ctx_start
            while s <= ctx_end and offsets[s][0] <= a_start:
                s += 1
            e = ctx_end
            while e >= ctx_start and offsets[e][1] >= a_end:
                e -= 1
            starts.append(s - 1), ends.append(e + 1)
        enc["start_positions"], enc["end_positions"] = starts, ends
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        enc.pop("offset_mapping"), enc.pop("overflow_to_sample_mapping")
        return enc

    return examples.map(encode, batched=True, remove_columns=examples.column_names)


def eval_features(examples, tokenizer, max_seq_len: int, stride: int):
    """Tokenized evaluation windows with ``example_id`` and context-only ``offset_mapping``."""
    limit = question_limit(max_seq_len, stride)

    def encode(rows):
        enc = tokenizer(
            _cut_questions(rows["question"], tokenizer, limit),
            rows["context"],
            truncation="only_second",
            max_length=max_seq_len,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        enc["example_id"] = [rows["id"][j] for j in enc.pop("overflow_to_sample_mapping")]
        enc["offset_mapping"] = [
            [o if s == 1 else None for o, s in zip(offsets, enc.sequence_ids(i))]
            for i, offsets in enumerate(enc["offset_mapping"])
        ]
        return enc

    return examples.map(encode, batched=True, remove_columns=examples.column_names)


def best_answers(
    examples, features, start_logits: np.ndarray, end_logits: np.ndarray, n_best: int = 20, max_answer_tokens: int = 30
) -> dict[str, str]:
    """The highest-scoring answer text of every example, by example id."""
    by_example = collections.defaultdict(list)
    for i, example_id in enumerate(features["example_id"]):
        by_example[example_id].append(i)
    answers = {}
    for example in examples:
        best, best_score = "", -np.inf
        for i in by_example[example["id"]]:
            offsets = features[i]["offset_mapping"]
            starts = np.argsort(start_logits[i])[::-1][:n_best]
            ends = np.argsort(end_logits[i])[::-1][:n_best]
            for s in starts:
                for e in ends:
                    if (
                        s >= len(offsets)
                        or e >= len(offsets)
                        or offsets[s] is None
                        or offsets[e] is None
                        or e < s
                        or e - s + 1 > max_answer_tokens
                    ):
                        continue
                    score = start_logits[i][s] + end_logits[i][e]
                    if score > best_score:
                        best_score, best = score, example["context"][offsets[s][0] : offsets[e][1]]
        answers[example["id"]] = best
    return answers


def question_scores(answers: list[str], golds: list[list[str]]) -> dict[str, list[float]]:
    """Each question's exact match and F1 (SQuAD v1.1), in the given order; their means are the metric."""
    from prunebench.data.metrics import squad_example_scores  # imports `evaluate`: only evaluating jobs pay it

    if len(answers) != len(golds):
        raise ValueError(f"{len(answers)} answers for {len(golds)} questions")
    scores = [squad_example_scores(a, g) for a, g in zip(answers, golds)]
    return {"exact_match": [s["exact_match"] for s in scores], "f1": [s["f1"] for s in scores]}
