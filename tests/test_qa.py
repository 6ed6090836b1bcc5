"""Extractive QA (SQuAD v1.1): local SQuAD JSON, span labels, answer extraction, training and metric."""

import json

import numpy as np
import pytest

from prunebench.checkpoints.pretrained import load_pretrained
from prunebench.data.loading import DataConfig, load_task_data
from prunebench.data.metrics import normalize_answer
from prunebench.data.squad import best_answers, eval_features, train_features
from prunebench.data.tasks import get_task
from prunebench.measure.accuracy import task_metrics
from prunebench.training.trainer import FinetuneBudget, train

SQUAD = get_task("squad")
CONTEXTS = [
    (
        "The Eiffel Tower is in Paris. It was finished in 1889 by Gustave Eiffel's company.",
        [("Where is the Eiffel Tower?", "Paris"), ("When was it finished?", "1889")],
    ),
    (
        "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
        [("Who won the Nobel Prize in Physics in 1903?", "Marie Curie"), ("When did she win in Chemistry?", "1911")],
    ),
]


@pytest.fixture
def squad_file(tmp_path):
    data = {
        "version": "1.1",
        "data": [
            {
                "title": f"t{i}",
                "paragraphs": [
                    {
                        "context": ctx,
                        "qas": [
                            {"id": f"{i}-{j}", "question": q, "answers": [{"text": a, "answer_start": ctx.index(a)}]}
                            for j, (q, a) in enumerate(qas)
                        ],
                    }
                ],
            }
            for i, (ctx, qas) in enumerate(CONTEXTS)
        ],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    return path


def test_local_squad_json_loads(squad_file):
    data = load_task_data(SQUAD, DataConfig(source="local", train=str(squad_file), eval=str(squad_file)))
    assert len(data["eval"]) == 4
    assert data["eval"][0]["answers"] == {"text": ["Paris"], "answer_start": [CONTEXTS[0][0].index("Paris")]}


def test_span_labels_cover_the_answer(squad_file, tokenizer):
    data = load_task_data(SQUAD, DataConfig(source="local", train=str(squad_file), eval=str(squad_file)))
    feats = train_features(data["train"], tokenizer, max_seq_len=64, stride=16)
    for f, ex in zip(feats, data["train"]):
        span = tokenizer.decode(f["input_ids"][f["start_positions"] : f["end_positions"] + 1])
        assert normalize_answer(span) == normalize_answer(ex["answers"]["text"][0])


def test_long_context_windows_point_outside_answers_at_cls(tokenizer):
    import datasets

    ctx = "filler words here . " * 40 + "The answer is Zanzibar ."
    ex = datasets.Dataset.from_list(
        [
            {
                "id": "x",
                "question": "What is the answer?",
                "context": ctx,
                "answers": {"text": ["Zanzibar"], "answer_start": [ctx.index("Zanzibar")]},
            }
        ]
    )
    feats = train_features(ex, tokenizer, max_seq_len=48, stride=16)
    assert len(feats) > 1
    assert feats[0]["start_positions"] == 0 and feats[0]["end_positions"] == 0  # answer not in the first window
    last = feats[len(feats) - 1]
    assert (
        tokenizer.decode(last["input_ids"][last["start_positions"] : last["end_positions"] + 1]).strip() == "zanzibar"
    )


def test_best_answer_is_highest_scoring_valid_span(squad_file, tokenizer):
    data = load_task_data(SQUAD, DataConfig(source="local", train=str(squad_file), eval=str(squad_file), eval_limit=1))
    feats = eval_features(data["eval"], tokenizer, max_seq_len=64, stride=16)
    n = len(feats[0]["input_ids"])
    start, end = np.zeros((1, n)), np.zeros((1, n))
    target = next(
        i for i, o in enumerate(feats[0]["offset_mapping"]) if o is not None and CONTEXTS[0][0][o[0] : o[1]] == "Paris"
    )
    start[0, target], end[0, target] = 5.0, 5.0
    start[0, 1], end[0, 1] = 50.0, 50.0  # a question token: never an answer
    assert best_answers(data["eval"], feats, start, end) == {"0-0": "Paris"}


def test_tiny_qa_model_trains_and_is_scored(squad_file, tokenizer):
    data = load_task_data(SQUAD, DataConfig(source="local", train=str(squad_file), eval=str(squad_file)))
    model = load_pretrained("tiny-random", 0, seed=0, kind="extractive_qa")
    feats = train_features(data["train"], tokenizer, 64, 16)
    result = train(
        model,
        feats,
        tokenizer,
        FinetuneBudget(steps=30, batch_size=4, learning_rate=3e-3, freeze_embeddings=False),
        None,
        seed=0,
        log_every=10,
    )
    assert result.loss_curve[-1] < result.loss_curve[0]
    scores = task_metrics(model, eval_features(data["eval"], tokenizer, 64, 16), tokenizer, SQUAD, 8, data["eval"])
    assert set(scores) == {"exact_match", "f1"} and all(0.0 <= v <= 1.0 for v in scores.values())


def test_question_scores_are_per_question_squad_scores():
    from prunebench.data.squad import question_scores

    scores = question_scores(
        ["Paris", "in 1889.", "Curie", "London"], [["Paris"], ["1889"], ["Marie Curie"], ["Paris", "in Paris"]]
    )
    assert scores["exact_match"] == [1.0, 0.0, 0.0, 0.0]
    # "in 1889" vs "1889": precision 1/2, recall 1 -> 2/3; "curie" vs "marie curie": 1, 1/2 -> 2/3
    assert scores["f1"] == pytest.approx([1.0, 2 / 3, 2 / 3, 0.0])
    with pytest.raises(ValueError, match="2 answers for 1 questions"):
        question_scores(["a", "b"], [["a"]])


def test_qa_predictions_file_holds_scores_whose_mean_is_the_metric(squad_file, tokenizer, tmp_path):
    from prunebench.measure.accuracy import evaluate_task
    from prunebench.records.record import metric, predictions_payload, read_predictions, write_predictions

    data = load_task_data(SQUAD, DataConfig(source="local", train=str(squad_file), eval=str(squad_file)))
    model = load_pretrained("tiny-random", 0, seed=0, kind="extractive_qa")
    ev = evaluate_task(model, eval_features(data["eval"], tokenizer, 64, 16), tokenizer, SQUAD, 8, data["eval"])
    assert ev.kind == "scores" and ev.references == [["Paris"], ["1889"], ["Marie Curie"], ["1911"]]
    for name in ("exact_match", "f1"):
        assert len(ev.predictions[name]) == 4
        assert np.mean(ev.predictions[name]) == pytest.approx(ev.metrics[name], abs=1e-12)
    summary = {
        "task": "squad",
        "method": "dense",
        "budget": 1.0,
        "seed": 0,
        "metrics": {k: metric(v, "fraction") for k, v in ev.metrics.items()},
    }
    payload = predictions_payload(summary, SQUAD.primary_metric, ev.kind, ev.predictions, ev.references)
    assert payload["references"] is None and payload["metric"] == "f1"
    p = read_predictions(write_predictions(payload, tmp_path / "seed0.predictions.json"), summary)
    assert p.value() == pytest.approx(ev.metrics["f1"], abs=1e-12)


def _squad_articles(tmp_path, n_articles=6):
    data = {
        "version": "1.1",
        "data": [
            {
                "title": f"article{i}",
                "paragraphs": [
                    {
                        "context": f"Article {i} is about topic {i}.",
                        "qas": [
                            {
                                "id": f"a{i}-q{j}",
                                "question": f"What is article {i} about ({j})?",
                                "answers": [{"text": f"topic {i}", "answer_start": len(f"Article {i} is about ")}],
                            }
                            for j in range(i + 1)
                        ],
                    }
                ],
            }
            for i in range(n_articles)
        ],
    }
    path = tmp_path / "articles.json"
    path.write_text(json.dumps(data))
    return path


def test_article_split_keeps_every_article_on_one_side(tmp_path):
    path = _squad_articles(tmp_path)
    report = {}
    cfg = DataConfig(source="local", train=str(path), eval=str(path), article_split={"every": 3, "eval_index": 2})
    data = load_task_data(SQUAD, cfg, report=report)
    # articles 0..5, eval: 2 and 5 (3 + 6 questions); train: 0, 1, 3, 4 (1 + 2 + 4 + 5)
    assert sorted({i.split("-")[0] for i in data["eval"]["id"]}) == ["a2", "a5"]
    assert sorted({i.split("-")[0] for i in data["train"]["id"]}) == ["a0", "a1", "a3", "a4"]
    assert report["article_split"] == {
        "every": 3,
        "eval_index": 2,
        "eval_articles": 2,
        "eval_questions": 9,
        "train_articles": 4,
        "train_questions": 12,
    }
    eval_only = load_task_data(SQUAD, cfg, eval_only=True)
    assert set(eval_only) == {"eval"} and list(eval_only["eval"]["id"]) == list(data["eval"]["id"])


def test_bad_article_split_is_a_clear_error(tmp_path):
    from prunebench.data.loading import DataError

    path = _squad_articles(tmp_path, 2)
    with pytest.raises(DataError, match=r"eval_index 5 must lie in 0..3"):
        load_task_data(SQUAD, DataConfig(train=str(path), eval=str(path), article_split={"every": 4, "eval_index": 5}))
    with pytest.raises(DataError, match=r"leaves no eval question"):
        load_task_data(SQUAD, DataConfig(train=str(path), eval=str(path), article_split={"every": 4, "eval_index": 3}))


def test_long_questions_are_cut_so_every_window_keeps_more_than_stride_context_tokens(tokenizer):
    import datasets

    from prunebench.data.squad import question_limit

    ctx = "The answer is Zanzibar . " + "filler words here . " * 30
    question = "What " + "very " * 60 + "long question is this?"
    ex = datasets.Dataset.from_list(
        [
            {
                "id": "x",
                "question": question,
                "context": ctx,
                "answers": {"text": ["Zanzibar"], "answer_start": [ctx.index("Zanzibar")]},
            }
        ]
    )
    assert question_limit(64, 32) == 28 and question_limit(384, 128) == 64
    feats = train_features(ex, tokenizer, max_seq_len=64, stride=32)  # the tokenizer would panic on the full question
    assert all(len(ids) <= 64 for ids in feats["input_ids"]) and len(feats) > 1
    first = feats[0]
    assert (
        tokenizer.decode(first["input_ids"][first["start_positions"] : first["end_positions"] + 1]).strip()
        == "zanzibar"
    )
    assert len(eval_features(ex, tokenizer, 64, 32)) == len(feats)
    with pytest.raises(ValueError, match="doc_stride 60 leaves no room for a question"):
        train_features(ex, tokenizer, max_seq_len=64, stride=60)
