"""Range observers: accumulate statistics over calibration batches with bounded memory.

Every observer has ``update(x)`` (any array shape) and ``range() -> (min, max)`` float32 arrays,
which feed ``slimkit.quant.params.params_from_range``.

* ``MinMaxObserver``: running min/max, per-tensor or per-channel.
* ``HistogramObserver`` (per-tensor only): a fixed-size histogram, re-binned when the range grows,
  with three ways to pick a clipping range from it: ``PercentileObserver``, ``EntropyObserver``
  (TensorRT KL-divergence calibration) and ``MSEObserver``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.quant.params import fake_quantize, params_from_range, QuantParams

Range = tuple[np.ndarray, np.ndarray]


def _finite_flat(x: Any) -> np.ndarray:
    """``x`` flattened to float64 with non-finite values dropped."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    return flat[np.isfinite(flat)]


class MinMaxObserver:
    """Running minimum and maximum.

    Args:
        axis: Channel axis for per-channel ranges (reduce over every other axis); None for
            per-tensor.
    """

    def __init__(self, axis: int | None = None) -> None:
        self.axis = axis
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None

    def update(self, x: Any) -> None:
        """Fold one batch into the running range. Empty batches are ignored.

        Raises:
            ValueError: If the axis is out of range or the channel count changes between batches.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return
        if self.axis is None:
            lo, hi = np.min(x), np.max(x)
        else:
            if not -x.ndim <= self.axis < x.ndim:
                raise ValueError(f"axis {self.axis} out of range for a {x.ndim}-D batch")
            chans = np.moveaxis(x, self.axis, 0).reshape(x.shape[self.axis], -1)
            lo, hi = chans.min(axis=1), chans.max(axis=1)
            if self._min is not None and self._min.shape != lo.shape:
                raise ValueError(
                    f"channel count changed on axis {self.axis}: {self._min.shape[0]} then {lo.shape[0]}"
                )
        if self._min is None:
            self._min, self._max = np.array(lo, np.float32), np.array(hi, np.float32)
        else:
            self._min = np.minimum(self._min, lo).astype(np.float32)
            self._max = np.maximum(self._max, hi).astype(np.float32)

    def range(self) -> Range:
        """``(min, max)``: float32 arrays of shape ``()`` or ``(C,)``.

        Raises:
            ValueError: If no data was observed.
        """
        if self._min is None or self._max is None:
            raise ValueError(f"{type(self).__name__} observed no data: call update() before range()")
        return self._min.copy(), self._max.copy()

    def params(self, **kwargs: Any) -> QuantParams:
        """``params_from_range(*self.range(), axis=self.axis, **kwargs)``."""
        return params_from_range(*self.range(), axis=self.axis, **kwargs)


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


OBSERVERS = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
    "mse": MSEObserver,
}


def make_observer(name: str, axis: int | None = None, **kwargs: Any) -> MinMaxObserver:
    """Build an observer by name: ``minmax``, ``percentile``, ``entropy`` or ``mse``.

    Args:
        name: Observer name (case-insensitive).
        axis: Per-channel axis (``minmax`` only; the histogram observers reject a non-None axis).
        **kwargs: Passed to the observer's constructor.

    Raises:
        ValueError: For an unknown name, listing the valid ones.
    """
    key = str(name).lower()
    if key not in OBSERVERS:
        raise ValueError(f"unknown observer {name!r}; valid names: {', '.join(sorted(OBSERVERS))}")
    return OBSERVERS[key](axis=axis, **kwargs)
