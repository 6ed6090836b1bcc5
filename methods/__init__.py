"""Pruning methods, one module per surveyed paper, behind one interface (``prunebench.method.base``).

Where is ...?
- magnitude pruning (global, matrix-local, one-shot) and the random floor: ``methods/magnitude.py``
- attention-head pruning by importance (Michel et al. 2019) and its random/magnitude controls:
  ``methods/head_importance.py``
- LayerDrop (Fan et al. 2019) and plain every-other layer pruning: ``methods/layerdrop.py``
- int8 dynamic quantization, the Q8BERT-style comparison row: ``methods/quantization.py``
- L0 head gates (Voita et al. 2019): ``methods/head_l0.py`` (gates: ``prunebench/structure/hard_concrete.py``)
- FLOP factorized low-rank pruning (Wang et al. 2019): ``methods/flop.py``
  (layers: ``prunebench/structure/factorized.py``)
- fixed position-only attention patterns (Raganato et al. 2020): ``methods/fixed_attention.py``
- movement pruning, hard and soft (Sanh et al. 2020), from the dense checkpoint and from the pretrained
  weights (the paper's setting): ``methods/movement.py``
- reweighted proximal pruning (Guo et al. 2019): ``methods/rpp.py``
- random pruning with matched per-matrix proportions (Blalock et al. 2020): ``methods/random_matched.py``
- beyond the survey: Wanda (Sun et al. 2023) ``methods/wanda.py``, SparseGPT (Frantar & Alistarh 2023)
  ``methods/sparsegpt.py``, oBERT (Kurtic et al. 2022) ``methods/obert.py``, 2:4 semi-structured
  magnitude pruning and the one-shot fixed-mask scaffold ``methods/semi_structured.py``
  (calibration batches of the training split: ``prunebench/training/calibration.py``)
- Q8BERT quantization-aware fine-tuning, 8-bit fake quantization with EMA ranges (Zafrir et al. 2019), then int8:
  ``methods/q8bert.py`` (fake quantization, EMA observer, STE: ``prunebench/quantization/fake_quant.py``)
- Quant-Noise, scalar int8 and int4 quantization noise (Fan et al. 2020): ``methods/quant_noise.py``
  (int4 packed storage: ``prunebench/quantization/int4.py``)
- Q-BERT, Hessian-sensitivity mixed-precision (8/4-bit) group-wise quantization-aware fine-tuning (Shen et al.
  2020): ``methods/qbert.py`` (power iteration on Hessian-vector products: ``prunebench/quantization/hessian.py``; mixed
  int8 / int4 storage: ``prunebench/quantization/mixed.py``)
- compressed during pre-training, then fine-tuned with the mask kept (Gordon et al. 2020, RPP, LayerDrop):
  ``methods/pretrain_stage.py`` (the MLM pre-training stage: ``prunebench/training/pretrain.py``)

A new method is one new module plus one import line below.
"""

from methods import (
    fixed_attention,  # noqa: F401  (registers fixed_attention)
    flop,  # noqa: F401  (registers flop)
    head_importance,  # noqa: F401  (registers head_importance, head_random, head_magnitude)
    head_l0,  # noqa: F401  (registers head_l0)
    layerdrop,  # noqa: F401  (registers layerdrop, layer_prune)
    magnitude,  # noqa: F401  (registers the magnitude and random methods)
    movement,  # noqa: F401  (registers movement_hard, movement_soft and their _pretrained rows)
    obert,  # noqa: F401  (registers obert)
    pretrain_stage,  # noqa: F401  (registers gordon_pretrain, rpp_pretrain, layerdrop_pretrain)
    q8bert,  # noqa: F401  (registers q8bert)
    qbert,  # noqa: F401  (registers qbert)
    quant_noise,  # noqa: F401  (registers quant_noise, quant_noise_int4)
    quantization,  # noqa: F401  (registers int8_dynamic)
    random_matched,  # noqa: F401  (registers random_matched)
    rpp,  # noqa: F401  (registers rpp)
    semi_structured,  # noqa: F401  (registers magnitude_2to4)
    sparse_int8,  # noqa: F401  (registers magnitude_global_int8, sparsegpt_int8, obert_int8)
    sparsegpt,  # noqa: F401  (registers sparsegpt)
    torch_pruning_peer,  # noqa: F401  (registers torch_pruning: Torch-Pruning/DepGraph peer row)
    wanda,  # noqa: F401  (registers wanda, wanda_oneshot)
)
from prunebench.method.base import PruningMethod, TrainingPlan
from prunebench.method.registry import available, build, get, register

__all__ = ["PruningMethod", "TrainingPlan", "available", "build", "get", "register"]
