"""The tensor operations that algorithms written once in core ask of a framework.

Like ``keras.ops`` (one neutral API, one implementation per backend) and einops' backends, core code
such as the optimizers' update rules (``slimkit.optim``) is written against :class:`TensorOps`;
each adapter supplies an implementation over its own tensors in a few lines, and :class:`NumpyOps`
serves numpy (the reference, and the test fake). Arithmetic uses Python operators, which every
framework's tensors and variables support; only what operators cannot express is here.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class TensorOps(Protocol):
    """Operations on a framework's tensors (``Any`` below: the framework's tensor or variable type)."""

    def sqrt(self, x: Any) -> Any:
        """Elementwise square root."""

    def assign(self, target: Any, value: Any) -> None:
        """Overwrites a variable (a parameter or optimizer state) with ``value`` in place."""


class NumpyOps:
    """:class:`TensorOps` over numpy arrays (in-place assignment into float32 arrays)."""

    def sqrt(self, x: Any) -> Any:
        return np.sqrt(x)

    def assign(self, target: Any, value: Any) -> None:
        target[...] = value


NUMPY_OPS = NumpyOps()
