"""``percentile``: clip at a percentile of |x| (symmetric) or of both tails of x (asymmetric);
the coverage is the recipe's ``activations.percentile``."""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.quant.observers.base import OBSERVERS, Range
from slimkit.quant.observers.histogram import HistogramObserver, HistogramOptions


@OBSERVERS.register("percentile", HistogramOptions)
class PercentileObserver(HistogramObserver):
    """Clip at a percentile: of ``|x|`` (symmetric) or of ``x`` on both tails (asymmetric).

    Args:
        percentile: Percentage of values kept, in (0, 100].
        symmetric: Percentile of ``|x|`` giving ``(-t, t)``; else ``(p_low, p_high)`` of ``x``.
        bins: Number of histogram bins.
        axis: Must be None.
    """

    def __init__(
        self, percentile: float = 99.99, symmetric: bool = True, bins: int = 2048, axis: int | None = None
    ) -> None:
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        super().__init__(bins=bins, absolute=symmetric, axis=axis)
        self.percentile = float(percentile)
        self.symmetric = symmetric

    def range(self) -> Range:
        """The percentile clipping range (see the class docstring)."""
        self._require_data()
        f = self.percentile / 100.0
        if self.symmetric:
            return self._symmetric_range(self._quantile(f))
        return np.array(self._quantile(1.0 - f), np.float32), np.array(self._quantile(f), np.float32)

    @classmethod
    def build(cls, options: HistogramOptions, settings: Any) -> "PercentileObserver":
        return cls(percentile=settings.percentile, symmetric=settings.symmetric, bins=options.bins)
