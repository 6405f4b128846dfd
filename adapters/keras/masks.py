"""Pruning masks on Keras kernels: a non-trainable mask variable and a variable constraint, which
Keras optimizers (both generations) apply after every update inside the compiled train step."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np

def np_dtype(variable: Any) -> np.dtype:
    """A variable's dtype as numpy's (Keras 3 uses strings, tf_keras ``tf.DType``)."""
    dtype = variable.dtype
    try:
        return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
    except TypeError:
        return np.dtype(np.float32)  # exotic dtypes: let the variable's own assign() cast


def set_constraint(variable: Any, fn: Callable[[Any], Any] | None) -> None:
    """Sets a variable's constraint; tf.Variable (tf_keras) exposes it read-only."""
    try:
        variable.constraint = fn
    except AttributeError:
        variable._constraint = fn


class MaskConstraint:
    """A kernel constraint: the layer's own constraint (if any), then zero where the mask is 0.

    ``where`` rather than a product so pruned entries are +0.0 even for negative weights.
    ``ops`` is ``keras.ops`` (Keras 3) or ``tensorflow`` (tf_keras); both name these functions alike.
    """

    def __init__(self, mask: Any, original: Callable[[Any], Any] | None, ops: Any) -> None:
        self.mask = mask
        self.original = original
        self._ops = ops

    def __call__(self, w: Any) -> Any:
        if self.original is not None:
            w = self.original(w)
        ops = self._ops
        return ops.where(ops.not_equal(self.mask, 0), w, ops.zeros_like(w))


@dataclass
class Mask:
    """One masked kernel: the mask variable, the kernel, and the constraint the kernel had before."""

    variable: Any
    kernel: Any
    original: Callable[[Any], Any] | None



def new_mask_variable(k: ModuleType, values: np.ndarray, name: str) -> Any:
    """A non-trainable variable holding ``values``, tracked by no layer (weights lists stay as they were)."""
    var_name = "slimkit_mask_" + name.replace("/", "_")
    if k.__name__ == "tf_keras":
        import tensorflow as tf  # loaded already: tf_keras imports it

        return tf.Variable(values, trainable=False, name=var_name)
    return k.Variable(values, trainable=False, autocast=False, name=var_name)


def retrace_train_step(model: Any) -> None:
    """Rebuilds a compiled train step so it applies a newly attached constraint.

    Keras reads ``variable.constraint`` while tracing, so a step traced before the constraint
    existed would not apply it. Keras's fit loop looks ``model.train_function`` up anew each
    step, so this works mid-fit too (from a hook), at the cost of one retrace.
    """
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)
