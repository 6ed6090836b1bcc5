"""Compression during pre-training: the MLM stage (prunebench/training/pretrain.py) and the rows that
fine-tune its output with the mask kept (methods/pretrain_stage.py).

- the corpus is deduplicated and holds no text of any evaluation file;
- masking follows BERT: round(15%) of each sequence's real tokens, 80/10/10 [MASK]/random/kept;
- the MLM head's decoder is the word-embedding matrix;
- a tiny pre-training run with Gordon et al.'s gradual magnitude pruning reaches its budget, records
  MLM loss against sparsity and saves a model that reloads;
- a mask fixed during pre-training stays fixed during fine-tuning (gordon_pretrain through the shared trainer);
- LayerDrop's stage removes layers and the fine-tuning row keeps the shallower model;
- the workflow plans one pre-training job per (row, budget, seed) and hands it to the fine-tuning job.
"""

from __future__ import annotations

import json

import pytest
import torch

import methods
from prunebench.checkpoints import store as checkpoints
from prunebench.config import ConfigError, load_config_file, resolve
from prunebench.structure.budget import (
    count_encoder_weights,
    per_matrix_remaining,
    prunable_linears,
    remaining_fraction,
)
from prunebench.training.pretrain import (
    HEAD_FILE,
    SUMMARY_FILE,
    PretrainSettings,
    build_corpus,
    build_mlm,
    heldout_batches,
    load_mlm,
    mask_tokens,
    maskable_positions,
    mlm_loss,
    normalize_text,
    read_summary,
    run_pretrain,
)
from prunebench.training.trainer import FinetuneBudget, train
from tests.conftest import PRETRAIN_BUDGET, PRETRAIN_ROWS, REPO, records_under
from tests.test_profiles import _dry_run, _job_count

TINY_PRETRAIN = {
    "steps": 12,
    "batch_size": 8,
    "learning_rate": 2e-3,
    "max_seq_len": 32,
    "heldout_sentences": 32,
    "max_sentences": 400,
    "eval_points": 2,
    "precision": "fp32",
    "method_settings": {"magnitude_local": {"update_every": 2}, "layerdrop": {"rate": 0.5}},
}


def _smoke_experiment(monkeypatch, **pretrain) -> dict:
    """The smoke profile (tiny model, real SST-2 files, 300 training examples) with a tiny pretrain block."""
    monkeypatch.chdir(REPO)
    raw = load_config_file()
    raw.update(profile="smoke", data={"source": "local", "train_limit": 300, "eval_limit": 64})
    exp = resolve(raw)
    exp["pretrain"] = {**TINY_PRETRAIN, **pretrain}
    return exp


def _write_tsv(path, rows):
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{label}\n" for s, label in rows))
    return str(path)


# ----- corpus ------------------------------------------------------------------------------------


def test_corpus_is_deduplicated_and_excludes_every_evaluation_sentence(tmp_path):
    train_rows = [
        ("a fine film", 1),
        ("A  fine film ", 1),
        ("dull and long", 0),
        ("it 's charming .", 1),
        ("not bad at all", 1),
        ("dull and long", 0),
        ("warm and funny", 1),
        ("a mess", 0),
    ]
    eval_rows = [("It 's charming .", 1), ("a mess", 0), ("never seen in training", 1)]
    exp = {
        "tasks": ["sst2"],
        "data": {"source": "local"},
        "task_data": {
            "sst2": {
                "train": _write_tsv(tmp_path / "train.tsv", train_rows),
                "eval": _write_tsv(tmp_path / "dev.tsv", eval_rows),
            }
        },
    }
    corpus = build_corpus(exp, PretrainSettings(heldout_sentences=1))
    texts = corpus.train + corpus.heldout
    keys = [normalize_text(t) for t in texts]
    assert len(keys) == len(set(keys)), "deduplicated"
    assert not set(keys) & {normalize_text(s) for s, _ in eval_rows}, "no evaluation sentence in the corpus"
    assert sorted(keys) == ["a fine film", "dull and long", "not bad at all", "warm and funny"]
    assert len(corpus.heldout) == 1 and not set(corpus.heldout) & set(corpus.train)
    s = corpus.stats
    assert (s["raw_texts"], s["duplicates_dropped"], s["eval_texts_dropped"], s["unique_texts"]) == (8, 2, 2, 4)


