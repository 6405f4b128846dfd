"""Checks on user data before it reaches a framework, so mistakes surface as clear DataErrors."""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.errors import DataError


def is_array_pair(data: Any) -> bool:
    """True for an ``(x, y)`` tuple or list of two array-likes (as opposed to a framework loader)."""
    return isinstance(data, (tuple, list)) and len(data) == 2


def as_arrays(data: Any, what: str, need_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Validates numpy data: ``x`` alone or ``(x, y)`` with matching, non-zero lengths.

    Raises:
        DataError: empty data, mismatched lengths, non-numeric arrays or missing labels; the message
            names ``what`` (``train_data``, ``eval_data``, ...).
    """
    if is_array_pair(data):
        x, y = (np.asarray(a) for a in data)
    elif need_labels:
        raise DataError(f"{what}: expected an (x, y) tuple of arrays, got {type(data).__name__}")
    else:
        x, y = np.asarray(data), None
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{what}: no samples (x has shape {x.shape})")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{what}: x must be numeric, got dtype {x.dtype}")
    if y is not None and len(y) != len(x):
        raise DataError(f"{what}: x has {len(x)} samples but y has {len(y)}")
    return x, y


def first_inputs(data: Any, what: str, count: int) -> np.ndarray | None:
    """Up to ``count`` input samples from numpy data, or None for framework loaders."""
    if data is None:
        return None
    if is_array_pair(data) or isinstance(data, np.ndarray):
        x, _ = as_arrays(data, what, need_labels=False)
        return np.asarray(x[:count])
    return None
