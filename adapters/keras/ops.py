""":class:`slimkit.ops.TensorOps` over Keras 3 (``keras.ops`` on the TensorFlow backend).

Core's fake quantization and optimizer rules run on these; ``assign`` defaults to the variable's
own ``assign`` (an optimizer passes its own, which handles distribution strategies). Also serves
tf_keras variables, which are ``tf.Variable`` objects that ``keras.ops`` accepts.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from typing import Any, Callable, Iterator

from keras import ops

#: True while slimkit traces a function that records no gradient (its own ``predict``): fake
#: quantization then takes the short path (see :meth:`KerasOps.fake_quantize_frozen`).
_NO_GRADIENTS: contextvars.ContextVar[bool] = contextvars.ContextVar("slimkit_keras_no_gradients", default=False)


@contextlib.contextmanager
def no_gradients() -> Iterator[None]:
    """Within this block, functions traced are inference only: no tape records their ops."""
    token = _NO_GRADIENTS.set(True)
    try:
        yield
    finally:
        _NO_GRADIENTS.reset(token)


class KerasOps:
    """Keras' tensor operations for core code."""

    def __init__(self, assign: Callable[[Any, Any], None] | None = None) -> None:
        self._assign = assign

    def sqrt(self, x: Any) -> Any:
        return ops.sqrt(x)

    def abs(self, x: Any) -> Any:
        return ops.abs(x)

    def tanh(self, x: Any) -> Any:
        return ops.tanh(x)

    def round(self, x: Any) -> Any:
        return ops.round(x)  # TensorFlow rounds half to even

    def fake_quantize_frozen(self, x: Any, scale: Any, zero_point: Any, qmin: float, qmax: float) -> Any:
        """Inside :func:`no_gradients`, fake quantization without the straight-through terms (the same
        values: ``v + (round(v) - v)`` is ``round(v)`` exactly), three graph ops and three passes over
        the tensor fewer per site (a fake-quant MobileNetV2 1.0's first ``predict`` of 8 inputs: 2.8 ->
        2.5 s). None elsewhere (a training step, or a user's call under a tape)."""
        if not _NO_GRADIENTS.get():
            return None
        return (ops.clip(ops.round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale

    def clip(self, x: Any, lo: float, hi: float) -> Any:
        return ops.clip(x, lo, hi)

    def minimum(self, a: Any, b: Any) -> Any:
        return ops.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return ops.maximum(a, b)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return ops.where(cond, a, b)

    def isnan(self, x: Any) -> Any:
        return ops.isnan(x)

    def isfinite(self, x: Any) -> Any:
        return ops.isfinite(x)

    def logical_and(self, a: Any, b: Any) -> Any:
        return ops.logical_and(a, b)

    def amin(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return ops.min(x, axis=axes)

    def amax(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return ops.max(x, axis=axes)

    def mean(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return ops.mean(x, axis=axes)

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return ops.reshape(x, shape)

    def size(self, x: Any, axis: int | None = None) -> Any:
        return ops.cast(ops.size(x) if axis is None else ops.shape(x)[axis], "float32")

    def cast(self, x: Any, dtype: str) -> Any:
        return ops.cast(x, dtype)

    def full_like(self, x: Any, value: float) -> Any:
        return ops.full_like(x, value)

    def exp(self, x: Any) -> Any:
        return ops.exp(x)

    def log(self, x: Any) -> Any:
        return ops.log(x)

    def sum(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return ops.sum(x, axis=axes)

    def mix_channels(self, x: Any, w: Any) -> Any:
        return ops.moveaxis(ops.tensordot(w, x, axes=([1], [1])), 0, 1)

    def stop_gradient(self, x: Any) -> Any:
        return ops.stop_gradient(x)

    def read(self, variable: Any) -> Any:
        return ops.convert_to_tensor(variable)

    def across_replicas(self, x: Any, op: str) -> Any:
        """Inside a training step that tf.distribute runs on several replicas, ``x`` reduced over them
        (``mean`` by all-reduce; ``min`` and ``max`` over an all-gather, which has no such reduction); the
        identity everywhere else (no strategy, one replica, inference outside replicas)."""
        tf = sys.modules.get("tensorflow")
        context = tf.distribute.get_replica_context() if tf is not None else None
        if context is None or context.num_replicas_in_sync <= 1:
            return x
        x = tf.stop_gradient(tf.convert_to_tensor(x))
        if op == "mean":
            return context.all_reduce(tf.distribute.ReduceOp.MEAN, x)
        if op not in ("min", "max"):
            raise ValueError(f"across_replicas: unknown reduction {op!r}; expected min, max or mean")
        every = context.all_gather(tf.expand_dims(x, 0), axis=0)
        return tf.reduce_min(every, axis=0) if op == "min" else tf.reduce_max(every, axis=0)

    def assign(self, target: Any, value: Any) -> None:
        if self._assign is not None:
            self._assign(target, value)
        else:
            target.assign(value)


KERAS_OPS = KerasOps()
