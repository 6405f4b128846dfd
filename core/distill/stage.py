"""The ``distill`` stage (fine-tuning on the distillation loss) and the teachers of one compress run."""

from __future__ import annotations

import time
from typing import Any

from slimkit.adapter import HookChain, ModelAdapter, TrainHooks
from slimkit.distill.teacher import Teacher, load_teacher
from slimkit.progress import ProgressPrinter
from slimkit.recipe import DistillStage
from slimkit.report import Report, StageRow


class Teachers:
    """The teachers of one :func:`slimkit.compress` run, each loaded once (a file named by several
    stages is read once).

    Args:
        given: ``compress(..., teacher=...)``.
        student_cls: the student's adapter class.
        recipe_file: the recipe's file, if it came from one (relative teacher files are looked up beside it).
    """

    def __init__(self, given: Any, student_cls: type, recipe_file: str | None) -> None:
        self.given, self.student_cls, self.recipe_file = given, student_cls, recipe_file
        self._loaded: dict[str | None, Teacher] = {}

    def get(self, spec: str | None, field: str) -> Teacher:
        """The teacher ``spec`` names (None: the one given to compress)."""
        if spec not in self._loaded:
            self._loaded[spec] = load_teacher(spec, self.given, self.student_cls, field, self.recipe_file)
        return self._loaded[spec]


class _Steps(TrainHooks):
    def __init__(self) -> None:
        self.steps = 0

    def step_end(self, step: int) -> None:
        self.steps = step


def run_distill_stage(work: ModelAdapter, stage: DistillStage, ctx: Any, report: Report) -> tuple[ModelAdapter, StageRow]:
    """Fine-tunes ``work`` (the student) on the distillation loss of ``stage``; ``ctx`` is the stage
    runner's context (data, fit function, teachers)."""
    start = time.perf_counter()
    field = f"stages[{ctx.index}].distill"
    spec = stage.distill
    objective = ctx.objective(spec, stage.fine_tune, field, work)
    steps = _Steps()
    hooks: list[TrainHooks] = [steps, ProgressPrinter(f"stage {ctx.index + 1}/{ctx.count} distill",
                                                      stage.fine_tune.epochs, enabled=ctx.verbose)]
    work.fit(ctx.train_data, stage.fine_tune, HookChain(*hooks), ctx.fit_fn, objective)
    hints = ", ".join(f"{h.student} -> {h.teacher}" + (
        f" (through a learned {h.projection.shape[1]}->{h.projection.shape[0]} projection, dropped from the model)"
        if h.projection is not None else "") for h in objective.hints)
    report.notes.append(f"{field}: distilled from the {objective.teacher.label} at temperature {spec.temperature:g}, "
                        f"alpha {spec.alpha:g}" + (f"; hints {hints}" if hints else "") + "; teacher outputs "
                        + ("computed once per training sample" if objective.cached else "computed per batch"))
    row = StageRow("distill", (), None, f"T={spec.temperature:g} alpha={spec.alpha:g}", True, steps.steps,
                   time.perf_counter() - start)
    return work, row
