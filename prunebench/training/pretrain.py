"""Compression during pre-training: continued masked-language-model training of the
model with a pruning method applied, before any task fine-tuning.

Gordon et al. 2020 prune BERT during pre-training and fine-tune the pruned model with its mask;
RPP (Guo et al. 2019) and LayerDrop (Fan et al. 2019) also act in pre-training. This module is the
one job that does it here: it *continues* MLM training of the configured model (the embedded MiniLM,
the tiny smoke model, or any BERT) on unlabeled text while a registered pruning method runs through
the same hooks it uses in fine-tuning, and saves the pruned encoder for the per-task fine-tuning
rows of ``methods/pretrain_stage.py``.

Corpus (``build_corpus``). The texts of the *training* files of the configured tasks
(``pretrain.corpus_tasks``, default the experiment's tasks; each text field of an example is one
segment, e.g. both sentences of an MRPC pair, a SQuAD question and its paragraph), read through
``prunebench.data.loading`` exactly as the fine-tuning jobs read them (``task_data``; the profile's
``train_limit`` applies). Deduplicated (whitespace-normalised, case-folded: the tokenizer is
uncased), and every text that occurs in *any* evaluation file of those tasks or of the experiment's
tasks (all of the file: ``eval_limit`` is ignored here, extra evaluation files included) is dropped.
A fixed share, ``heldout_sentences`` texts drawn with a fixed seed (independent of the run seed, so
every method, budget and seed is scored on the same texts), is held out for the MLM loss; the rest
trains. Only exact repeats are excluded: a training text that is a fragment of an evaluation
sentence (SST-2's training file holds phrases) is kept.

Masking (``mask_tokens``): BERT's rule (Devlin et al. 2019): of each sequence's non-special tokens,
``round(mask_prob * n)`` (at least 1) are chosen uniformly at random; of those 80% become ``[MASK]``,
10% a random token of the vocabulary, 10% stay; the loss is the cross-entropy on the chosen ones.
Training batches are masked afresh at every step (dynamic masking) by ``MaskedLM``'s own generator;
the held-out set is masked once with a fixed seed, so its loss is comparable across steps and runs.

Model (``MaskedLM``): the configured encoder (``BertModel``, pooler included so the fine-tuning rows
start from the same pooler as every other row) and transformers' BERT MLM head
(``BertOnlyMLMHead``: dense + GELU + LayerNorm transform, then a decoder). The embedded MiniLM ships
no MLM head, so the decoder weight *is* the word-embedding matrix (tied, as in BERT) with its own
output bias, and the transform is freshly initialised (BERT's N(0, 0.02), LayerNorm 1/0, zero bias)
and trained with the rest. The head's logits are computed on the chosen positions only (the loss
needs no others): the 30,522-way decoder on every token would cost about half of MiniLM's forward.

Training loop: ``prunebench.training.trainer.train`` itself -- the same AdamW, linear warm-up/decay, gradient
clipping, precision and length-grouped batches as fine-tuning, and the same method hooks
(``prepare``, ``parameter_groups``, ``penalty``, ``after_step``, then ``finalize``); ``MaskedLM``
returns an object with ``.loss`` as the task models do, and the trainer's ``on_step`` hook
evaluates the held-out MLM loss at ``eval_points`` evenly spaced steps. Each evaluation records
(step, encoder weights remaining by ``prunebench.structure.budget``, held-out MLM loss); step 0 is the
unpruned start and a last point is taken after ``finalize`` (which may prune: magnitude's last top-k,
RPP's top-k, LayerDrop's layer removal), so the summary gives MLM loss against sparsity.

Output folder (``run_pretrain``): the pruned encoder as a normal checkpoint
(``prunebench.checkpoints.store.save_model`` of the ``BertModel``: zeros in place, removed layers removed,
a stock transformers folder that ``AutoModelForSequenceClassification.from_pretrained`` loads), the
MLM head beside it (``mlm_head.safetensors``, in ``checksums.json``) so ``load_mlm`` rebuilds the
whole MLM model, and ``pretrain.json``: corpus counts, settings, steps, the loss curve, the
(step, remaining, loss) points, throughput and provenance. The fine-tuning job of a
``*_pretrain`` row reads that file into its record (``details.method.pretrain``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from prunebench.checkpoints import store as checkpoints
from prunebench.checkpoints.pretrained import (
    TINY_CONFIG,
    TINY_RANDOM,
    ModelLoadError,
    _source,
    describe_model,
    load_tokenizer,
)
from prunebench.data.loading import DataConfig, load_task_data, task_data
from prunebench.data.tasks import get_task
from prunebench.method import registry
from prunebench.records import provenance
from prunebench.structure import budget as budget_lib
from prunebench.training.pretrain_settings import PretrainSettings
from prunebench.training.trainer import train

log = logging.getLogger("prunebench.training.pretrain")

#: Seed of the held-out draw and of the held-out masking: the same for every method, budget and seed.
CORPUS_SEED = 0
HEAD_FILE = "mlm_head.safetensors"
SUMMARY_FILE = "pretrain.json"
IGNORE = -100  # label of positions without a loss (as transformers)


# ----- corpus ------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """The key texts are deduplicated and excluded by: whitespace collapsed, case folded."""
    return " ".join(str(text).split()).casefold()


@dataclass
class Corpus:
    train: list[str]
    heldout: list[str]
    stats: dict[str, Any]


def _texts(ds, fields) -> list[str]:
    return [t for f in fields if f in ds.column_names for t in ds[f] if isinstance(t, str) and t.strip()]


def build_corpus(exp: dict[str, Any], settings: PretrainSettings) -> Corpus:
    """The MLM corpus: the corpus tasks' training texts, deduplicated, evaluation texts excluded, with a
    held-out part (module docstring). ``exp`` is the experiment (its ``data``, ``task_data`` and tasks)."""
    corpus_tasks = list(settings.corpus_tasks or exp["tasks"])
    exclude_tasks = list(dict.fromkeys(corpus_tasks + list(exp["tasks"])))
    loaded: dict[str, Any] = {}
    for task in exclude_tasks:
        data = {k: v for k, v in task_data(exp, task).items() if k != "eval_limit"}
        if task not in corpus_tasks:
            data.pop("train_limit", None)
        loaded[task] = load_task_data(get_task(task), DataConfig.from_dict(data))
    excluded: set[str] = set()
    eval_counts = {}
    for task, splits in loaded.items():
        texts = [
            t for name in splits if name.startswith("eval") for t in _texts(splits[name], get_task(task).text_fields)
        ]
        eval_counts[task] = len(texts)
        excluded.update(normalize_text(t) for t in texts)
    seen: set[str] = set()
    kept: list[str] = []
    raw = duplicates = dropped_eval = 0
    per_task = {}
    for task in corpus_tasks:
        texts = _texts(loaded[task]["train"], get_task(task).text_fields)
        raw += len(texts)
        before = len(kept)
        for text in texts:
            key = normalize_text(text)
            if key in excluded:
                dropped_eval += 1
            elif key in seen:
                duplicates += 1
            else:
                seen.add(key)
                kept.append(text)
        per_task[task] = {"train_texts": len(texts), "kept": len(kept) - before}
    order = list(range(len(kept)))
    random.Random(CORPUS_SEED).shuffle(order)
    n_held = min(settings.heldout_sentences, max(0, len(kept) - 1))
    heldout = [kept[i] for i in sorted(order[:n_held])]
    train_texts = [kept[i] for i in sorted(order[n_held:])]
    if settings.max_sentences is not None:
        train_texts = train_texts[: settings.max_sentences]
    if not train_texts:
        raise ValueError(
            f"pre-training corpus of tasks {corpus_tasks} is empty after deduplication and excluding evaluation texts"
        )
    stats = {
        "tasks": corpus_tasks,
        "excluded_eval_tasks": exclude_tasks,
        "raw_texts": raw,
        "duplicates_dropped": duplicates,
        "eval_texts_dropped": dropped_eval,
        "eval_texts_excluded": len(excluded),
        "eval_texts_per_task": eval_counts,
        "per_task": per_task,
        "unique_texts": len(kept),
        "heldout_texts": len(heldout),
        "train_texts": len(train_texts),
        "max_sentences": settings.max_sentences,
        "heldout_seed": CORPUS_SEED,
        "text_key": "whitespace-normalised, case-folded exact match",
    }
    return Corpus(train_texts, heldout, stats)


def tokenize_texts(texts: list[str], tokenizer, max_seq_len: int) -> datasets.Dataset:
    """One segment per text (``[CLS] text [SEP]``), unpadded, with ``length`` for the trainer's batches."""
    enc = tokenizer(texts, truncation=True, max_length=max_seq_len)
    columns = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
    columns["length"] = [len(ids) for ids in enc["input_ids"]]
    return datasets.Dataset.from_dict(columns)


