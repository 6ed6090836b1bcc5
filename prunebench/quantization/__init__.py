"""Quantization: fake quantization for training, and quantized storage and kernels for inference.

- ``fake_quant`` -- symmetric linear fake quantization, EMA range observer, straight-through estimator
- ``int8``       -- dynamic int8 encoder linears (PyTorch's quantized engine or ``torch._int_mm``), storage
- ``int4``       -- int4 weight-only encoder linears, two codes per byte on disk
- ``mixed``      -- mixed int8/int4 encoders with group-wise ranges
- ``hessian``    -- top Hessian eigenvalue per block by power iteration (Q-BERT's sensitivity)

``int8``, ``int4`` and ``mixed`` register their storage formats in ``prunebench.checkpoints.formats``.
"""
