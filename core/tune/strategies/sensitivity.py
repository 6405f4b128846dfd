"""``strategy: sensitivity``: per-layer pruning ratios from the sensitivity curves, then NetAdapt-style
greedy steps.

The curves (each layer pruned alone, metric drop per ratio) predict what a ratio costs. The first trial
takes, layer by layer, the cheapest next ratio (predicted drop per weight removed) while the summed
predicted drop stays within the tolerance; then each step raises one layer's ratio by one notch,
cheapest first, keeping it when the trial still meets the target and freezing that layer when not
(NetAdapt, Yang et al. 2018, with measured trials instead of a lookup table). Quantization settings
stay the recipe's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from slimkit.errors import RecipeError
from slimkit.recipe import PruneStage
from slimkit.tune.space import SPARSITY, Candidate
from slimkit.tune.strategies.base import STRATEGIES
from slimkit.tune.strategies.stepwise import Stepwise


@dataclass(frozen=True)
class SensitivityOptions:
    """Options of ``strategy: sensitivity``.

    Attributes:
        jump: start from the allocation the curves predict, before single steps.
    """

    jump: bool = True


@STRATEGIES.register("sensitivity", SensitivityOptions)
class Sensitivity(Stepwise):
    """Greedy per-layer sparsity guided by the sensitivity curves."""

    @classmethod
    def check(cls, tune: Any, stages: tuple[Any, ...], path: str) -> None:
        if not any(isinstance(s, PruneStage) for s in stages):
            raise RecipeError(f"{path}.strategy: sensitivity sets per-layer pruning ratios; the recipe has no prune "
                              "stage (for quantization use strategy basic)")

    def setup(self) -> None:
        self.layers = [n[len(SPARSITY):] for n in self.space.names(SPARSITY)]
        self.choices = {n: self.space.dim(SPARSITY + n).choices for n in self.layers}
        analysis = self.ctx.sensitivity()
        self.curves = {n: dict(analysis.prune_curve(n)) for n in self.layers}

    def predicted(self, layer: str, ratio: float) -> float:
        """The metric drop the curve predicts for ``layer`` at ``ratio`` (linear between measured ratios)."""
        curve = self.curves.get(layer) or {}
        points = sorted([(0.0, 0.0)] + [(r, d) for r, d in curve.items() if d is not None])
        xs, ys = [p[0] for p in points], [max(0.0, p[1]) for p in points]
        return float(np.interp(ratio, xs, ys))

    def cost(self, layer: str, level: int) -> float:
        """Predicted drop per weight removed when ``layer`` moves from ``level`` to ``level + 1``."""
        r0, r1 = self.choices[layer][level], self.choices[layer][level + 1]
        weights = self.space.params.get(layer, 1) * (r1 - r0)
        return (self.predicted(layer, r1) - self.predicted(layer, r0)) / max(weights, 1e-9)

    def make(self, levels: dict[str, int]) -> Candidate:
        return self.space.make({SPARSITY + n: self.choices[n][lv] for n, lv in levels.items()})

    def allowance(self) -> float:
        """The metric drop the tolerance allows (inf without one)."""
        goal = self.ctx.goal
        floor = goal.floor()
        if floor is None or goal.baseline is None:
            return float("inf")
        return abs(goal.baseline - floor)

    def plan(self) -> Iterator[Candidate]:
        self.setup()
        levels = {n: 0 for n in self.layers}
        if self.options.jump:
            jump, spent = dict(levels), 0.0
            while True:
                movable = [n for n in self.layers if jump[n] + 1 < len(self.choices[n])]
                if not movable:
                    break
                layer = min(movable, key=lambda n: self.cost(n, jump[n]))
                extra = self.predicted(layer, self.choices[layer][jump[layer] + 1]) - \
                    self.predicted(layer, self.choices[layer][jump[layer]])
                if spent + extra > self.allowance():
                    break
                spent += extra
                jump[layer] += 1
            if jump != levels:
                yield self.make(jump)
                if self.ok():
                    levels = jump
        frozen: set[str] = set()
        while True:
            movable = [n for n in self.layers if n not in frozen and levels[n] + 1 < len(self.choices[n])]
            if not movable:
                return
            layer = min(movable, key=lambda n: self.cost(n, levels[n]))
            trial = {**levels, layer: levels[layer] + 1}
            yield self.make(trial)
            if self.ok():
                levels = trial
                if self.ctx.goal.tune.goal == "metric":
                    return  # the budget is met: more pruning only lowers the metric
            elif self.ctx.goal.tune.goal == "metric" and self.last is not None and self.last.error is None and \
                    "tolerance" not in self.last.violations:
                levels = trial  # still over budget, but closer: keep pruning toward it
            else:
                frozen.add(layer)
