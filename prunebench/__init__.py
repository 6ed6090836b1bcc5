"""prunebench: a reproducible benchmark of BERT weight-pruning methods.

The shared machinery lives here (one module per job):

- ``config``      -- experiment configuration: profiles, overrides, validation
- ``tasks``       -- task specifications (columns, labels, metric) for SST-2, MNLI, QQP, QNLI, SQuAD
- ``data``        -- loading a task through ``datasets`` (hub by name, or local files)
- ``modeling``    -- loading the model (embedded default, hub id, local folder, tiny random)
- ``budget``      -- THE definition of "encoder weights remaining"
- ``schedules``   -- sparsity schedules (cubic, Zhu & Gupta 2017)
- ``trainer``     -- the one fine-tuning loop every method uses
- ``metrics``     -- task metrics as ``evaluate`` modules
- ``measure/``    -- the one measurement path: accuracy, FLOPs, bytes on disk, memory, latency
- ``records``     -- the result record: schema, validation, atomic writing
- ``checkpoints`` -- saving and reloading (dense and sparse-encoded) models
- ``cli``         -- the commands the Snakemake rules call

Pruning methods live in the top-level ``methods`` package, one module per paper.
"""

__version__ = "0.1.0"
