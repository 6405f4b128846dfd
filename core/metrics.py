"""Evaluation of a model on held-out data, for the before/after columns of the report."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from slimkit.adapter import ModelAdapter
from slimkit.data import as_arrays


def evaluate(
    adapter: ModelAdapter,
    eval_data: Any = None,
    eval_fn: Callable[[Any], float] | None = None,
) -> dict[str, float]:
    """Metrics of ``adapter.model``: ``eval_fn``'s value, and accuracy or MSE on ``eval_data``.

    Accuracy is used when labels are integer class ids and outputs are per-class scores; otherwise
    mean squared error against the targets.
    """
    metrics: dict[str, float] = {}
    if eval_fn is not None:
        metrics["eval_fn"] = float(eval_fn(adapter.model))
    if eval_data is not None:
        x, y = as_arrays(eval_data, "eval_data", need_labels=True)
        adapter.check_input(x, "eval_data")
        out = adapter.predict(x)
        if np.issubdtype(y.dtype, np.integer) and out.ndim == 2 and y.ndim == 1:
            metrics["accuracy"] = float(np.mean(np.argmax(out, axis=-1) == y))
        else:
            metrics["mse"] = float(np.mean((out - y.reshape(out.shape)) ** 2))
    return metrics
