"""prunebench: a reproducible benchmark of BERT weight-pruning methods.

The package is the core that every method and job uses; it never imports the method modules
(the top-level ``methods`` package) nor the job runner. Subpackages by concern:

- ``config``          -- the experiment configuration: profiles, overrides, validation (one module)
- ``data/``           -- tasks, loading their splits (local files or the hub), SQuAD, metrics, data checks
- ``method/``         -- the interface every pruning method implements and the registry of names
- ``training/``       -- the one fine-tuning loop, sparsity schedules, calibration batches, MLM pre-training
- ``structure/``      -- the budget definition, masks, model surgery, factorized layers, hard-concrete
                         gates, fixed attention heads
- ``quantization/``   -- fake quantization, int8 / int4 / mixed storage and kernels, Hessian eigenvalues
- ``checkpoints/``    -- the pretrained starting model, saving and reloading, storage formats, portable export
- ``measure/``        -- the one measurement path: accuracy, FLOPs, bytes on disk, memory, latency, backends
- ``records/``        -- the result record (schema, validation, atomic writing) and its provenance
- ``analysis/``       -- analyses of fine-tuned models that are not pruning runs (head ablation)
- ``report/``         -- leaderboards, statistics, figures, the survey table and the HTML report, from records
- ``runner/``         -- the job runner: the command line each Snakemake rule calls, and the jobs behind it

Import direction: ``runner`` -> ``methods`` -> the core; the core never imports ``methods`` or
``runner`` (an import-linter contract in ``pyproject.toml``, checked by ``tests/test_architecture.py``).
"""

__version__ = "0.1.0"
