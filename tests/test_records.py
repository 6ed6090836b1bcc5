"""The result record schema, atomic writing, and clear errors for bad records."""

import json
import re

import pytest
import torch

from prunebench.records.record import (
    PredictionsError,
    RecordError,
    copy_predictions,
    metric,
    predictions_path,
    predictions_payload,
    predictions_summary,
    read_predictions,
    read_record,
    validate,
    write_predictions,
    write_record,
)


def _record():
    return {
        "schema_version": 1,
        "task": "sst2",
        "method": "magnitude_global",
        "budget": 0.5,
        "seed": 0,
        "metrics": {"accuracy": metric(0.9, "fraction"), "latency_b1": metric(3.2, "ms")},
        "config": {},
        "provenance": {
            "git_sha": "abc",
            "versions": {"python": "3.11", "torch": "2", "transformers": "5", "datasets": "5", "evaluate": "0.4"},
            "hardware": {"cpu": "x", "logical_cores": 2, "gpu": None},
            "wall_time_s": 1.0,
            "created": "2026-01-01T00:00:00+00:00",
        },
    }


def test_valid_record_round_trips(tmp_path):
    path = write_record(_record(), tmp_path / "r.json")
    assert read_record(path) == _record()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"], "no temporary file left behind"


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda r: r.pop("provenance"), "provenance"),
        (lambda r: r.update(budget=1.5), "budget"),
        (lambda r: r["metrics"].update(accuracy={"value": 0.9}), "metrics/accuracy"),
        (lambda r: r["metrics"].update(accuracy={"value": 0.9, "unit": "percent"}), "metrics/accuracy/unit"),
        (lambda r: r.update(extra=1), "top level"),
    ],
)
def test_invalid_records_are_refused(tmp_path, mutate, where):
    rec = _record()
    mutate(rec)
    with pytest.raises(RecordError, match=where):
        write_record(rec, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_truncated_record_is_a_clear_error(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_record())[:100])
    with pytest.raises(RecordError, match="corrupt or truncated"):
        read_record(path)


def test_validate_accepts_record():
    assert validate(_record()) is not None


# --- predictions files ----------------------------------------------------------------------------


def _with_predictions(tmp_path, preds=(1, 0, 1, 1), refs=(1, 0, 0, 1)):
    """A record whose predictions file (4 examples, 3 right) lies beside it."""
    rec = _record()
    payload = predictions_payload(rec, "accuracy", "labels", list(preds), list(refs))
    rec["metrics"]["accuracy"] = metric(sum(p == r for p, r in zip(preds, refs)) / len(refs), "fraction")
    rec["details"] = {"predictions": predictions_summary(payload, tmp_path / "seed0.predictions.json")}
    return rec, payload, write_predictions(payload, predictions_path(tmp_path / "seed0.json"))


def test_predictions_path_is_beside_the_record():
    assert predictions_path("results/records/sst2/m/0.5/seed0.json").name == "seed0.predictions.json"
    assert predictions_path("r/seed1_steps800.json").name == "seed1_steps800.predictions.json"
    with pytest.raises(ValueError, match="seed0.predictions.json"):
        predictions_path("r/seed0.predictions.json")


def test_predictions_round_trip_compactly(tmp_path):
    rec, payload, path = _with_predictions(tmp_path)
    assert " " not in path.read_text() and "\n" not in path.read_text().rstrip("\n")
    p = read_predictions(path, rec)
    assert (p.kind, p.n, p.metric, p.seed) == ("labels", 4, "accuracy", 0)
    assert p.predictions.tolist() == [1, 0, 1, 1] and p.value() == 0.75
    copy = copy_predictions(path, rec, tmp_path / "copy" / "seed0.predictions.json")
    assert copy.value() == 0.75 and json.loads((tmp_path / "copy/seed0.predictions.json").read_text()) == payload


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rec, data: rec["details"]["predictions"].update(n=5), "n = 4 examples, the record has 5"),
        (lambda rec, data: rec["details"]["predictions"].update(references_sha256="0" * 64), "references do not match"),
        (lambda rec, data: rec["metrics"]["accuracy"].update(value=0.5), "recomputed from the predictions is 0.75"),
        (lambda rec, data: rec.update(method="other"), "method"),
        (lambda rec, data: data.update(references=[1, 1, 1, 1]), "references do not match references_sha256"),
        (lambda rec, data: data.update(predictions=[1, 0, 1]), "predictions has 3 entries, n is 4"),
        (lambda rec, data: data.update(format="other/2"), "format"),
    ],
)
def test_predictions_that_do_not_match_their_record_name_the_file(tmp_path, mutate, message):
    rec, payload, path = _with_predictions(tmp_path)
    data = json.loads(path.read_text())
    mutate(rec, data)
    path.write_text(json.dumps(data))
    with pytest.raises(PredictionsError, match=re.escape(message)) as err:
        read_predictions(path, rec)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_missing_predictions_file_is_a_clear_error(tmp_path):
    with pytest.raises(PredictionsError, match="predictions file not found"):
        read_predictions(tmp_path / "seed0.predictions.json")


def test_tiny_model_predictions_reproduce_its_metric_in_dataset_order(tmp_path, tiny_model, tokenizer, sst2_small):
    from prunebench.data.tasks import get_task
    from prunebench.measure.accuracy import evaluate_task
    from prunebench.runner import jobs as experiment

    spec, data = get_task("sst2"), sst2_small["eval"]

    def one_by_one():  # each example alone, in dataset order: no batching, no sorting
        with torch.inference_mode():
            return torch.cat(
                [
                    tiny_model(
                        **tokenizer.pad([{k: data[i][k] for k in ("input_ids", "attention_mask")}], return_tensors="pt")
                    ).logits
                    for i in range(len(data))
                ]
            )

    logits = one_by_one()
    margin = (logits[:, 1] - logits[:, 0]).sort().values
    with torch.no_grad():  # the random model puts every example in one class: move the boundary between them
        tiny_model.classifier.bias[1] -= (margin[len(margin) // 2 - 1] + margin[len(margin) // 2]) / 2
    alone = one_by_one().argmax(-1).tolist()
    assert 0 < sum(alone) < len(alone)
    ev = evaluate_task(tiny_model, data, tokenizer, spec, batch_size=16)  # length-sorted batches
    assert ev.predictions == alone, "predictions restored to dataset order"
    assert ev.references == [int(x) for x in data["label"]]
    summary = {
        "task": "sst2",
        "method": "dense",
        "budget": 1.0,
        "seed": 0,
        "metrics": {"accuracy": metric(ev.metrics["accuracy"], "fraction")},
        "details": {"training": {"eval_examples": len(data)}},
    }
    path = experiment._write_predictions(summary, ev, spec.primary_metric, tmp_path / "seed0.json")
    assert path == tmp_path / "seed0.predictions.json"
    p = read_predictions(path, summary)  # checks n, references and the metric against the summary
    assert p.value() == ev.metrics["accuracy"]
    assert summary["details"]["predictions"]["references_sha256"] == p.references_sha256
