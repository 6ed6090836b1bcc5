"""Every saved model reloads; the sparse encoding is exact; corruption is detected by name."""

import pytest
import torch

import methods
from prunebench.checkpoints.store import SPARSE, WEIGHTS, CheckpointError, load_model, load_sparse, save_model
from prunebench.measure.disk import bytes_on_disk
from prunebench.method.base import TrainingPlan


def _outputs(model, tokenizer):
    batch = tokenizer(["a fine film", "dull and long"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture
def pruned(tiny_model):
    method = methods.build("magnitude_oneshot", 0.1)
    method.prepare(tiny_model, TrainingPlan(total_steps=1, seed=0))
    return method.finalize(tiny_model)


def test_pruned_model_saves_and_reloads_identically(pruned, tokenizer, tmp_path):
    save_model(pruned, tokenizer, tmp_path / "m")
    again = load_model(tmp_path / "m").eval()
    assert torch.equal(_outputs(pruned, tokenizer), _outputs(again, tokenizer))


def test_sparse_encoding_is_exact_and_smaller(pruned, tokenizer, tmp_path):
    save_model(pruned, tokenizer, tmp_path / "m")
    state = load_sparse(tmp_path / "m" / SPARSE)
    for name, tensor in pruned.state_dict().items():
        assert torch.equal(state[name], tensor), name
    sizes = bytes_on_disk(tmp_path / "m")
    assert sizes["sparse"] < sizes["dense"]


def test_csr_path_is_exact(tiny_model, tokenizer, tmp_path):
    # 2% remaining: CSR beats the bitmap and is chosen
    method = methods.build("magnitude_oneshot", 0.02)
    method.prepare(tiny_model, TrainingPlan(total_steps=1, seed=0))
    import json

    from safetensors import safe_open

    from prunebench.checkpoints.store import save_sparse

    save_sparse(tiny_model, tmp_path / "s.safetensors")
    with safe_open(str(tmp_path / "s.safetensors"), framework="pt") as fh:
        layout = json.loads(fh.metadata()["prunebench_sparse_layout"])
    assert {v["format"] for v in layout.values()} == {"csr"}
    state = load_sparse(tmp_path / "s.safetensors")
    assert all(torch.equal(state[n], t) for n, t in tiny_model.state_dict().items())


def test_truncated_checkpoint_is_detected(pruned, tokenizer, tmp_path):
    folder = save_model(pruned, tokenizer, tmp_path / "m")
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt or truncated"):
        load_model(folder)


def test_missing_checkpoint_is_detected(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        load_model(tmp_path / "nothing")
