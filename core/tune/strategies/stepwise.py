"""A strategy written as a generator: it yields candidates and reads each outcome from ``self.last``.

Sequential strategies (basic, sensitivity, annealing) read best this way: the plan is one loop, and the
runner still owns the clock, the count and Ctrl-C.
"""

from __future__ import annotations

from typing import Any, Iterator

from slimkit.tune.log import TrialRecord
from slimkit.tune.space import Candidate
from slimkit.tune.strategies.base import Strategy


class Stepwise(Strategy):
    """A strategy whose :meth:`plan` generator yields candidates; ``self.last`` is the latest outcome."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.last: TrialRecord | None = None
        self.seen: dict[Candidate, TrialRecord] = {}
        self._plan: Iterator[Candidate] | None = None

    def plan(self) -> Iterator[Candidate]:
        raise NotImplementedError

    def propose(self) -> Candidate | None:
        if self._plan is None:
            self._plan = self.plan()
        for candidate in self._plan:
            if candidate in self.seen:  # tried already: its outcome stands, no trial is spent again
                self.last = self.seen[candidate]
                continue
            return candidate
        return None

    def observe(self, candidate: Candidate, record: TrialRecord) -> None:
        self.last = record
        self.seen[candidate] = record

    def ok(self) -> bool:
        """The last trial met the target."""
        return self.last is not None and self.last.feasible
