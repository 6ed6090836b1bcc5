"""Training: the one fine-tuning loop and what feeds it.

- ``trainer``     -- the fine-tuning loop every method uses (hooks of ``prunebench.method.base``), precision
- ``schedules``   -- sparsity schedules (cubic, Zhu & Gupta 2017)
- ``calibration`` -- calibration batches of the training split for one-shot and second-order methods
- ``pretrain``    -- the masked-language-model pre-training stage of the rows that compress during pre-training
"""
