"""The shared trainer: determinism, divergence detection, length-grouped batching, bf16."""

import pytest
import torch

import methods
from methods.base import PruningMethod
from prunebench.measure.accuracy import predict
from prunebench.modeling import load_pretrained
from prunebench.trainer import FinetuneBudget, TrainingDiverged, length_grouped_batches, train

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


def test_bf16_autocast_trains_and_returns_fp32(tokenizer, sst2_small):
    budget = FinetuneBudget(steps=5, batch_size=8, learning_rate=1e-3, freeze_embeddings=False, precision="bf16")
    model = _trained(0, tokenizer, sst2_small, budget=budget)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.classifier.weight.device.type == "cpu"
