"""Sparsity schedules, as plain functions of the training step.

``cubic_remaining`` is the gradual pruning schedule of Zhu & Gupta 2017 ("To prune, or not
to prune", Eq. 1), written for the fraction *remaining* r = 1 - s:

    r_t = r_f + (r_i - r_f) * (1 - (t - t_0) / (n * dt))^3      for t_0 <= t <= t_0 + n*dt

with the warm-up (t_0) and cool-down phases of Sanh et al. 2020 (Sec. 4): the model keeps
r_i for the first ``warmup_steps`` and holds r_f for the last ``cooldown_steps``. Pruning
fast early, when redundant weights are plentiful, and slowly near the target.
"""

from __future__ import annotations


def cubic_remaining(
    step: int,
    total_steps: int,
    final_remaining: float,
    initial_remaining: float = 1.0,
    warmup_steps: int = 0,
    cooldown_steps: int = 0,
) -> float:
    """Fraction of weights remaining at ``step`` under the cubic schedule."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps < 0 or cooldown_steps < 0 or warmup_steps + cooldown_steps >= total_steps:
        raise ValueError(
            f"warm-up ({warmup_steps}) and cool-down ({cooldown_steps}) steps must be >= 0 and leave room "
            f"for pruning within {total_steps} steps"
        )
    if step <= warmup_steps:
        return initial_remaining
    ramp = total_steps - warmup_steps - cooldown_steps
    progress = min(1.0, (step - warmup_steps) / ramp)
    return final_remaining + (initial_remaining - final_remaining) * (1.0 - progress) ** 3
