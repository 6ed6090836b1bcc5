"""Pruning methods, one module per surveyed paper, behind one interface (``methods.base``).

Where is ...?
- magnitude pruning (global, matrix-local, one-shot) and the random floor: ``methods/magnitude.py``
- attention-head pruning by importance (Michel et al. 2019) and its random/magnitude controls: ``methods/head_importance.py``
- LayerDrop (Fan et al. 2019) and plain every-other layer pruning: ``methods/layerdrop.py``
- int8 dynamic quantization, the Q8BERT-style comparison row: ``methods/quantization.py``
- L0 head gates (Voita et al. 2019): ``methods/head_l0.py`` (gates: ``prunebench/hard_concrete.py``)
- FLOP factorized low-rank pruning (Wang et al. 2019): ``methods/flop.py`` (layers: ``prunebench/factorized.py``)
- fixed position-only attention patterns (Raganato et al. 2020): ``methods/fixed_attention.py``
- movement pruning, hard and soft (Sanh et al. 2020): ``methods/movement.py``
- reweighted proximal pruning (Guo et al. 2019): ``methods/rpp.py``
- random pruning with matched per-matrix proportions (Blalock et al. 2020): ``methods/random_matched.py``
- beyond the survey: Wanda (Sun et al. 2023) ``methods/wanda.py``, SparseGPT (Frantar & Alistarh 2023)
  ``methods/sparsegpt.py``, oBERT (Kurtic et al. 2022) ``methods/obert.py``, 2:4 semi-structured
  magnitude pruning and the one-shot fixed-mask scaffold ``methods/semi_structured.py``
  (calibration batches of the training split: ``prunebench/calibration.py``)
- Q8BERT quantization-aware fine-tuning, 8-bit fake quantization with EMA ranges (Zafrir et al. 2019), then int8:
  ``methods/q8bert.py`` (fake quantization, EMA observer, STE: ``prunebench/fake_quant.py``)
- Quant-Noise, scalar int8 and int4 quantization noise (Fan et al. 2020): ``methods/quant_noise.py``
  (int4 packed storage: ``prunebench/int4.py``)
- Q-BERT, Hessian-sensitivity mixed-precision (8/4-bit) group-wise quantization-aware fine-tuning (Shen et al.
  2020): ``methods/qbert.py`` (power iteration on Hessian-vector products: ``prunebench/hessian.py``; mixed
  int8 / int4 storage: ``prunebench/mixed.py``)
- compressed during pre-training, then fine-tuned with the mask kept (Gordon et al. 2020, RPP, LayerDrop):
  ``methods/pretrain_stage.py`` (the MLM pre-training stage: ``prunebench/pretrain.py``)

A new method is one new module plus one import line below.
"""

from methods import magnitude  # noqa: F401  (registers the magnitude and random methods)
from methods import quantization  # noqa: F401  (registers int8_dynamic)
from methods import head_importance  # noqa: F401  (registers head_importance, head_random, head_magnitude)
from methods import layerdrop  # noqa: F401  (registers layerdrop, layer_prune)
from methods import head_l0  # noqa: F401  (registers head_l0)
from methods import flop  # noqa: F401  (registers flop)
from methods import fixed_attention  # noqa: F401  (registers fixed_attention)
from methods import movement  # noqa: F401  (registers movement_hard, movement_soft)
from methods import rpp  # noqa: F401  (registers rpp)
from methods import random_matched  # noqa: F401  (registers random_matched)
from methods import semi_structured  # noqa: F401  (registers magnitude_2to4)
from methods import wanda  # noqa: F401  (registers wanda, wanda_oneshot)
from methods import sparsegpt  # noqa: F401  (registers sparsegpt)
from methods import obert  # noqa: F401  (registers obert)
from methods import torch_pruning_peer  # noqa: F401  (registers torch_pruning: Torch-Pruning/DepGraph peer row)
from methods import q8bert  # noqa: F401  (registers q8bert)
from methods import quant_noise  # noqa: F401  (registers quant_noise, quant_noise_int4)
from methods import qbert  # noqa: F401  (registers qbert)
from methods import pretrain_stage  # noqa: F401  (registers gordon_pretrain, rpp_pretrain, layerdrop_pretrain)
from methods.base import PruningMethod, TrainingPlan
from methods.registry import available, build, get, register

__all__ = ["PruningMethod", "TrainingPlan", "available", "build", "get", "register"]