# ----- masking -----------------------------------------------------------------------------------


def maskable_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor
) -> torch.Tensor:
    """True at real, non-special tokens ([CLS], [SEP] and padding are never predicted)."""
    return attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(input_ids.device))


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_prob: float,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: per row ``max(1, round(mask_prob * n))`` of the ``n`` maskable positions are chosen;
    80% of them become ``mask_id``, 10% a uniformly random token, 10% stay. Returns (inputs, labels) with
    labels ``-100`` where nothing is predicted. Draws on ``generator`` (CPU) only."""
    ids = input_ids.cpu()
    maskable = maskable.cpu()
    n = maskable.sum(dim=1)
    k = torch.where(n > 0, torch.clamp(torch.round(n.float() * mask_prob).long(), min=1), torch.zeros_like(n))
    scores = torch.rand(ids.shape, generator=generator)
    scores[~maskable] = 2.0  # never among the lowest k
    rank = scores.argsort(dim=1).argsort(dim=1)
    chosen = rank < k[:, None]
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    how = torch.rand(ids.shape, generator=generator)
    random_tokens = torch.randint(vocab_size, ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (how < 0.8)] = mask_id
    swap = chosen & (how >= 0.8) & (how < 0.9)
    inputs[swap] = random_tokens[swap]
    return inputs.to(input_ids.device), labels.to(input_ids.device)


# ----- the MLM model ------------------------------------------------------------------------------


@dataclass
class MLMOutput:
    loss: torch.Tensor
    predicted: int  # positions in the loss


class MaskedLM(nn.Module):
    """Encoder + BERT MLM head with the decoder tied to the word embeddings (module docstring).

    ``forward(input_ids, attention_mask, token_type_ids, labels=None)``: without ``labels`` (training)
    the batch is masked here with BERT's rule on the module's own generator; with ``labels`` (the
    held-out set, masked once) the inputs are used as given. Returns ``MLMOutput`` with ``.loss``, the
    mean cross-entropy over predicted positions. ``config`` and ``base_model`` are the encoder's, so
    ``prunebench.structure.budget``, ``prunebench.structure.surgery`` and every method see a BERT model.
    """

    def __init__(
        self,
        encoder: BertModel,
        mask_id: int,
        special_ids: list[int],
        mask_prob: float = 0.15,
        seed: int = 0,
        init_head: bool = True,
    ):
        super().__init__()
        self.bert = encoder
        self.cls = BertOnlyMLMHead(encoder.config)
        if init_head:
            self._init_head(encoder.config.initializer_range)
        self.tie_decoder()
        self.mask_id, self.mask_prob = int(mask_id), float(mask_prob)
        self.register_buffer("special_ids", torch.tensor(sorted(set(special_ids)), dtype=torch.long), persistent=False)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def config(self):
        return self.bert.config

    @property
    def base_model(self) -> BertModel:
        return self.bert

    @torch.no_grad()
    def _init_head(self, std: float) -> None:
        transform = self.cls.predictions.transform
        transform.dense.weight.normal_(0.0, std)
        transform.dense.bias.zero_()
        transform.LayerNorm.weight.fill_(1.0)
        transform.LayerNorm.bias.zero_()
        self.cls.predictions.bias.zero_()

    def tie_decoder(self) -> None:
        """Decoder weight = the word-embedding matrix; decoder bias = the head's output bias (as BERT)."""
        predictions = self.cls.predictions
        predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        predictions.decoder.bias = predictions.bias

    def head_state(self) -> dict[str, torch.Tensor]:
        """The head's own tensors (the tied decoder weight is the encoder's and is not repeated)."""
        p = self.cls.predictions
        state = {f"transform.{k}": v for k, v in p.transform.state_dict().items()}
        state["bias"] = p.bias.detach()
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    @torch.no_grad()
    def load_head_state(self, state: dict[str, torch.Tensor]) -> None:
        p = self.cls.predictions
        p.transform.load_state_dict(
            {k[len("transform.") :]: v for k, v in state.items() if k.startswith("transform.")}, strict=True
        )
        p.bias.copy_(state["bias"])

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **_):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if labels is None:
            maskable = maskable_positions(input_ids, attention_mask, self.special_ids)
            input_ids, labels = mask_tokens(
                input_ids, maskable, self.mask_prob, self.mask_id, self.config.vocab_size, self.generator
            )
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
        chosen = labels != IGNORE
        logits = self.cls(hidden[chosen])
        loss = nn.functional.cross_entropy(logits.float(), labels[chosen])
        return MLMOutput(loss, int(chosen.sum()))


