"""``strategy: optuna``: a search over the space's dimensions with an Optuna sampler (TPE by default).

Each dimension is a categorical parameter. The recipe's own settings are the first trial and the float
model (every layer float, nothing pruned) the second (both enqueued),
the score the goal's (compression within the tolerance, or the metric within the budget) is maximised,
and the tolerance and budget are constraints (the sum of the violations, <= 0 when met) that TPE
reads through ``constraints_func``. Every trial's record is kept in the trial's user attributes, so a
study in shared storage (``tune.storage``: ``sqlite:///study.db``, a journal file, or any Optuna RDB
URL) carries the whole log and every process reads the same best.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from slimkit.errors import RecipeError
from slimkit.plugins import bounded
from slimkit.tune.log import TrialRecord
from slimkit.tune.space import Candidate
from slimkit.tune.strategies.base import STRATEGIES, Strategy

RECORD_KEY = "slimkit_record"
SAMPLERS = ("tpe", "random")


@dataclass(frozen=True)
class OptunaOptions:
    """Options of ``strategy: optuna``.

    Attributes:
        sampler: ``tpe`` (default) or ``random``.
        startup_trials: TPE's random trials before it models the space.
    """

    sampler: str = "tpe"
    startup_trials: int = bounded(5, 1, 10_000)


def open_storage(url: str | None, field: str = "tune.storage") -> Any:
    """An Optuna storage: None -> in memory; a URL with ``://`` -> an RDB storage (``sqlite:///f.db``,
    ``postgresql://...``); anything else -> a journal file at that path.

    Raises:
        RecipeError: the storage cannot be opened; the message names the field and the URL.
    """
    import optuna

    if url is None:
        return optuna.storages.InMemoryStorage()
    for attempt in range(5):
        try:
            if "://" in url:
                return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(url))
        except Exception as exc:  # sqlalchemy, driver and file errors alike: the user's URL is at fault
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            racing = ("already exists", "UNIQUE constraint", "database is locked")
            if any(r in text for r in racing) and attempt < 4:
                # workers started together race to create the schema; the loser finds it made: open again
                time.sleep(0.5 * (attempt + 1))
                continue
            raise RecipeError(f"{field}: cannot open the Optuna storage {url!r}: {text[:300]}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _engine_kwargs(url: str) -> dict[str, Any]:
    # several processes share one SQLite file: wait for the lock instead of failing at once
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


@STRATEGIES.register("optuna", OptunaOptions)
class OptunaSearch(Strategy):
    """Ask/tell over an Optuna study."""

    uses_storage = True

    @classmethod
    def check(cls, tune: Any, stages: tuple[Any, ...], path: str) -> None:
        if tune.options.sampler not in SAMPLERS:
            raise RecipeError(f"{path}.sampler: {tune.options.sampler!r} is not one of {', '.join(SAMPLERS)}")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # slimkit prints its own progress
        options: OptunaOptions = self.options
        if options.sampler == "random":
            sampler = optuna.samplers.RandomSampler(seed=self.ctx.seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=self.ctx.seed, n_startup_trials=options.startup_trials,
                                                 constraints_func=_constraints)
        storage = open_storage(self.ctx.storage)
        name = self.ctx.study or "slimkit"
        try:
            self.study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                             sampler=sampler, load_if_exists=True)
        except Exception as exc:
            raise RecipeError(f"tune.storage: cannot create or load study {name!r} in {self.ctx.storage!r}: "
                              f"{str(exc)[:300]}") from exc
        if not self.study.trials:
            # the recipe as written, then the float model itself (every layer float, nothing pruned): a
            # tolerance always has a trial that meets it, and the search starts from what the user chose
            self.study.enqueue_trial(dict(self.space.base()), skip_if_exists=True)
            self.study.enqueue_trial(dict(self.space.safest()), skip_if_exists=True)
        self.trial: Any = None
        self.mine: set[int] = set()

    def propose(self) -> Candidate | None:
        self.trial = self.study.ask()
        self.mine.add(self.trial.number)
        return tuple((d.name, self.trial.suggest_categorical(d.name, list(d.choices))) for d in self.space.dims)

    def trial_number(self, local: int) -> int:
        return self.trial.number if self.trial is not None else local

    def observe(self, candidate: Candidate, record: TrialRecord) -> None:
        import optuna

        self.trial.set_user_attr(RECORD_KEY, record.to_dict())
        if record.error is not None:
            self.study.tell(self.trial, state=optuna.trial.TrialState.FAIL)
        else:
            violation = sum(min(v, 1e6) for v in record.violations.values())
            self.trial.set_user_attr("constraint", [violation])
            self.study.tell(self.trial, self.ctx.goal.score(record))
        self.trial = None

    def abandon(self, candidate: Candidate) -> None:
        import optuna

        if self.trial is not None:
            self.study.tell(self.trial, state=optuna.trial.TrialState.FAIL)
            self.trial = None

    def trials_done(self) -> int | None:
        import optuna

        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL)
        return len(self.study.get_trials(deepcopy=False, states=states))

    def shared_records(self) -> list[TrialRecord]:
        out = []
        for trial in self.study.get_trials(deepcopy=False):
            raw = trial.user_attrs.get(RECORD_KEY)
            if raw is not None and trial.number not in self.mine:
                out.append(TrialRecord.from_dict(raw))
        return out


def _constraints(trial: Any) -> list[float]:
    return list(trial.user_attrs.get("constraint", [0.0]))
