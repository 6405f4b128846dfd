"""``strategy: basic``, Intel Neural Compressor's accuracy-driven loop: every layer int8 first; then the
layers most sensitive to quantization kept float one by one until the target is met; then the
calibration and granularity alternatives of the search space, each with one float layer fewer."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterator

from slimkit.errors import RecipeError
from slimkit.recipe import QuantizeStage
from slimkit.tune.space import FLOAT, Candidate
from slimkit.tune.strategies.base import STRATEGIES
from slimkit.tune.strategies.stepwise import Stepwise


@dataclass(frozen=True)
class BasicOptions:
    """Options of ``strategy: basic``.

    Attributes:
        alternatives: after the fallback, try the space's calibration, percentile and granularity choices.
    """

    alternatives: bool = True


@STRATEGIES.register("basic", BasicOptions)
class Basic(Stepwise):
    """Fallback in sensitivity order (the per-layer output error and metric drop of int8 alone)."""

    @classmethod
    def check(cls, tune: Any, stages: tuple[Any, ...], path: str) -> None:
        if not any(isinstance(s, QuantizeStage) for s in stages):
            raise RecipeError(f"{path}.strategy: basic tunes a quantize stage (layers kept float, calibration); "
                              "the recipe has none: use strategy sensitivity, optuna or annealing for pruning")
        if not tune.space.float_layers:
            raise RecipeError(f"{path}.space.float_layers: strategy basic keeps sensitive layers float; it needs "
                              "float_layers: true")

    def order(self) -> list[str]:
        """Layers of the space's float dimensions, most sensitive to int8 first."""
        layers = [name[len(FLOAT):] for name in self.space.names(FLOAT)]
        ranked = [name for name in self.ctx.sensitivity().quant_order(8) if name in layers]
        return ranked + [name for name in layers if name not in ranked]

    def make(self, floated: list[str], extra: dict[str, Any] | None = None) -> Candidate:
        values = {FLOAT + name: True for name in floated}
        return self.space.make({**values, **(extra or {})})

    def plan(self) -> Iterator[Candidate]:
        yield self.make([])
        compression_goal = self.ctx.goal.tune.goal == "compression"
        if self.ok() and compression_goal:
            return  # every layer int8 met the tolerance: nothing is more compressed
        floated: list[str] = []
        best: list[str] | None = [] if self.ok() else None
        for name in self.order():
            floated = floated + [name]
            yield self.make(floated)
            if self.ok():
                best = list(floated)
                if compression_goal:
                    break
            elif not compression_goal and best is not None:
                break  # keeping more float only grows size and latency past the budget
        if not self.options.alternatives:
            return
        floated = best if best is not None else floated
        for extra in self.alternatives():
            count = len(floated) - 1 if compression_goal and floated else len(floated)
            yield self.make(floated[:count], extra)
            if self.ok() and compression_goal:
                floated = floated[:count]

    def alternatives(self) -> Iterator[dict[str, Any]]:
        dims = [d for d in self.space.dims if d.name in ("calibration", "percentile", "per_channel")]
        for combo in itertools.product(*[d.choices for d in dims]):
            values = dict(zip([d.name for d in dims], combo))
            if any(values[d.name] != d.base for d in dims):
                yield values
