"""Tasks and their data.

- ``tasks``   -- task specifications: hub location, columns, labels, metric, chance level
- ``loading`` -- a task's train and evaluation splits through ``datasets`` (local files or the hub)
- ``squad``   -- extractive question answering (SQuAD v1.1): features, labels, answer extraction
- ``metrics`` -- task metrics as ``evaluate`` modules (accuracy, F1, MCC, Pearson/Spearman, EM/F1)
- ``check``   -- every task's local data files checked before any job of a run starts
"""
