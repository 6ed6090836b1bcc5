"""Shared fixtures: the tiny random BERT, a small tokenized SST-2 slice, paths to the real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SST2_TRAIN = DATA / "sst2" / "train.tsv"
SST2_DEV = DATA / "sst2" / "dev.tsv"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def sample_batch(tokenizer):
    """Three short sentences of different lengths, padded: the batch the model-equality tests compare on."""
    return tokenizer(
        ["a fine film , warm and funny", "dull and long", "not bad at all"], padding=True, return_tensors="pt"
    )


def logits(model, batch):
    """The model's logits on ``batch`` in eval mode, without gradients."""
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.fixture(scope="session")
def tokenizer():
    from prunebench.checkpoints.pretrained import load_tokenizer

    return load_tokenizer("tiny-random")


@pytest.fixture
def tiny_model():
    from prunebench.checkpoints.pretrained import load_pretrained

    return load_pretrained("tiny-random", num_labels=2, seed=0, label_names=("negative", "positive")).eval()


@pytest.fixture
def wide_tiny_model(tiny_model):
    """The tiny model with larger random encoder weights (N(0, 0.2)), so that a wrongly loaded,
    masked or removed matrix changes the output visibly."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tiny_model.base_model.encoder.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return tiny_model


@pytest.fixture(scope="session")
def sst2_small(tokenizer):
    """256 training and 64 evaluation examples of the real SST-2 files, tokenized."""
    from prunebench.data.loading import DataConfig, load_task_data
    from prunebench.data.tasks import get_task
    from prunebench.training.trainer import tokenize

    spec = get_task("sst2")
    data = load_task_data(
        spec, DataConfig(source="local", train=str(SST2_TRAIN), eval=str(SST2_DEV), train_limit=256, eval_limit=64)
    )
    return {k: tokenize(v, tokenizer, spec.text_fields, 64) for k, v in data.items()}
