"""The result record schema, atomic writing, and clear errors for bad records."""

import json

import pytest

from prunebench.records import RecordError, metric, read_record, validate, write_record


def _record():
    return {
        "schema_version": 1, "task": "sst2", "method": "magnitude_global", "budget": 0.5, "seed": 0,
        "metrics": {"accuracy": metric(0.9, "fraction"), "latency_b1": metric(3.2, "ms")},
        "config": {}, "provenance": {"git_sha": "abc", "versions": {"python": "3.11", "torch": "2", "transformers": "5",
                                                                   "datasets": "5", "evaluate": "0.4"},
                                     "hardware": {"cpu": "x", "logical_cores": 2, "gpu": None},
                                     "wall_time_s": 1.0, "created": "2026-01-01T00:00:00+00:00"},
    }


def test_valid_record_round_trips(tmp_path):
    path = write_record(_record(), tmp_path / "r.json")
    assert read_record(path) == _record()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"], "no temporary file left behind"


@pytest.mark.parametrize("mutate, where", [
    (lambda r: r.pop("provenance"), "provenance"),
    (lambda r: r.update(budget=1.5), "budget"),
    (lambda r: r["metrics"].update(accuracy={"value": 0.9}), "metrics/accuracy"),
    (lambda r: r["metrics"].update(accuracy={"value": 0.9, "unit": "percent"}), "metrics/accuracy/unit"),
    (lambda r: r.update(extra=1), "top level"),
])
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
