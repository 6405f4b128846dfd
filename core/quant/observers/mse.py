"""``mse``: the clipping threshold with the least expected fake-quantization error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slimkit.plugins import bounded
from slimkit.quant.observers.base import OBSERVERS, Range
from slimkit.quant.observers.histogram import HistogramObserver
from slimkit.quant.params import fake_quantize, params_from_range


@dataclass(frozen=True)
class MSEOptions:
    """``bins`` of the histogram; ``candidates`` thresholds tried."""

    bins: int = bounded(2048, 16)
    candidates: int = bounded(100, 2)


@OBSERVERS.register("mse", MSEOptions)
class MSEObserver(HistogramObserver):
    """Pick the clipping threshold minimizing the expected fake-quantization MSE.

    Candidates are ``num_candidates`` thresholds evenly spaced from ``max|x| / num_candidates`` to
    ``max|x|``; each is scored on the histogram (bin centers weighted by counts, fake-quantized with
    ``params_from_range``: signed symmetric, or unsigned asymmetric ``(0, t)`` for non-negative data).

    Args:
        bits: Quantized width.
        num_candidates: Number of thresholds tried.
        bins: Number of histogram bins.
        axis: Must be None.
    """

    def __init__(self, bits: int = 8, num_candidates: int = 100, bins: int = 2048, axis: int | None = None) -> None:
        super().__init__(bins=bins, absolute=True, axis=axis)
        self.bits = int(bits)
        self.num_candidates = int(num_candidates)

    def range(self) -> Range:
        """The MSE-optimal ``(-t, t)`` (or ``(0, t)``)."""
        self._require_data()
        if self.hi <= 0:
            return self._symmetric_range(0.0)
        edges = self.edges
        centers = (edges[:-1] + edges[1:]) / 2
        nonneg = float(self._min) >= 0
        best_t, best_err = self.hi, np.inf
        for t in np.linspace(self.hi / self.num_candidates, self.hi, self.num_candidates):
            if nonneg:
                p = params_from_range(0.0, t, bits=self.bits, signed=False, symmetric=False)
            else:
                p = params_from_range(-t, t, bits=self.bits, signed=True, symmetric=True)
            err = fake_quantize(centers, p).astype(np.float64) - centers
            score = float(np.dot(self.counts, err * err))
            if score < best_err:
                best_t, best_err = float(t), score
        return self._symmetric_range(best_t)

    @classmethod
    def build(cls, options: MSEOptions, settings: Any) -> "MSEObserver":
        return cls(bits=settings.bits, num_candidates=options.candidates, bins=options.bins)
