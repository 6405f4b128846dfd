"""Evaluation of a model on held-out data, for the before/after columns of the report."""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np

from slimkit.adapter import ModelAdapter
from slimkit.data import as_arrays
from slimkit.errors import DataError
from slimkit.reprs import short_repr


def evaluate(
    adapter: ModelAdapter,
    eval_data: Any = None,
    eval_fn: Callable[[Any], float] | None = None,
) -> dict[str, float]:
    """Metrics of ``adapter.model``: ``eval_fn``'s value, and accuracy or MSE on ``eval_data``.

    Accuracy is used when labels are integer class ids (shaped ``(N,)`` or ``(N, 1)``) and outputs
    are per-class scores; otherwise mean squared error against targets shaped like the outputs.

    Raises:
        DataError: ``eval_fn`` raised (the original exception is the cause) or returned something
            other than a finite real number; ``eval_data``'s labels fit neither metric.
    """
    metrics: dict[str, float] = {}
    if eval_fn is not None:
        metrics["eval_fn"] = call_eval_fn(eval_fn, adapter.model)
    if eval_data is not None:
        x, y = as_arrays(eval_data, "eval_data", need_labels=True)
        adapter.check_input(x, "eval_data")
        out = adapter.predict(x)
        metrics.update(_data_metric(out, y))
    return metrics


def call_eval_fn(eval_fn: Callable[[Any], Any], model: Any) -> float:
    """``eval_fn(model)`` as a float.

    Accepted: a Python or numpy real number, or any 0-d array or tensor holding one (numpy, PyTorch,
    TensorFlow: read with ``item()`` or ``numpy()``); it must be finite. Booleans are refused: a
    metric of True is a comparison returned by mistake.

    Raises:
        DataError: ``eval_fn`` raised, or returned anything else; the message names ``eval_fn`` and
            what it returned.
    """
    try:
        value = eval_fn(model)
    except Exception as exc:  # the user's code: any failure is reported as theirs, with its traceback
        text = str(exc)
        raise DataError(f"eval_fn raised {type(exc).__name__}: {text if len(text) <= 200 else text[:200] + '...'}"
                        ) from exc
    number = _real(value)
    if number is None:
        kind = type(value).__module__ + "." + type(value).__qualname__ if value is not None else "None"
        raise DataError(f"eval_fn must return a finite real number (a Python or numpy scalar, or a 0-d array "
                        f"or tensor), got {kind} {short_repr(value)}")
    if not math.isfinite(number):
        raise DataError(f"eval_fn returned {number!r}; it must return a finite real number")
    return number


def _real(value: Any) -> float | None:
    """``value`` as a float if it is a real number or a 0-d array or tensor of one, else None."""
    for _ in range(3):  # tensor -> numpy scalar or 0-d array -> Python number
        if isinstance(value, (bool, np.bool_)):
            return None
        if isinstance(value, numbers.Real):
            return float(value)
        if tuple(getattr(value, "shape", (None,)) or ()) != ():
            return None
        if isinstance(value, np.ndarray) and value.dtype.kind not in "iuf":
            return None
        read = getattr(value, "item", None) or getattr(value, "numpy", None)  # numpy, torch | TensorFlow
        if not callable(read):
            return None
        try:
            value = read()
        except Exception:  # an item() or numpy() of some other meaning
            return None
    return None


def _data_metric(out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy for class ids against per-class scores, else MSE against targets of the output's shape."""
    scores = out.ndim == 2 and out.shape[1] > 1
    ids = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 and scores else y
    if scores and ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer):
        classes = out.shape[1]
        lo, hi = ids.min(), ids.max()
        if lo < 0 or hi >= classes:
            raise DataError(f"eval_data: class ids must lie in [0, {classes}) for a model with {classes} outputs; "
                            f"found ids from {lo} to {hi}")
        return {"accuracy": float(np.mean(np.argmax(out, axis=-1) == ids))}
    if y.size != out.size or y.shape[0] != out.shape[0]:
        expected = f"(N,) or (N, 1) class ids, or targets shaped {(len(out),) + out.shape[1:]}" if scores \
            else f"targets shaped {(len(out),) + out.shape[1:]}"
        raise DataError(f"eval_data: labels of shape {y.shape} do not fit the model's output {out.shape}; "
                        f"give {expected}")
    return {"mse": float(np.mean((out - y.reshape(out.shape)) ** 2))}

