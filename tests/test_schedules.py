import pytest

from prunebench.training.schedules import cubic_remaining


def test_cubic_schedule_endpoints_and_shape():
    kw = dict(total_steps=100, final_remaining=0.1, warmup_steps=10, cooldown_steps=20)
    assert cubic_remaining(0, **kw) == 1.0
    assert cubic_remaining(10, **kw) == 1.0
    assert cubic_remaining(80, **kw) == pytest.approx(0.1)
    assert cubic_remaining(100, **kw) == pytest.approx(0.1)
    # Zhu & Gupta Eq. 1 half-way through the ramp: r_f + (r_i - r_f)(1 - 1/2)^3
    assert cubic_remaining(45, **kw) == pytest.approx(0.1 + 0.9 * 0.125)
    values = [cubic_remaining(s, **kw) for s in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:])), "the schedule never un-prunes"
    # prunes fastest at the start of the ramp
    assert values[11] - values[12] > values[70] - values[71]


def test_schedule_rejects_impossible_phases():
    with pytest.raises(ValueError):
        cubic_remaining(5, total_steps=10, final_remaining=0.1, warmup_steps=6, cooldown_steps=4)
