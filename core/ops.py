"""The tensor operations that algorithms written once in core ask of a framework.

Like ``keras.ops`` (one neutral API, one implementation per backend) and einops' backends, core code
-- the optimizers' update rules (``slimkit.optim``) and fake quantization (``slimkit.quant.fake_quant``)
-- is written against :class:`TensorOps`; each adapter implements it over its own tensors in a few
dozen lines, and :class:`NumpyOps` serves numpy (the reference, and the test fake). Arithmetic and
comparisons use Python operators, which every framework's tensors and variables support; only what
operators cannot express is here. ``axes`` arguments are tuples of axes or None (all axes).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class TensorOps(Protocol):
    """Operations on a framework's tensors (``Any`` below: the framework's tensor or variable type).

    Optional, read with ``getattr``: ``fake_quantize_frozen(x, scale, zero_point, qmin, qmax)``, a fused
    inference path of :func:`slimkit.quant.fake_quant.fake_quantize` giving the same values, or None where
    it does not apply (TorchOps: while autograd records); ``eager_flag(x)``, a one-element boolean tensor's
    value as a Python bool where it can be read at once (eager execution), else None."""

    # -- arithmetic the operators do not cover -------------------------------------------------------
    def sqrt(self, x: Any) -> Any:
        """Elementwise square root."""

    def abs(self, x: Any) -> Any:
        """Elementwise absolute value."""

    def tanh(self, x: Any) -> Any:
        """Elementwise hyperbolic tangent (DoReFa's weight transform)."""

    def round(self, x: Any) -> Any:
        """Round half to even (ONNX's and numpy's ``rint``)."""

    def clip(self, x: Any, lo: float, hi: float) -> Any:
        """``x`` limited to ``[lo, hi]``; the gradient is 0 outside."""

    def minimum(self, a: Any, b: Any) -> Any:
        """Elementwise minimum."""

    def maximum(self, a: Any, b: Any) -> Any:
        """Elementwise maximum."""

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        """``a`` where ``cond`` holds, else ``b`` (broadcasting)."""

    def isnan(self, x: Any) -> Any:
        """Elementwise NaN test."""

    def isfinite(self, x: Any) -> Any:
        """Elementwise finiteness test."""

    def logical_and(self, a: Any, b: Any) -> Any:
        """Elementwise and of two boolean tensors."""

    # -- reductions and shapes -----------------------------------------------------------------------
    def amin(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        """Minimum over ``axes``."""

    def amax(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        """Maximum over ``axes``."""

    def mean(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        """Mean over ``axes``."""

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        """``x`` with a new shape (one axis may be -1)."""

    def size(self, x: Any, axis: int | None = None) -> Any:
        """Number of elements of ``x`` (or of ``axis``) as a float32 scalar, known at run time."""

    # -- losses (distillation) -----------------------------------------------------------------------
    def exp(self, x: Any) -> Any:
        """Elementwise exponential."""

    def log(self, x: Any) -> Any:
        """Elementwise natural logarithm."""

    def sum(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        """Sum over ``axes`` (all axes when None)."""

    def mix_channels(self, x: Any, w: Any) -> Any:
        """``y[:, j, ...] = sum_i w[j, i] * x[:, i, ...]``: a learned 1x1 projection on axis 1."""

    # -- dtypes and constants ------------------------------------------------------------------------
    def cast(self, x: Any, dtype: str) -> Any:
        """``x`` as ``float32`` or ``float64``."""

    def full_like(self, x: Any, value: float) -> Any:
        """A tensor of ``x``'s shape and dtype filled with ``value``."""

    # -- autodiff and state --------------------------------------------------------------------------
    def stop_gradient(self, x: Any) -> Any:
        """``x``'s value with no gradient (straight-through estimators are built from it)."""

    def read(self, variable: Any) -> Any:
        """A variable's current value as a tensor that carries its gradient."""

    def across_replicas(self, x: Any, op: str) -> Any:
        """``x`` reduced with ``op`` (``min``, ``max`` or ``mean``) over the replicas of the training step
        running now, with no gradient: what one process would have computed on the global batch from
        statistics each replica computed on its share. The identity outside distributed training."""

    def assign(self, target: Any, value: Any) -> None:
        """Overwrites a variable (a parameter, optimizer or quantizer state) in place, untracked."""


class NumpyOps:
    """:class:`TensorOps` over numpy arrays; no gradients (``stop_gradient`` is the identity)."""

    def sqrt(self, x: Any) -> Any:
        return np.sqrt(x)

    def abs(self, x: Any) -> Any:
        return np.abs(x)

    def tanh(self, x: Any) -> Any:
        return np.tanh(x)

    def round(self, x: Any) -> Any:
        return np.rint(x)

    def clip(self, x: Any, lo: float, hi: float) -> Any:
        return np.clip(x, lo, hi)

    def minimum(self, a: Any, b: Any) -> Any:
        return np.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return np.maximum(a, b)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return np.where(cond, a, b)

    def isnan(self, x: Any) -> Any:
        return np.isnan(x)

    def isfinite(self, x: Any) -> Any:
        return np.isfinite(x)

    def logical_and(self, a: Any, b: Any) -> Any:
        return np.logical_and(a, b)

    def amin(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return np.min(x, axis=axes)

    def amax(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return np.max(x, axis=axes)

    def mean(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return np.mean(x, axis=axes, dtype=np.float32)

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return np.reshape(x, shape)

    def size(self, x: Any, axis: int | None = None) -> Any:
        return np.float32(np.size(x) if axis is None else np.shape(x)[axis])

    def cast(self, x: Any, dtype: str) -> Any:
        return np.asarray(x, dtype=dtype)

    def full_like(self, x: Any, value: float) -> Any:
        return np.full_like(x, value)

    def exp(self, x: Any) -> Any:
        return np.exp(x)

    def log(self, x: Any) -> Any:
        return np.log(x)

    def sum(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return np.sum(x, axis=axes)

    def mix_channels(self, x: Any, w: Any) -> Any:
        return np.moveaxis(np.tensordot(w, x, axes=([1], [1])), 0, 1)

    def stop_gradient(self, x: Any) -> Any:
        return x

    def read(self, variable: Any) -> Any:
        return np.array(variable, copy=True)

    def across_replicas(self, x: Any, op: str) -> Any:
        return x

    def assign(self, target: Any, value: Any) -> None:
        target[...] = value


NUMPY_OPS = NumpyOps()
