"""Keep Snakemake's scheduler off the CPU while a measure job times latency.

Snakemake 9's job-rate limiter (``--max-jobs-per-timespan``, default ``100/1s``) ends every
scheduling pass by starting a ``threading.Timer`` that wakes the scheduler again one timespan later;
each wake-up is another pass, which starts another timer. Every finished job adds a pass, so the
chains of timers grow with the number of finished jobs and, late in a long run, the scheduler
re-evaluates the ready jobs hundreds of times a second and keeps one core busy (measured: 150
sleeping jobs run one at a time cost Snakemake 35 s of CPU in 50 s; ``benchmarks/scheduler_overhead.py``).
On a 2-core machine that core is taken from the measure job that is timing latency alone, which
made batch-size ratios of identical models range from 0.1 to 9 in an eight-task smoke run.

``profiles/default/config.yaml`` therefore sets a one-minute timespan (a limit of 1,000 jobs a
minute never binds locally), which cuts the wake-ups sixty-fold. The timers are not daemon threads,
so a finished run would still wait up to a minute for the last of them before the process exits;
:func:`stop_pending_timers`, called from the workflow's ``onsuccess``/``onerror`` handlers, cancels them.
"""

from __future__ import annotations

import threading


def stop_pending_timers() -> int:
    """Cancel every ``threading.Timer`` still waiting in this process; returns how many.

    Only for the end of a run: a cancelled timer's action never runs.
    """
    pending = [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]
    for timer in pending:
        timer.cancel()
    return len(pending)
