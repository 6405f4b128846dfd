"""Order-free summaries of a tensor's values: what export needs to find an activation site in the ONNX graph.

Export finds each activation site among the exported graph's tensors by its values on a couple of
inputs (:mod:`slimkit.deploy.mapping`). It needs, per site, only the values' size, extremes, mean and
root mean square, so calibration can take them in the passes it runs anyway (on the first inputs) and
export does not run the float model again for them: a forward pass fewer, and no site tensor held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Size, extremes, sum and sum of squares (float64) of a tensor's values, in any layout.

    Two tensors whose sorted values differ by at most ``b`` everywhere (the same multiset up to round-off,
    whatever the layout) have extremes, means and RMS within ``b`` of each other (the RMS by Minkowski's
    inequality), so comparing these never rejects a tensor that an element-wise comparison of the sorted
    values accepts; it costs a few passes over the values instead of a sort. Summaries of disjoint parts
    (rows of a batch read in different passes) :meth:`merge` into the summary of the whole.
    """

    size: int
    low: float
    high: float
    total: float
    squares: float

    @classmethod
    def of(cls, values: np.ndarray) -> "Moments":
        """The summary of ``values`` (any shape; read as float32, summed in float64)."""
        a = np.asarray(values, dtype=np.float32).ravel()
        if not a.size:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        wide = a.astype(np.float64)
        # einsum, not a BLAS dot: BLAS threads would contend with the framework's own during a pass
        return cls(int(a.size), float(a.min()), float(a.max()), float(wide.sum()), float(np.einsum("i,i->", wide, wide)))

    def merge(self, other: "Moments") -> "Moments":
        """The summary of both tensors' values together."""
        if not other.size:
            return self
        if not self.size:
            return other
        return Moments(self.size + other.size, min(self.low, other.low), max(self.high, other.high),
                       self.total + other.total, self.squares + other.squares)

    @property
    def mean(self) -> float:
        return self.total / self.size if self.size else 0.0

    @property
    def rms(self) -> float:
        return math.sqrt(max(self.squares, 0.0) / self.size) if self.size else 0.0

    @property
    def max_abs(self) -> float:
        return max(abs(self.low), abs(self.high)) if self.size else 0.0

    def close_to(self, other: "Moments", tolerance: float) -> bool:
        """Sizes equal and extremes, mean and RMS within ``tolerance`` x max(1, max |value|) of ``other``'s."""
        if self.size != other.size:
            return False
        bound = tolerance * max(1.0, other.max_abs)
        return all(abs(a - b) <= bound for a, b in ((self.low, other.low), (self.high, other.high),
                                                      (self.mean, other.mean), (self.rms, other.rms)))


def summaries(values: "dict[str, np.ndarray | Moments]") -> dict[str, Moments]:
    """Each tensor's :class:`Moments` (arrays are summarised, summaries kept)."""
    return {name: v if isinstance(v, Moments) else Moments.of(v) for name, v in values.items()}


def first_rows(values: np.ndarray, rows: int) -> Moments:
    """The summary of the first ``rows`` entries of ``values``' batch axis (axis 0)."""
    a = np.asarray(values)
    return Moments.of(a if a.ndim == 0 or rows >= a.shape[0] else a[:max(0, rows)])
