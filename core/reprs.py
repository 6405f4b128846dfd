"""Values shown in error messages: ``repr`` cut short, so that a message names a bad value without
printing a megabyte of it (a user's array, a recipe's deeply nested list)."""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` of at most about ``limit`` characters; arrays as their shape and dtype."""
    if isinstance(value, np.ndarray) and value.ndim:
        return f"array of shape {value.shape} and dtype {value.dtype}"
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlevel = 3
    try:
        text = short.repr(value)
    except Exception as exc:  # a user object whose __repr__ fails
        return f"<{type(value).__qualname__} object (repr failed: {type(exc).__name__})>"
    return text if len(text) <= limit + 20 else text[:limit] + "..."
