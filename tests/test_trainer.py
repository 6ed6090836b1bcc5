"""The shared trainer: determinism, divergence detection, length-grouped batching, bf16."""

import pytest
import torch

from prunebench.checkpoints.pretrained import load_pretrained
from prunebench.measure.accuracy import predict
from prunebench.method.base import PruningMethod
from prunebench.training.trainer import FinetuneBudget, TrainingDiverged, length_grouped_batches, train

BUDGET = FinetuneBudget(steps=10, batch_size=8, learning_rate=1e-3, freeze_embeddings=False)


def _trained(seed, tokenizer, data, budget=BUDGET, method=None):
    model = load_pretrained("tiny-random", 2, seed)
    train(model, data["train"], tokenizer, budget, method, seed=seed)
    return model


def test_same_seed_same_weights_and_predictions(tokenizer, sst2_small):
    a, b = _trained(0, tokenizer, sst2_small), _trained(0, tokenizer, sst2_small)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert predict(a, sst2_small["eval"], tokenizer, 32) == predict(b, sst2_small["eval"], tokenizer, 32)


def test_different_seed_differs(tokenizer, sst2_small):
    a, b = _trained(0, tokenizer, sst2_small), _trained(1, tokenizer, sst2_small)
    assert not torch.equal(a.classifier.weight, b.classifier.weight)


class _NaNPenalty(PruningMethod):
    def penalty(self, model, step):
        return torch.tensor(float("nan")) if step == 3 else None

    def finalize(self, model):
        return model


def test_nan_loss_stops_with_clear_error(tokenizer, sst2_small):
    with pytest.raises(TrainingDiverged, match="became nan at step 3"):
        _trained(0, tokenizer, sst2_small, method=_NaNPenalty(0.5))


def test_length_grouped_batches_cover_data_and_group_lengths():
    lengths = [i % 37 for i in range(1000)]
    stream = length_grouped_batches(lengths, 10, seed=0)
    first_epoch = [next(stream) for _ in range(100)]
    assert sorted(i for b in first_epoch for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first_epoch) / 100
    assert spread < 5, "batches hold examples of similar length"


def test_length_grouped_epochs_are_reshuffled_and_seeded():
    """Each epoch has every example once, a new order per epoch, and the same stream for the same seed."""
    lengths = [i % 37 for i in range(1000)]
    a, b = length_grouped_batches(lengths, 10, seed=3), length_grouped_batches(lengths, 10, seed=3)
    epochs = [[next(a) for _ in range(100)] for _ in range(2)]
    assert epochs[0] != epochs[1] and all(sorted(i for x in e for i in x) == list(range(1000)) for e in epochs)
    assert [next(b) for _ in range(200)] == epochs[0] + epochs[1]


def test_random_batching_pads_more_than_length_grouped():
    """``finetune.batching``: random batches cover each epoch too but hold mixed lengths; a bad name is an error."""
    from prunebench.training.trainer import training_batches

    lengths = [5 + (i * 7919) % 60 for i in range(960)]
    padding = {}
    for batching in ("random", "length_grouped"):
        stream = training_batches(lengths, 32, 0, batching)
        epoch = [next(stream) for _ in range(30)]
        assert sorted(i for b in epoch for i in b) == list(range(960))
        real = sum(lengths[i] for b in epoch for i in b)
        padding[batching] = 1 - real / sum(max(lengths[i] for i in b) * len(b) for b in epoch)
    assert padding["random"] > 0.3 and padding["length_grouped"] < 0.05, padding
    with pytest.raises(ValueError, match="batching must be one of length_grouped, random, got 'sorted'"):
        FinetuneBudget(steps=10, batching="sorted")


def test_train_result_counts_real_tokens_and_padding(tokenizer, sst2_small):
    from dataclasses import replace

    budget = FinetuneBudget(steps=6, batch_size=8, learning_rate=1e-3, freeze_embeddings=False)
    results = {}
    for batching in ("random", "length_grouped"):
        model = load_pretrained("tiny-random", 2, 0)
        results[batching] = train(model, sst2_small["train"], tokenizer, replace(budget, batching=batching), None, 0)
    for r in results.values():
        assert 0 < r.tokens <= r.positions and r.tokens_per_s == pytest.approx(r.tokens / r.wall_time_s)
        assert r.padded_fraction == pytest.approx(1 - r.tokens / r.positions)
    assert results["random"].padded_fraction > results["length_grouped"].padded_fraction


def test_bf16_autocast_trains_and_returns_fp32(tokenizer, sst2_small):
    budget = FinetuneBudget(steps=5, batch_size=8, learning_rate=1e-3, freeze_embeddings=False, precision="bf16")
    model = _trained(0, tokenizer, sst2_small, budget=budget)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.classifier.weight.device.type == "cpu"


@pytest.mark.parametrize(
    "capability, expected",
    [
        ("AVX2", "fp32"),
        ("DEFAULT", "fp32"),
        ("AVX512", "fp32"),  # AVX-512 without BF16: emulated, slow
        ("AVX512+AVX512_BF16", "bf16"),
        ("AVX512+AVX512_BF16+AMX", "bf16"),
        ("AVX512+AMX", "bf16"),
    ],
)
def test_auto_precision_is_bf16_only_where_native(capability, expected):
    from prunebench.training.trainer import resolve_precision

    assert resolve_precision("auto", torch.device("cpu"), capability) == expected
    assert resolve_precision("fp32", torch.device("cpu"), capability) == "fp32"  # explicit choices kept
    assert resolve_precision("bf16", torch.device("cpu"), capability) == "bf16"


def test_auto_precision_uses_the_cpu_capability(monkeypatch):
    from prunebench.training import trainer

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert trainer.cpu_capability() == "AVX2"
    assert trainer.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert trainer.cpu_capability() == "AVX512+AVX512_BF16"
    assert trainer.resolve_precision("auto", torch.device("cpu")) == "bf16"


def test_bad_precision_and_steps_are_clear_errors():
    with pytest.raises(ValueError, match="precision.*'fp16'"):
        FinetuneBudget(steps=10, precision="fp16")
    with pytest.raises(ValueError, match=r"steps.*\[3, 5\]"):
        FinetuneBudget(steps=[3, 5])


def test_train_result_reports_precision_and_throughput(tokenizer, sst2_small, monkeypatch):
    from prunebench.training import trainer

    monkeypatch.setattr(trainer, "cpu_capability", lambda: "AVX2")
    budget = FinetuneBudget(steps=4, batch_size=8, learning_rate=1e-3, freeze_embeddings=False, precision="auto")
    model = load_pretrained("tiny-random", 2, 0)
    result = train(model, sst2_small["train"], tokenizer, budget, None, seed=0)
    assert result.precision == "fp32" and result.cpu_capability == "AVX2"
    assert result.examples == 4 * 8
    assert result.examples_per_s == pytest.approx(32 / result.wall_time_s)
    assert result.steps_per_s == pytest.approx(4 / result.wall_time_s)


def test_prepadded_batches_equal_tokenizer_pad(tokenizer, sst2_small):
    from prunebench.training.trainer import PrePadded, _collate

    data = sst2_small["train"]
    padded = PrePadded(data, tokenizer)
    stream = length_grouped_batches(data.with_format("arrow")["length"].to_pylist(), 8, seed=0)
    for _ in range(20):
        idx = next(stream)
        old, new = _collate(data, idx, tokenizer), padded.batch(idx)
        assert old.keys() == new.keys()
        for k in old:
            assert old[k].dtype == new[k].dtype and torch.equal(old[k], new[k]), k
