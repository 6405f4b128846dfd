"""Training labels checked against the loss and the model's output, then put in one canonical form.

Both adapters train on what :func:`prepare_labels` returns, so a label means the same thing in each:

- ``sparse_categorical_crossentropy``: int64 class ids shaped like the output without its class
  axis (a trailing axis of 1 is dropped); every id in ``[0, classes)``.
- ``categorical_crossentropy``: float32, the output's shape (one-hot or class probabilities).
- ``binary_crossentropy``, ``mse``: float32, the output's shape (a missing trailing 1 is added).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.errors import DataError


def _shape_text(shape: tuple[int | None, ...]) -> str:
    """``(batch, 8, 10)``: the batch axis by name, unknown axes as None."""
    return "(" + ", ".join(["batch", *(str(d) for d in shape)]) + ("," if not shape else "") + ")"


def prepare_labels(y: Any, loss: str, out_shape: tuple[int | None, ...], n: int,
                   what: str = "train_data") -> np.ndarray:
    """Checks ``y`` for ``loss`` on outputs of shape ``(batch, *out_shape)`` and converts it.

    Args:
        y: the labels, one per sample.
        loss: the recipe's loss name.
        out_shape: the model's output shape past the batch axis (None for unknown axes).
        n: number of input samples ``y`` must match.
        what: the data's name in messages.

    Raises:
        DataError: ``y`` is not numeric, has the wrong length or shape, or holds class ids that are
            not whole numbers or lie outside the model's classes.
    """
    if not isinstance(y, np.ndarray):
        raise DataError(f"{what}: y must be a numpy array, got {type(y).__module__}.{type(y).__qualname__}")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{what}: y must be numeric, got dtype {y.dtype}")
    if len(y) != n:
        raise DataError(f"{what}: x has {n} samples but y has {len(y)}")
    out = tuple(out_shape)
    got = tuple(y.shape[1:])

    def fits(expected: tuple[int | None, ...]) -> bool:
        return len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))

    def fail(expected: tuple[int | None, ...], note: str = "") -> DataError:
        return DataError(
            f"{what}: y for {loss} on model outputs of shape {_shape_text(out)} "
            f"must have shape {_shape_text(expected)}{note}, got {tuple(y.shape)}"
        )

    if loss == "sparse_categorical_crossentropy":
        if not out:
            raise fail(out, " (the model must output class scores)")
        if fits(out[:-1]):
            ids = y
        elif fits((*out[:-1], 1)):
            ids = y.reshape(y.shape[:-1])
        else:
            raise fail(out[:-1], " of integer class labels")
        if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{what}: y must hold integer class labels for sparse_categorical_crossentropy")
        classes = out[-1]
        lo, hi = y.min(), y.max()
        if lo < 0 or (classes is not None and hi >= classes):
            raise DataError(
                f"{what}: y class labels must lie in [0, {classes}) for a model with "
                f"{classes} outputs; found labels from {lo} to {hi}"
            )
        return ids.astype(np.int64)
    if loss == "categorical_crossentropy":
        if not fits(out):
            raise fail(out, " (one-hot)")
        return y.astype(np.float32)
    if fits(out):
        return y.astype(np.float32)
    if out[-1:] == (1,) and fits(out[:-1]):  # binary_crossentropy, mse: targets without the trailing 1
        return y.astype(np.float32).reshape(*y.shape, 1)
    raise fail(out)
