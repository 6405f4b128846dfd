"""``minmax``: the running minimum and maximum, per tensor or per channel."""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.plugins import NoOptions
from slimkit.quant.observers.base import OBSERVERS, Range
from slimkit.quant.params import QuantParams, params_from_range


@OBSERVERS.register("minmax", NoOptions)
class MinMaxObserver:
    """Running minimum and maximum.

    Args:
        axis: Channel axis for per-channel ranges (reduce over every other axis); None for
            per-tensor.
    """

    #: the range over all batches is the range of the batches' ranges: batching does not change it
    batch_invariant = True
    #: update() keeps nothing of its batch (subclasses keep histograms): calibration may hand it a view
    #: of the framework's buffer instead of a copy
    keeps_batches = False

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

    def merge(self, collective: Any, what: str) -> None:
        """Makes this observer the one a single process would have after every rank's batches: the
        range of the ranks' ranges (exact). A rank that observed nothing contributes nothing.

        Args:
            collective: a :class:`slimkit.adapter.collective.Collective`.
            what: the feature, for error messages.
        """
        lo = np.float32(np.inf) if self._min is None else self._min
        hi = np.float32(-np.inf) if self._max is None else self._max
        lo = collective.all_reduce(np.asarray(lo, np.float32), "min", what)
        hi = collective.all_reduce(np.asarray(hi, np.float32), "max", what)
        if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
            self._min, self._max = np.asarray(lo, np.float32), np.asarray(hi, np.float32)

    def params(self, **kwargs: Any) -> QuantParams:
        """``params_from_range(*self.range(), axis=self.axis, **kwargs)``."""
        return params_from_range(*self.range(), axis=self.axis, **kwargs)

    @classmethod
    def build(cls, options: Any, settings: Any) -> "MinMaxObserver":
        """An observer for one activation tensor (per tensor)."""
        return cls()
