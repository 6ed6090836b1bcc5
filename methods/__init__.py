"""Pruning methods, one module per surveyed paper, behind one interface (``methods.base``).

Where is ...?
- magnitude pruning (global, matrix-local, one-shot) and the random floor: ``methods/magnitude.py``
- attention-head pruning by importance (Michel et al. 2019) and its random/magnitude controls: ``methods/head_importance.py``
- LayerDrop (Fan et al. 2019) and plain every-other layer pruning: ``methods/layerdrop.py``
- int8 dynamic quantization, the Q8BERT-style comparison row: ``methods/quantization.py``

A new method is one new module plus one import line below.
"""

from methods import magnitude  # noqa: F401  (registers the magnitude and random methods)
from methods import quantization  # noqa: F401  (registers int8_dynamic)
from methods import head_importance  # noqa: F401  (registers head_importance, head_random, head_magnitude)
from methods import layerdrop  # noqa: F401  (registers layerdrop, layer_prune)
from methods.base import PruningMethod, TrainingPlan
from methods.registry import available, build, get, register

__all__ = ["PruningMethod", "TrainingPlan", "available", "build", "get", "register"]