def load_encoder(model: str, seed: int) -> BertModel:
    """The encoder the stage starts from: the embedded MiniLM, the tiny random BERT (seeded, as the
    fine-tuning jobs build it), a hub id or a local folder; pooler included."""
    torch.manual_seed(seed)
    if model == TINY_RANDOM:
        vocab = load_tokenizer(model).vocab_size
        return BertModel(BertConfig(vocab_size=vocab, **TINY_CONFIG))
    try:
        return BertModel.from_pretrained(_source(model))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load model {model!r} as a BERT encoder for pre-training: {type(exc).__name__}: {exc}"
        ) from exc


def build_mlm(model: str, tokenizer, seed: int, mask_prob: float = 0.15) -> MaskedLM:
    encoder = load_encoder(model, seed)
    torch.manual_seed(seed)
    return MaskedLM(encoder, tokenizer.mask_token_id, tokenizer.all_special_ids, mask_prob, seed)


def load_mlm(folder: str | Path, tokenizer=None) -> MaskedLM:
    """Rebuild the whole MLM model of a stage output folder (encoder via ``checkpoints.load_model``)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    encoder = checkpoints.load_model(folder)
    tokenizer = tokenizer or load_tokenizer(str(folder))
    mlm = MaskedLM(encoder, tokenizer.mask_token_id, tokenizer.all_special_ids, init_head=False)
    mlm.load_head_state(load_file(str(folder / HEAD_FILE)))
    return mlm.eval()


def read_summary(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise checkpoints.CheckpointError(
            f"pre-training output {folder} is incomplete: {SUMMARY_FILE} is missing"
        ) from exc


# ----- held-out loss ------------------------------------------------------------------------------


def heldout_batches(
    texts: list[str], tokenizer, max_seq_len: int, batch_size: int, mask_prob: float, seed: int = CORPUS_SEED
) -> list[dict[str, torch.Tensor]]:
    """The held-out texts tokenized, padded and masked once (fixed seed): the same positions every time."""
    generator = torch.Generator().manual_seed(seed)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=max_seq_len,
            padding=True,
            return_tensors="pt",
        )
        maskable = maskable_positions(enc["input_ids"], enc["attention_mask"], special)
        inputs, labels = mask_tokens(
            enc["input_ids"], maskable, mask_prob, tokenizer.mask_token_id, tokenizer.vocab_size, generator
        )
        batch = {k: v for k, v in enc.items() if k in ("attention_mask", "token_type_ids")}
        batch.update(input_ids=inputs, labels=labels)
        out.append(batch)
    return out


@torch.no_grad()
def mlm_loss(model: MaskedLM, batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean cross-entropy per predicted token over the held-out batches (eval mode: no dropout, no LayerDrop)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        out = model(**{k: v.to(device) for k, v in batch.items()})
        total += float(out.loss) * out.predicted
        count += out.predicted
    model.train(was_training)
    return total / count if count else float("nan")


# ----- the stage ----------------------------------------------------------------------------------


def stage_method_of(row: str) -> tuple[str, type]:
    """(stage method, its row class) for a ``*_pretrain`` row, or for a plain registered method."""

    cls = registry.get(row)
    return (getattr(cls, "stage_method", None) or row), cls


def run_pretrain(
    exp: dict[str, Any], method_name: str, target: float, seed: int, out_dir: Path, threads: int | None = None
) -> dict[str, Any]:
    """MLM training of ``exp['model']`` with ``method_name``'s stage method at ``target``; saves the pruned
    encoder, its MLM head and ``pretrain.json`` in ``out_dir`` and returns the summary."""

    start = time.perf_counter()
    threads = threads or exp.get("threads", {}).get("train") or 1
    torch.set_num_threads(threads)
    settings = PretrainSettings.from_dict(exp["pretrain"])
    stage, row_cls = stage_method_of(method_name)
    stage_settings = (settings.method_settings or {}).get(stage, {})
    method = registry.build(stage, target, stage_settings)
    tokenizer = load_tokenizer(exp["model"])
    corpus = build_corpus(exp, settings)
    dataset = tokenize_texts(corpus.train, tokenizer, settings.max_seq_len)
    heldout = heldout_batches(
        corpus.heldout, tokenizer, settings.max_seq_len, settings.eval_batch_size, settings.mask_prob
    )
    log.info("corpus: %d training texts, %d held out (%s)", len(corpus.train), len(corpus.heldout), corpus.stats)
    model = build_mlm(exp["model"], tokenizer, seed, settings.mask_prob)
    points = [
        {
            "step": 0,
            "remaining": budget_lib.remaining_fraction(model),
            "mlm_loss": mlm_loss(model, heldout),
            "stage": "start",
        }
    ]
    eval_steps = set(settings.eval_steps())

    def on_step(m, step):
        if step in eval_steps:
            points.append(
                {
                    "step": step,
                    "remaining": budget_lib.remaining_fraction(m),
                    "mlm_loss": mlm_loss(m, heldout),
                    "stage": "training",
                }
            )
            log.info(
                "step %d: remaining %.4f, held-out MLM loss %.4f", step, points[-1]["remaining"], points[-1]["mlm_loss"]
            )

    method.note_run(
        {"model": exp["model"], "task": "mlm-pretraining", "steps": settings.steps, "batch_size": settings.batch_size}
    )
    result = train(
        model,
        dataset,
        tokenizer,
        settings.trainer_budget(),
        method,
        seed,
        log_every=max(1, settings.steps // 10),
        on_step=on_step,
    )
    model = method.finalize(model)
    count = budget_lib.count_encoder_weights(model)
    points.append(
        {
            "step": settings.steps,
            "remaining": count.remaining_fraction,
            "mlm_loss": mlm_loss(model, heldout),
            "stage": "after finalize",
        }
    )
    out_dir = Path(out_dir)
    checkpoints.save_model(model.bert, tokenizer, out_dir)
    _save_head(model, out_dir)
    summary = {
        "row": method_name,
        "stage_method": stage,
        "paper": getattr(row_cls, "paper", ""),
        "budget": float(target),
        "seed": int(seed),
        "model": describe_model(exp["model"]),
        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k != "method_settings"},
        "stage_settings": dict(stage_settings),
        "method": method.describe(),
        "corpus": corpus.stats,
        "points": points,
        "final": {
            "remaining": count.remaining_fraction,
            "mlm_loss": points[-1]["mlm_loss"],
            "mlm_loss_start": points[0]["mlm_loss"],
            "encoder_nonzero_weights": count.nonzero,
            "encoder_stored_fraction": count.stored_fraction,
        },
        "training": {
            "steps": result.steps,
            "loss_curve": result.loss_curve,
            "threads": threads,
            "precision": result.precision,
            "cpu_capability": result.cpu_capability,
            "train_examples": result.examples,
            "train_wall_time_s": round(result.wall_time_s, 3),
            "steps_per_s": round(result.steps_per_s, 4),
            "examples_per_s": round(result.examples_per_s, 3),
        },
        "head": "BERT MLM head (transformers BertOnlyMLMHead): decoder tied to the word embeddings, transform freshly "
        "initialised (N(0, initializer_range)) and trained",
        "wall_time_s": round(time.perf_counter() - start, 3),
        "provenance": provenance.collect(time.perf_counter() - start),
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, sort_keys=True, default=_jsonable) + "\n")
    log.info(
        "%s (stage %s) budget %s seed %s: remaining %.4f, held-out MLM loss %.4f -> %.4f",
        method_name,
        stage,
        target,
        seed,
        count.remaining_fraction,
        points[0]["mlm_loss"],
        points[-1]["mlm_loss"],
    )
    return summary


def _jsonable(value):
    if isinstance(value, (torch.Tensor,)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _save_head(model: MaskedLM, out_dir: Path) -> None:
    from safetensors.torch import save_file

    save_file(model.head_state(), str(out_dir / HEAD_FILE))
    sums_path = out_dir / checkpoints.CHECKSUMS
    sums = json.loads(sums_path.read_text())
    sums[HEAD_FILE] = checkpoints.sha256(out_dir / HEAD_FILE)
    sums_path.write_text(json.dumps(sums, indent=1))


def summary_for_record(summary: dict[str, Any]) -> dict[str, Any]:
    """What a fine-tuning record carries of its pre-training stage (``details.method.pretrain``)."""
    keep = ("row", "stage_method", "budget", "seed", "settings", "stage_settings", "corpus", "points", "final")
    out = {k: summary.get(k) for k in keep}
    training = summary.get("training") or {}
    out["training"] = {
        k: training.get(k) for k in ("steps", "loss_curve", "precision", "train_wall_time_s", "steps_per_s")
    }
    method = summary.get("method") or {}
    out["method"] = {
        k: method[k] for k in ("name", "settings", "remaining_before_finalize", "layers", "gamma_used") if k in method
    }
    return out
