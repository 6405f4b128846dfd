"""What a tuning run optimises: feasibility of a trial against the tolerance and the budget, its score,
and which trial is best (or closest, when none is feasible)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimkit.tune.recipe import Tune


@dataclass(frozen=True)
class Goal:
    """The tolerance and budget of a run, with the baseline metric they are measured against.

    With a tolerance, the best trial is the most compressed one that meets it (and the budget); with a
    budget only, the one with the best metric that meets it. Ties go to the better metric, then to the
    more compressed model.

    Attributes:
        tune: the run's settings.
        metric_name: ``eval_fn``, ``accuracy`` or ``mse``.
        baseline: the float model's metric, measured as the trials' metrics are.
        higher_is_better: False for ``mse``.
    """

    tune: Tune
    metric_name: str | None
    baseline: float | None
    higher_is_better: bool = True

    def floor(self) -> float | None:
        """The worst metric the tolerance accepts (a ceiling for ``mse``), or None without a tolerance."""
        tol = self.tune.tolerance
        if tol is None or self.baseline is None:
            return None
        if tol.absolute is not None:
            margin = tol.absolute
        else:
            margin = abs(self.baseline) * (tol.relative or 0.0)
        return self.baseline - margin if self.higher_is_better else self.baseline + margin

    def violations(self, metric: float | None, measured: dict[str, float | None]) -> dict[str, float]:
        """How far each limit is exceeded, as a fraction of the limit (absent: met).

        ``measured`` holds the budget's units (``latency_ms``, ``size_mb``, ``macs``)."""
        out: dict[str, float] = {}
        floor = self.floor()
        if floor is not None:
            if metric is None:
                out["tolerance"] = float("inf")
            else:
                short = (floor - metric) if self.higher_is_better else (metric - floor)
                if short > 1e-12:
                    # relative to the baseline, or to the allowed margin where the baseline is near 0 (an
                    # error metric against the float model)
                    scale = max(abs(self.baseline or 0.0), abs((self.baseline or 0.0) - floor), 1e-12)
                    out["tolerance"] = short / scale
        if self.tune.budget is not None:
            for unit, limit in self.tune.budget.items():
                value = measured.get(unit)
                if value is None:
                    out[unit] = float("inf")
                elif value > limit:
                    out[unit] = value / limit - 1.0
        return out

    def signed(self, metric: float | None) -> float:
        """The metric with higher always better (-inf when missing)."""
        if metric is None:
            return float("-inf")
        return metric if self.higher_is_better else -metric

    def score(self, record: Any) -> float:
        """What the run maximises for a feasible trial: its compression, or its metric."""
        return record.compression if self.tune.goal == "compression" else self.signed(record.metric)

    def rank(self, record: Any) -> tuple[float, ...]:
        """Sort key, larger is better: feasible first, then score, then the other quantity; among
        infeasible trials the smallest total violation (the closest) first."""
        if record.error is not None:
            return (0.0, float("-inf"), float("-inf"), float("-inf"))
        if record.feasible:
            other = self.signed(record.metric) if self.tune.goal == "compression" else record.compression
            return (2.0, self.score(record), other, -record.number)
        return (1.0, -sum(record.violations.values()), self.score(record), -record.number)

    def describe(self) -> str:
        """The run's target in words, for messages: 'accuracy >= 0.9513 and size_mb <= 2'."""
        parts = []
        floor = self.floor()
        if floor is not None:
            parts.append(f"{self.metric_name} {'>=' if self.higher_is_better else '<='} {floor:.6g}")
        if self.tune.budget is not None:
            parts.extend(f"{unit} <= {limit:g}" for unit, limit in self.tune.budget.items())
        return " and ".join(parts)
