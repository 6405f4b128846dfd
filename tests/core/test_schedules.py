"""Sparsity schedules: the Zhu & Gupta polynomial, constant, and the steps where masks update."""

from __future__ import annotations

import pytest

from slimkit.recipe import Schedule
from slimkit.schedules import is_update_step, sparsity_at, step_range


def zhu_gupta(step, target, initial, begin_step, end_step, power):
    """s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** power for t0 <= t <= t_end."""
    t = min(max(step, begin_step), end_step)
    return target + (initial - target) * (1.0 - (t - begin_step) / (end_step - begin_step)) ** power


POLY = Schedule(kind="polynomial", begin=0.1, end=0.9, every=10, initial=0.1, power=3.0)
TOTAL = 100  # begin at step 10, end at step 90


def test_step_range_is_fractions_of_total_steps():
    assert step_range(POLY, TOTAL) == (10, 90)
    assert step_range(Schedule(begin=0.0, end=1.0), 37) == (1, 37)  # steps are 1-based


@pytest.mark.parametrize("step", [10, 11, 30, 50, 77, 89, 90])
def test_polynomial_matches_closed_form(step):
    assert sparsity_at(POLY, 0.8, step, TOTAL) == pytest.approx(zhu_gupta(step, 0.8, 0.1, 10, 90, 3.0),
                                                                abs=1e-12)


def test_polynomial_landmarks():
    assert sparsity_at(POLY, 0.8, 10, TOTAL) == pytest.approx(0.1)          # begin: initial
    assert sparsity_at(POLY, 0.8, 50, TOTAL) == pytest.approx(0.8 - 0.7 / 8)  # halfway: (1/2)^3 left
    assert sparsity_at(POLY, 0.8, 90, TOTAL) == 0.8                         # end: exactly the target
    assert sparsity_at(POLY, 0.8, 100, TOTAL) == 0.8                        # after end: stays


@pytest.mark.parametrize("power", [1.0, 2.0, 5.0])
def test_polynomial_power(power):
    sched = Schedule(begin=0.0, end=0.5, power=power)
    begin, end = step_range(sched, 200)
    for step in (begin, 40, 70, end):
        assert sparsity_at(sched, 0.9, step, 200) == pytest.approx(zhu_gupta(step, 0.9, 0.0, begin, end, power))


def test_polynomial_is_monotone_non_decreasing():
    values = [sparsity_at(POLY, 0.8, s, TOTAL) for s in range(1, TOTAL + 1)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_nothing_is_pruned_before_begin():
    assert [sparsity_at(POLY, 0.8, s, TOTAL) for s in (1, 5, 9)] == [0.0, 0.0, 0.0]
    constant = Schedule(kind="constant", begin=0.5, end=0.5)
    assert sparsity_at(constant, 0.7, 49, TOTAL) == 0.0


def test_constant_is_the_target_from_begin_on():
    constant = Schedule(kind="constant", begin=0.2, end=0.6, initial=0.1)
    assert [sparsity_at(constant, 0.7, s, TOTAL) for s in (20, 21, 60, 100)] == [0.7] * 4


def test_polynomial_update_steps():
    updates = [s for s in range(1, TOTAL + 1) if is_update_step(POLY, s, TOTAL)]
    assert updates == list(range(10, 91, 10))


def test_update_steps_include_end_when_every_does_not_divide():
    sched = Schedule(begin=0.1, end=0.9, every=7)
    updates = [s for s in range(1, TOTAL + 1) if is_update_step(sched, s, TOTAL)]
    assert updates == list(range(10, 90, 7)) + [90]
    assert not any(is_update_step(sched, s, TOTAL) for s in range(91, TOTAL + 50))


def test_constant_updates_only_at_begin():
    sched = Schedule(kind="constant", begin=0.25, end=0.75, every=5)
    assert [s for s in range(1, TOTAL + 1) if is_update_step(sched, s, TOTAL)] == [25]


def test_begin_equal_end_jumps_to_target_once():
    sched = Schedule(begin=0.5, end=0.5, every=3, initial=0.2)
    assert [s for s in range(1, TOTAL + 1) if is_update_step(sched, s, TOTAL)] == [50]
    assert sparsity_at(sched, 0.6, 49, TOTAL) == 0.0
    assert sparsity_at(sched, 0.6, 50, TOTAL) == 0.6
    assert sparsity_at(sched, 0.6, 80, TOTAL) == 0.6


def test_short_training_still_reaches_the_target_at_the_last_step():
    # 3 steps, begin 0.0 -> step 1, end 0.8 -> step 2: updates at 1 and 2, the target at 2.
    sched = Schedule(begin=0.0, end=0.8, every=10)
    assert step_range(sched, 3) == (1, 2)
    assert [s for s in (1, 2, 3) if is_update_step(sched, s, 3)] == [1, 2]
    assert sparsity_at(sched, 0.5, 2, 3) == 0.5
