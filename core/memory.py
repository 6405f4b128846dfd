"""Handing memory the process no longer uses back to the system before a step that needs much.

An export's peak is the framework's fp32 export (tf2onnx holds the frozen graph, its own graph and the
ONNX proto at once) on top of what the run holds by then. Two things inflate the latter without being
in use: cyclic garbage (TensorFlow's graphs and functions form reference cycles, freed only by the
cycle collector: 0.85 GB after a ResNet50 conversion) and heap pages glibc keeps after ``free``
(0.2 GB after calibrating and checking a Keras ResNet50). :func:`release_unused` collects the first
and asks glibc to return the second (``malloc_trim``; a no-op where the C library has none), for
models of at least :data:`LARGE_BYTES` of weights: below that what it frees is small next to the
process, and a collection over a heap of many models costs 0.3 s or more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from typing import Any

#: Weight bytes from which a model's export is preceded by :func:`release_unused`.
LARGE_BYTES = 64 * 2**20


@functools.cache
def _trim() -> Any:
    """glibc's ``malloc_trim``, or None (macOS, Windows, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return getattr(libc, "malloc_trim", None)
    except OSError:
        return None


def release_unused(weight_bytes: int) -> None:
    """Frees unreachable objects and returns free heap pages to the system where the C library can,
    before or after work on a model of ``weight_bytes`` of weights (nothing under :data:`LARGE_BYTES`)."""
    if weight_bytes < LARGE_BYTES:
        return
    gc.collect()
    trim = _trim()
    if trim is not None:
        trim(0)
