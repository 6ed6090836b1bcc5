"""The one measurement path, shared by every run.

Where is ...?
- task accuracy (through ``evaluate``):           ``measure/accuracy.py``
- theoretical FLOPs per example:                  ``measure/flops.py``
- bytes on disk (dense and sparse-encoded):       ``measure/disk.py``
- peak memory during inference:                   ``measure/memory.py``
- latency and speed-up over dense (same job):     ``measure/latency.py``
- the same in ONNX Runtime (export, check, time): ``measure/onnx_runtime.py``
- remaining encoder weights:                      ``prunebench/structure/budget.py``
"""
