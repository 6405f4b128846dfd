"""``strategy: annealing``: simulated annealing over the search space, as NNI's SimulatedAnnealing pruner
searches per-layer sparsities, here over every dimension (ratios, float layers, bits, calibration).

Optuna ships no simulated-annealing sampler (OptunaHub's would be downloaded at run time), so it is
slimkit's own: from the recipe's settings, each step perturbs a few dimensions to a neighbouring choice
and accepts the move with probability ``exp(-(E_new - E) / T)``; ``T`` cools by ``cooling`` per trial.
The energy is minus the goal's score, relative to the first trial's, plus ``penalty`` times the
fractions by which the tolerance and budget are missed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from slimkit.plugins import bounded
from slimkit.tune.log import TrialRecord
from slimkit.tune.space import Candidate
from slimkit.tune.strategies.base import STRATEGIES
from slimkit.tune.strategies.stepwise import Stepwise


@dataclass(frozen=True)
class AnnealingOptions:
    """Options of ``strategy: annealing``.

    Attributes:
        temperature: the starting temperature, in units of the relative score.
        cooling: the factor the temperature is multiplied by after each trial.
        perturbation: the share of dimensions changed per move (at least one).
        penalty: energy per unit of relative violation of the tolerance or budget.
    """

    temperature: float = bounded(0.5, 0.0, lo_open=True)
    cooling: float = bounded(0.85, 0.0, 1.0, lo_open=True, hi_open=True)
    perturbation: float = bounded(0.2, 0.0, 1.0, lo_open=True)
    penalty: float = bounded(10.0, 0.0)


@STRATEGIES.register("annealing", AnnealingOptions)
class Annealing(Stepwise):
    """Simulated annealing from the recipe's own settings."""

    def energy(self, record: TrialRecord, scale: float) -> float:
        if record.error is not None:
            return math.inf
        goal = self.ctx.goal
        violation = sum(min(v, 1e6) for v in record.violations.values())
        return -goal.score(record) / scale + self.options.penalty * violation

    def neighbour(self, current: Candidate, rng: np.random.Generator) -> Candidate:
        values = dict(current)
        dims = [d for d in self.space.dims if len(d.choices) > 1]
        count = max(1, int(round(self.options.perturbation * len(dims))))
        for index in rng.choice(len(dims), size=min(count, len(dims)), replace=False):
            dim = dims[int(index)]
            at = dim.choices.index(values[dim.name]) if values[dim.name] in dim.choices else 0
            step = int(rng.choice([-1, 1])) if 0 < at < len(dim.choices) - 1 else (1 if at == 0 else -1)
            values[dim.name] = dim.choices[at + step]
        return tuple(values.items())

    def plan(self) -> Iterator[Candidate]:
        rng = np.random.default_rng(self.ctx.seed)
        current = self.space.base()
        yield current
        first = self.last
        scale = abs(self.ctx.goal.score(first)) if first is not None and first.error is None else 1.0
        scale = scale if scale > 0 else 1.0
        energy = self.energy(first, scale) if first is not None else math.inf
        temperature = self.options.temperature
        stale = 0
        while stale < 50:  # every neighbour tried already: the search has converged
            candidate = self.neighbour(current, rng)
            if candidate in self.seen:
                stale += 1
            else:
                stale = 0
            yield candidate
            new = self.energy(self.last, scale)
            if new <= energy or (math.isfinite(new) and rng.random() < math.exp(-(new - energy) / temperature)):
                current, energy = candidate, new
            temperature *= self.options.cooling
