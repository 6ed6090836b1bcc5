"""The job runner: what a Snakemake rule calls. It may import ``methods``; the core never imports it.

- ``cli``              -- ``python -m prunebench <command>``: one command per rule, known errors as one line
- ``jobs``             -- the train job (fine-tune, prune, evaluate) and the measure job (record)
- ``scheduler_timers`` -- keep Snakemake's scheduler idle while a measure job times latency
"""
