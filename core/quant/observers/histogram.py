"""The histogram the clipping observers (percentile, entropy, MSE) share: fixed size, re-binned as
the range grows, so memory stays bounded over any number of calibration batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slimkit.plugins import bounded
from slimkit.quant.observers.base import Range, _finite_flat
from slimkit.quant.observers.minmax import MinMaxObserver


@dataclass(frozen=True)
class HistogramOptions:
    """``bins`` of the histogram a clipping rule is chosen from."""

    bins: int = bounded(2048, 16)


class HistogramObserver(MinMaxObserver):
    """Per-tensor histogram with ``bins`` bins, over ``|x|`` (``absolute``) or over ``[min, max]``.

    When a batch exceeds the current range, the edges are widened to cover it and the old counts
    are re-binned into the new edges proportionally (each old bin's mass is spread uniformly over
    its width), so the total count is preserved. The plain ``range()`` is the observed min/max;
    subclasses override it with a clipping rule.

    Args:
        bins: Number of histogram bins.
        absolute: Histogram of ``|x|`` over ``[0, max|x|]`` instead of ``x`` over ``[min, max]``.
        axis: Must be None (per-tensor only).

    Raises:
        ValueError: If ``axis`` is not None or ``bins < 1``.
    """

    #: the bins are laid out from the first batch and widened by later ones: batching changes the result
    batch_invariant = False

    def __init__(self, bins: int = 2048, absolute: bool = True, axis: int | None = None) -> None:
        if axis is not None:
            raise ValueError(f"{type(self).__name__} is per-tensor only: axis must be None, got {axis}")
        if int(bins) < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        super().__init__(axis=None)
        self.bins = int(bins)
        self.absolute = absolute
        self.counts = np.zeros(self.bins, dtype=np.float64)
        self.lo = 0.0
        self.hi = 0.0
        self._seen = False

    @property
    def edges(self) -> np.ndarray:
        """``bins + 1`` bin edges over ``[lo, hi]``."""
        return np.linspace(self.lo, self.hi, self.bins + 1)

    @property
    def total(self) -> float:
        """Number of values observed (finite ones)."""
        return float(self.counts.sum())

    def _rebin(self, lo: float, hi: float) -> None:
        """Move the counts onto new edges over ``[lo, hi]`` (a superset of the current range)."""
        new_edges = np.linspace(lo, hi, self.bins + 1)
        if self.hi > self.lo:
            cum = np.concatenate([[0.0], np.cumsum(self.counts)])
            mass = np.interp(new_edges, self.edges, cum)
            counts = np.diff(mass)
        else:  # all mass sits at the single point lo == hi
            counts = np.zeros(self.bins)
            counts[self._bin_of(np.array([self.lo]), lo, hi)[0]] = self.counts.sum()
        self.counts, self.lo, self.hi = counts, lo, hi

    def _bin_of(self, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """Bin index of each value for edges over ``[lo, hi]`` (last bin closed)."""
        if hi <= lo:
            return np.zeros(v.shape, dtype=np.int64)
        idx = np.floor((v - lo) / (hi - lo) * self.bins).astype(np.int64)
        return np.clip(idx, 0, self.bins - 1)

    def update(self, x: Any) -> None:
        """Fold one batch into the running min/max and the histogram (non-finite values dropped)."""
        v = _finite_flat(x)
        if v.size == 0:
            return
        super().update(v)
        if self.absolute:
            v = np.abs(v)
        lo = 0.0 if self.absolute else float(v.min())
        hi = float(v.max())
        if not self._seen:
            self.lo, self.hi, self._seen = lo, hi, True
        elif lo < self.lo or hi > self.hi:
            self._rebin(min(lo, self.lo), max(hi, self.hi))
        self.counts += np.bincount(self._bin_of(v, self.lo, self.hi), minlength=self.bins)

    def merge(self, collective: Any, what: str) -> None:
        """Sums every rank's histogram over edges the ranks agree on first (the union of their
        ranges; each rank re-bins its counts onto them), so the result is within one bin of a single
        process's histogram over all the batches, whose edges grew batch by batch."""
        super().merge(collective, what)
        mine = np.array([self.lo, -self.hi] if self._seen else [np.inf, np.inf], np.float64)
        lo, neg_hi = collective.all_reduce(mine, "min", what)
        if not np.isfinite(lo):
            return  # no rank saw data
        if self._seen:
            if lo < self.lo or -neg_hi > self.hi:
                self._rebin(float(lo), float(-neg_hi))
        else:
            self.lo, self.hi = float(lo), float(-neg_hi)
        self.counts = np.asarray(collective.all_reduce(self.counts, "sum", what), np.float64)
        self._seen = True

    def _require_data(self) -> None:
        if not self._seen or self.total <= 0:
            raise ValueError(f"{type(self).__name__} observed no data: call update() before range()")

    def _quantile(self, fraction: float) -> float:
        """Value below which ``fraction`` of the mass lies, interpolated linearly within a bin."""
        cum = np.concatenate([[0.0], np.cumsum(self.counts)])
        return float(np.interp(fraction * cum[-1], cum, self.edges))

    def _symmetric_range(self, threshold: float) -> Range:
        """``(-t, t)``, or ``(0, t)`` when every observed value was >= 0."""
        lo = 0.0 if float(self._min) >= 0 else -threshold
        return np.array(lo, np.float32), np.array(threshold, np.float32)
