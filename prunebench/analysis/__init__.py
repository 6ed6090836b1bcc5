"""Analyses of fine-tuned models that are not pruning runs (e.g. head ablation).

Run them with ``python -m prunebench.analysis NAME ...`` (see ``prunebench/analysis/__main__.py``).
"""
