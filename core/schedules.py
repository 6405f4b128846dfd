"""Sparsity schedules over fine-tuning steps, as plain functions of the step number."""

from __future__ import annotations

from slimkit.recipe import Schedule


def step_range(schedule: Schedule, total_steps: int) -> tuple[int, int]:
    """First and last step (1-based, inclusive) over which sparsity changes."""
    begin = max(1, int(round(schedule.begin * total_steps)))
    end = max(begin, int(round(schedule.end * total_steps)))
    return begin, end


def sparsity_at(schedule: Schedule, target: float, step: int, total_steps: int) -> float:
    """Sparsity the schedule asks for after optimizer step ``step``.

    Polynomial follows Zhu & Gupta (2017), as tensorflow-model-optimization does:
    ``s = target + (initial - target) * (1 - progress) ** power``. Constant is ``target`` from
    ``begin`` on. Before ``begin`` nothing is pruned.
    """
    begin, end = step_range(schedule, total_steps)
    if step < begin:
        return 0.0
    if schedule.kind == "constant":
        return target
    progress = 1.0 if end == begin else min(1.0, (step - begin) / (end - begin))
    return target + (schedule.initial - target) * (1.0 - progress) ** schedule.power


def is_update_step(schedule: Schedule, step: int, total_steps: int) -> bool:
    """True at steps where masks are recomputed: begin, every ``every`` steps until end, and end."""
    begin, end = step_range(schedule, total_steps)
    if step < begin or step > end:
        return False
    if schedule.kind == "constant":
        return step == begin
    return step == end or (step - begin) % schedule.every == 0


def target_step(schedule: Schedule, total_steps: int) -> int:
    """The first step at which the schedule asks for the full target: ``begin`` (constant) or ``end``."""
    begin, end = step_range(schedule, total_steps)
    return begin if schedule.kind == "constant" else end
