"""What every gradual pruner shares: following its stage's schedule over the fine-tuning steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slimkit.pruning.methods import Pruner
from slimkit.pruning.ratios import Target, schedule_ramp
from slimkit.schedules import is_update_step

if TYPE_CHECKING:
    from slimkit.recipe import PruneStage


class ScheduledPruner(Pruner):
    """Calls :meth:`update` with the schedule's ramp on each of its update steps: every layer follows the
    schedule's shape to its own final sparsity.

    Subclasses set ``stage`` and implement ``update``; ``total_steps`` is what the training loop
    announced in ``begin``.
    """

    stage: "PruneStage"
    total_steps: int = 0

    def update(self, target: Target) -> None:
        """Prunes to ``target`` (masks only: training continues)."""
        raise NotImplementedError

    def begin(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def step_end(self, step: int) -> None:
        total = max(1, self.total_steps)
        if is_update_step(self.stage.schedule, step, total):
            self.update(schedule_ramp(self.stage.schedule, step, total))
