"""``entropy``: TensorRT's KL-divergence calibration on the |x| histogram."""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.quant.observers.base import OBSERVERS, Range
from slimkit.quant.observers.histogram import HistogramObserver, HistogramOptions


def _smooth(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Give zero bins mass ``eps`` taken evenly from the non-zero ones (TensorRT / MXNet)."""
    zeros = p == 0
    n_zeros = int(zeros.sum())
    n_nonzeros = p.size - n_zeros
    if n_nonzeros == 0:
        return np.full(p.shape, 1.0 / p.size)
    out = p + eps * zeros - (eps * n_zeros / n_nonzeros) * ~zeros
    return np.maximum(out, 1e-12)


def kl_threshold_index(hist: np.ndarray, num_quantized_bins: int = 128) -> int:
    """Index ``i`` minimizing KL(P || Q) for clipping ``hist`` after its first ``i`` bins.

    TensorRT's entropy calibration: for each ``i`` from ``num_quantized_bins`` to ``len(hist)``, P is
    ``hist[:i]`` with the outliers ``hist[i:]`` added to its last bin; Q is ``hist[:i]`` merged into
    ``num_quantized_bins`` bins and expanded back evenly over the non-zero bins of P. Both are
    smoothed so that zero bins do not give infinite divergence.

    Args:
        hist: Counts of a histogram of ``|x|`` starting at 0.
        num_quantized_bins: Number of quantized levels on one side (128 for 8 bits).

    Returns:
        The best ``i``; the threshold is the histogram's edge ``i``.
    """
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.size
    if n <= num_quantized_bins:
        return n
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = hist[i:].sum()
    best_i, best_kl = n, np.inf
    for i in range(num_quantized_bins, n + 1):
        sliced = hist[:i]
        p = sliced.copy()
        p[-1] += tail[i]
        nonzero = p != 0
        merged = i // num_quantized_bins
        starts = np.arange(num_quantized_bins) * merged
        q_bins = np.add.reduceat(sliced, starts)
        norms = np.add.reduceat(nonzero.astype(np.float64), starts)
        lengths = np.diff(np.append(starts, i))
        per = np.divide(q_bins, norms, out=np.zeros_like(q_bins), where=norms != 0)
        q = np.repeat(per, lengths) * nonzero
        ps, qs = p.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            continue
        p = _smooth(p / ps)
        q = _smooth(q / qs)
        p, q = p / p.sum(), q / q.sum()
        kl = float(np.sum(p * np.log(p / q)))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


@OBSERVERS.register("entropy", HistogramOptions)
class EntropyObserver(HistogramObserver):
    """TensorRT-style KL-divergence (entropy) calibration on the ``|x|`` histogram.

    Args:
        bits: Quantized width; ``2 ** (bits - 1)`` quantized bins (128 for 8 bits).
        bins: Number of histogram bins.
        axis: Must be None.
    """

    def __init__(self, bits: int = 8, bins: int = 2048, axis: int | None = None) -> None:
        super().__init__(bins=bins, absolute=True, axis=axis)
        self.bits = int(bits)

    def range(self) -> Range:
        """``(-t, t)`` (``(0, t)`` for non-negative data) with ``t`` the KL-optimal threshold."""
        self._require_data()
        i = kl_threshold_index(self.counts, 2 ** (self.bits - 1))
        return self._symmetric_range(float(self.edges[i]))

    @classmethod
    def build(cls, options: HistogramOptions, settings: Any) -> "EntropyObserver":
        return cls(bits=settings.bits, bins=options.bins)