def test_corpus_of_the_real_files_holds_no_dev_sentence(monkeypatch):
    exp = _smoke_experiment(monkeypatch)
    corpus = build_corpus(exp, PretrainSettings(heldout_sentences=16))
    from prunebench.data.loading import DataConfig, load_task_data
    from prunebench.data.tasks import get_task

    dev = load_task_data(
        get_task("sst2"),
        DataConfig(source="local", train=exp["task_data"]["sst2"]["train"], eval=exp["task_data"]["sst2"]["eval"]),
        eval_only=True,
    )["eval"]
    assert len(dev) == 872 and corpus.stats["eval_texts_excluded"] == 872  # the whole file, not the eval_limit
    dev_keys = {normalize_text(t) for t in dev["sentence"]}
    assert not dev_keys & {normalize_text(t) for t in corpus.train + corpus.heldout}
    assert corpus.stats["train_texts"] + corpus.stats["heldout_texts"] == corpus.stats["unique_texts"] <= 300


# ----- masking -----------------------------------------------------------------------------------


def test_masking_rate_and_80_10_10_on_a_seeded_draw():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (256, 100), generator=g)
    attention = torch.ones_like(ids)
    attention[:, 80:] = 0  # padding
    ids[:, 0], ids[:, 79] = 101, 102  # [CLS] ... [SEP]
    maskable = maskable_positions(ids, attention, torch.tensor([0, 101, 102, 103]))
    assert int(maskable.sum()) == 256 * 78
    inputs, labels = mask_tokens(ids, maskable, 0.15, 103, 30522, torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert (chosen.sum(dim=1) == round(0.15 * 78)).all(), "round(15%) of each sequence's real tokens"
    assert not (chosen & ~maskable).any(), "special tokens and padding are never chosen"
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    n = int(chosen.sum())
    masked = int((inputs[chosen] == 103).sum()) / n
    kept = int((inputs[chosen] == ids[chosen]).sum()) / n
    replaced = 1.0 - masked - kept
    assert abs(masked - 0.8) < 0.02 and abs(replaced - 0.1) < 0.015 and abs(kept - 0.1) < 0.015, (
        masked,
        replaced,
        kept,
    )
    again = mask_tokens(ids, maskable, 0.15, 103, 30522, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels), "seeded: the same draw"


# ----- model ---------------------------------------------------------------------------------------


def test_mlm_head_decoder_is_tied_to_the_word_embeddings(tokenizer):
    mlm = build_mlm("tiny-random", tokenizer, seed=0)
    decoder = mlm.cls.predictions.decoder
    assert decoder.weight is mlm.bert.embeddings.word_embeddings.weight
    assert decoder.bias is mlm.cls.predictions.bias
    names = [n for n, _ in mlm.named_parameters()]
    assert not any("decoder.weight" in n for n in names), "one parameter, counted once"
    transform = mlm.cls.predictions.transform.dense.weight
    assert 0.01 < float(transform.detach().std()) < 0.03  # freshly initialised as BERT (N(0, 0.02))
    linears = prunable_linears(mlm)  # the encoder's six matrices per layer; the head is not pruned
    assert remaining_fraction(mlm) == 1.0 and len(linears) == 6 * mlm.config.num_hidden_layers
    assert all(n.startswith("bert.encoder.layer.") for n in linears)
    batch = heldout_batches(["a fine film , warm and funny", "dull and long"], tokenizer, 16, 2, 0.15)
    before = mlm_loss(mlm, batch)
    with torch.no_grad():
        mlm.bert.embeddings.word_embeddings.weight.mul_(2.0)
    assert mlm_loss(mlm, batch) != pytest.approx(before), "the decoder reads the embedding matrix"


# ----- the stage -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gordon_stage(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        exp = _smoke_experiment(mp)
        out = tmp_path_factory.mktemp("pretrained") / "gordon_pretrain" / "0.5" / "seed0"
        summary = run_pretrain(exp, "gordon_pretrain", 0.5, 0, out, threads=1)
    finally:
        mp.undo()
    return out, summary


def test_tiny_pretraining_with_gordon_reaches_its_budget_and_records_loss_against_sparsity(gordon_stage):
    out, summary = gordon_stage
    assert summary["stage_method"] == "magnitude_local" and summary["row"] == "gordon_pretrain"
    assert summary["final"]["remaining"] == pytest.approx(0.5, abs=1e-3)
    points = summary["points"]
    assert [p["stage"] for p in points] == ["start", "training", "training", "after finalize"]
    assert [p["step"] for p in points] == [0, 6, 12, 12]
    assert points[0]["remaining"] == 1.0 and points[-1]["remaining"] == pytest.approx(0.5, abs=1e-3)
    assert all(p["mlm_loss"] > 0 for p in points)
    assert summary["training"]["steps"] == 12 and summary["corpus"]["train_texts"] > 0
    assert (out / SUMMARY_FILE).is_file() and json.loads((out / SUMMARY_FILE).read_text())["row"] == "gordon_pretrain"


def test_saved_pretrained_model_reloads_with_its_zeros(gordon_stage, tokenizer):
    out, summary = gordon_stage
    encoder = checkpoints.load_model(out)  # checksums verified, the MLM head file included
    assert "mlm_head.safetensors" in json.loads((out / checkpoints.CHECKSUMS).read_text())
    assert (out / HEAD_FILE).is_file() and checkpoints.portability(out) == "stock"
    assert count_encoder_weights(encoder).remaining_fraction == pytest.approx(0.5, abs=1e-3)
    assert all(v == pytest.approx(0.5, abs=0.01) for v in per_matrix_remaining(encoder).values()), "matrix-local"
    mlm = load_mlm(out, tokenizer)
    batch = heldout_batches(["a fine film , warm and funny", "dull and long", "not bad at all"], tokenizer, 16, 3, 0.15)
    assert mlm.cls.predictions.decoder.weight is mlm.bert.embeddings.word_embeddings.weight
    assert torch.isfinite(torch.tensor(mlm_loss(mlm, batch)))
    assert read_summary(out)["final"] == summary["final"]


def test_mask_fixed_during_pretraining_stays_fixed_during_finetuning(gordon_stage, tokenizer, sst2_small):
    from prunebench.checkpoints.pretrained import load_pretrained

    out, summary = gordon_stage
    model = load_pretrained(str(out), 2, seed=0, label_names=("negative", "positive"))
    start = {n: m.weight.detach().clone() for n, m in prunable_linears(model).items()}
    zeros = {n: w == 0 for n, w in start.items()}
    remaining = remaining_fraction(model)
    assert remaining == pytest.approx(0.5, abs=1e-3)
    method = methods.build("gordon_pretrain", 0.5)
    method.use_pretrain(summary)
    # a large learning rate: without the kept mask AdamW would move every zero
    budget = FinetuneBudget(steps=6, batch_size=8, learning_rate=5e-3, max_seq_len=64, freeze_embeddings=False)
    train(model, sst2_small["train"], tokenizer, budget, method, seed=0, log_every=1000)
    model = method.finalize(model)
    after = {n: m.weight.detach() for n, m in prunable_linears(model).items()}
    for name, was_zero in zeros.items():
        assert (after[name][was_zero] == 0).all(), f"{name}: a weight pruned in pre-training came back"
    assert remaining_fraction(model) == remaining, "the remaining fraction is the pre-training stage's"
    assert any(not torch.equal(after[n], start[n]) for n in start), "fine-tuning changed the kept weights"
    info = method.describe()
    assert info["starts_from"] == "pretrain" and info["stage_method"] == "magnitude_local"
    assert info["finetune_counterpart"] == "magnitude_local"
    assert info["remaining_before_finalize"] == pytest.approx(remaining)
    assert info["pretrain"]["points"][-1]["remaining"] == pytest.approx(0.5, abs=1e-3)


def test_layerdrop_stage_removes_layers_and_finetuning_keeps_the_shallow_model(
    monkeypatch, tmp_path, tokenizer, sst2_small
):
    from prunebench.checkpoints.pretrained import load_pretrained

    exp = _smoke_experiment(monkeypatch, steps=4, eval_points=1)
    summary = run_pretrain(exp, "layerdrop_pretrain", 0.5, 0, tmp_path, threads=1)
    assert summary["stage_method"] == "layerdrop" and summary["method"]["layers"]["kept"] == 1
    assert summary["method"]["layers"]["train_rate"] == 0.5  # pretrain.method_settings.layerdrop
    assert summary["points"][-2]["remaining"] == 1.0 and summary["points"][-1]["remaining"] == pytest.approx(0.5)
    model = load_pretrained(str(tmp_path), 2, seed=0, label_names=("negative", "positive"))
    assert len(model.base_model.encoder.layer) == 1 and remaining_fraction(model) == pytest.approx(0.5)
    method = methods.build("layerdrop_pretrain", 0.5)
    train(model, sst2_small["train"], tokenizer, FinetuneBudget(steps=2, batch_size=8, max_seq_len=64), method, seed=0)
    model = method.finalize(model)
    assert len(model.base_model.encoder.layer) == 1 and remaining_fraction(model) == pytest.approx(0.5)


# ----- configuration and workflow ------------------------------------------------------------------------


def test_rows_name_their_stage_method_and_counterpart():
    for row, stage in (
        ("gordon_pretrain", "magnitude_local"),
        ("rpp_pretrain", "rpp"),
        ("layerdrop_pretrain", "layerdrop"),
    ):
        cls = methods.get(row)
        assert cls.starts_from == "pretrain" and cls.stage_method == stage and cls.finetune_counterpart == stage
        assert stage in methods.available()


def test_a_pretrain_row_without_a_pretrain_block_is_a_config_error(monkeypatch):
    monkeypatch.chdir(REPO)
    raw = load_config_file()
    raw.update(profile="convergence", methods=["gordon_pretrain"])
    with pytest.raises(ConfigError, match="pretrain"):
        resolve(raw)
    raw.update(profile="smoke", pretrain={"steps": 0})
    with pytest.raises(ConfigError, match="pretrain"):
        resolve(raw)


def test_workflow_plans_one_pretraining_per_row_budget_and_seed(tmp_path):
    out = _dry_run(
        "--cores",
        "2",
        "--printshellcmds",
        "--config",
        "profile=smoke",
        "methods=[gordon_pretrain,rpp_pretrain,layerdrop_pretrain,magnitude_local]",
        f"results_dir={tmp_path}",
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert _job_count(text, "pretrain") == 3 * 2  # rows x budgets x seeds (one seed), shared by the task
    assert _job_count(text, "prune") == 4 * 2
    for row in ("gordon_pretrain", "rpp_pretrain", "layerdrop_pretrain"):
        for budget in ("0.5", "0.1"):
            folder = f"{tmp_path}/pretrained/{row}/{budget}/seed0"
            assert f"--out-dir {folder}" in text and f"--pretrained-dir {folder}" in text
    assert "--pretrained-dir" not in text.split("--method magnitude_local")[1].split("\n")[0]


# ----- report ------------------------------------------------------------------------------------------


def test_report_measures_the_pretrain_column_and_pairs_rows_with_their_finetuning_counterparts():
    from prunebench.report.collect import Row
    from prunebench.report.survey import load_survey, mlm_loss_points, pretrain_cell, pretrain_comparison

    points = [
        {"step": 0, "remaining": 1.0, "mlm_loss": 2.0, "stage": "start"},
        {"step": 40, "remaining": 0.5, "mlm_loss": 2.3, "stage": "after finalize"},
    ]
    staged = {
        "starts_from": "pretrain",
        "stage_method": "magnitude_local",
        "finetune_counterpart": "magnitude_local",
        "pretrain": {
            "stage_method": "magnitude_local",
            "training": {"steps": 40},
            "points": points,
            "final": {"remaining": 0.5, "mlm_loss": 2.3, "mlm_loss_start": 2.0},
        },
    }
    rows = [
        Row(
            "sst2",
            "gordon_pretrain",
            0.5,
            [0],
            "accuracy",
            {"accuracy": [0.80], "encoder_remaining": [0.5]},
            method_info=staged,
        ),
        Row(
            "sst2",
            "magnitude_local",
            0.5,
            [0],
            "accuracy",
            {"accuracy": [0.83], "encoder_remaining": [0.5]},
            method_info={"starts_from": "dense"},
        ),
        Row("sst2", "dense", 1.0, [0], "accuracy", {"accuracy": [0.85]}, method_info={}),
    ]
    (pair,) = pretrain_comparison(rows)
    assert (pair["row"], pair["counterpart"], pair["budget"]) == ("gordon_pretrain", "magnitude_local", 0.5)
    assert pair["delta_pts"] == pytest.approx(-3.0) and pair["dense_score"] == 0.85 and pair["missing"] is None
    assert pair["mlm_loss"] == 2.3 and pair["pretrain_steps"] == 40
    (curve,) = mlm_loss_points(rows)
    assert curve["row"] == "gordon_pretrain" and [p["remaining"] for p in curve["points"]] == [1.0, 0.5]
    gordon = next(p for p in load_survey()["papers"] if p["key"] == "gordon2020compressing")
    assert "gordon_pretrain" in gordon["methods"]
    cell = pretrain_cell(gordon, rows[:2], rows[2])
    assert cell.status == "agree" and cell.measured[0].startswith("yes: pruned during continued MLM pre-training")
    assert "gordon_pretrain @ 0.5" in cell.measured[0] and "2.00 → 2.30" in cell.measured[0]
    assert pretrain_cell(gordon, rows[1:2], rows[2]).status == "not-measured"  # fine-tuning rows only
    for key, row in (("guo2019reweighted", "rpp_pretrain"), ("fan2019reducing", "layerdrop_pretrain")):
        assert row in next(p for p in load_survey()["papers"] if p["key"] == key)["methods"]


@pytest.mark.workflow
def test_smoke_profile_runs_the_pretraining_rows_end_to_end(smoke_run):
    """The stage runs in the smoke profile on the tiny model, and its rows get records: the session's smoke
    run (tests/conftest.py) has the three rows at one budget beside the smoke methods
    (`--config profile=smoke "methods=[...]"` runs them at both smoke budgets)."""
    from prunebench.config import budget_label
    from prunebench.records.record import read_record

    results, budget = smoke_run.results, budget_label(PRETRAIN_BUDGET)
    assert budget == "0.5" and {(row, budget, 0) for row in PRETRAIN_ROWS} <= smoke_run.expected
    records = {
        (rec["method"], budget_label(rec["budget"]), rec["seed"]): rec
        for rec in map(read_record, records_under(results / "records"))
    }
    assert set(records) == smoke_run.expected  # dense, the smoke methods and the rows: every run has its record
    for row in PRETRAIN_ROWS:
        rec = records[(row, budget, 0)]
        pre = rec["details"]["method"]["pretrain"]
        assert (results / "pretrained" / row / budget / "seed0" / "pretrain.json").is_file()
        assert rec["metrics"]["encoder_remaining"]["value"] == pytest.approx(pre["final"]["remaining"], abs=1e-6)
        assert rec["metrics"]["encoder_remaining"]["value"] <= 0.5 + 0.005
        assert pre["points"][0]["step"] == 0 and pre["points"][-1]["stage"] == "after finalize"
    html = (results / "report.html").read_text()
    assert 'id="pretrain-vs-finetune"' in html and "yes: pruned during continued MLM pre-training" in html
