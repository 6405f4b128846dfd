"""The strategy plugin interface: a strategy proposes candidates and is told how each trial went.

A strategy is registered under its recipe name (``tune.strategy``) with a frozen options dataclass
whose fields are extra ``tune:`` keys. The runner owns the loop, the clock, the trial count and Ctrl-C;
a strategy only decides what to try next (ask/tell), so every strategy gets the same reuse, progress,
time limit and trial log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from slimkit.plugins import Registry
from slimkit.tune.log import TrialRecord
from slimkit.tune.objective import Goal
from slimkit.tune.space import Candidate, SearchSpace

STRATEGIES: Registry[type["Strategy"]] = Registry("tuning strategy", builtins=(
    "slimkit.tune.strategies.basic",
    "slimkit.tune.strategies.sensitivity",
    "slimkit.tune.strategies.optuna_search",
    "slimkit.tune.strategies.annealing",
))


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may use besides the space.

    Attributes:
        goal: feasibility and score of a trial.
        seed: the recipe's seed (every random choice derives from it).
        sensitivity: runs (once, then cached) the per-layer sensitivity analysis and returns it;
            its time is reported apart from the trials'.
        storage: ``tune.storage`` (Optuna strategies), ``study``: the study's name.
        max_trials: the run's trial limit.
    """

    goal: Goal
    seed: int
    sensitivity: Callable[[], Any]
    storage: str | None
    study: str | None
    max_trials: int


class Strategy:
    """Base class of tuning strategies.

    Attributes:
        uses_storage: it keeps its trials in an Optuna study (``tune.storage`` allowed).
    """

    uses_storage: ClassVar[bool] = False

    def __init__(self, options: Any, space: SearchSpace, ctx: StrategyContext) -> None:
        self.options = options
        self.space = space
        self.ctx = ctx

    @classmethod
    def check(cls, tune: Any, stages: tuple[Any, ...], path: str) -> None:
        """Refuses, at recipe parse time, settings this strategy cannot work with (RecipeError)."""

    def propose(self) -> Candidate | None:
        """The next candidate to try, or None when the strategy has nothing more to try."""
        raise NotImplementedError

    def observe(self, candidate: Candidate, record: TrialRecord) -> None:
        """The outcome of the last proposed candidate."""

    def trial_number(self, local: int) -> int:
        """The number of the trial just proposed: ``local`` (the runner's count) unless the strategy
        numbers trials itself (an Optuna study shared between processes)."""
        return local

    def abandon(self, candidate: Candidate) -> None:
        """The last proposed candidate was interrupted before it finished (Ctrl-C)."""

    def trials_done(self) -> int | None:
        """Trials counted against ``max_trials`` when they are shared with other processes (an Optuna
        study), else None (the runner counts its own)."""
        return None

    def shared_records(self) -> list[TrialRecord]:
        """Trials other processes ran in a shared study, to choose the best among all."""
        return []

    def close(self) -> None:
        """Releases what the strategy holds."""
