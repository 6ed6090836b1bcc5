"""Pruning methods, one module per surveyed paper, behind one interface (``methods.base``).

Where is ...?
- magnitude pruning (global, matrix-local, one-shot) and the random floor: ``methods/magnitude.py``

A new method is one new module plus one import line below.
"""

from methods import magnitude  # noqa: F401  (registers the magnitude and random methods)
from methods.base import PruningMethod, TrainingPlan
from methods.registry import available, build, get, register

__all__ = ["PruningMethod", "TrainingPlan", "available", "build", "get", "register"]
