"""Handing memory the process no longer uses back to the system before a step that needs much.

An export's peak is the framework's fp32 export (tf2onnx holds the frozen graph, its own graph and the
ONNX proto at once) on top of what the run holds by then. Two things inflate the latter without being
in use: cyclic garbage (TensorFlow's graphs and functions form reference cycles, freed only by the
cycle collector: 0.85 GB after a ResNet50 conversion) and heap pages glibc keeps after ``free``
(0.2 GB after calibrating and checking a Keras ResNet50). :func:`release_unused` collects the first
and asks glibc to return the second (``malloc_trim``; a no-op where the C library has none), for
models of at least :data:`LARGE_BYTES` of weights: below that what it frees is small next to the
process, and a collection over a heap of many models costs 0.3 s or more.

The opposite problem within a run: PyTorch's CPU tensors come from ``malloc``, and glibc by default
hands every large block back on ``free`` (blocks above a threshold are mapped and unmapped one by one;
free space at the top of the heap above another is trimmed), so a pass that makes and drops tensors of
megabytes each faults their pages in afresh every time: on a ResNet50 static-int8 run, a million page
faults and a third of the run in the kernel. :func:`steady_heap` keeps freed blocks for reuse while
slimkit works (``mallopt``: blocks up to :data:`KEEP_BLOCK_BYTES` from the heap, top trimmed above
:data:`KEEP_TOP_BYTES`) and afterwards leaves the limits at the ceilings glibc's own adaptive limits
grow to (32 MB blocks, 64 MB top) rather than at the 128 KB start they would otherwise be fixed at, and
returns the free pages (``malloc_trim``) :data:`TRIM_DELAY_SECONDS` later unless another block has
begun by then: an export right after its compress (the usual sequence) reuses the pages the compress
freed instead of faulting them in again (a PyTorch ResNet50's export: 80 thousand page faults, 0.15 s,
and no higher peak). Nothing changes where the C library is not glibc.

Collections within the run (:func:`collect`, :func:`release_unused`, and Python's own) cost time in
proportion to every object the process tracks: the frameworks' modules, the user's objects, not only
what the run made (0.1 s per collection with PyTorch and onnx loaded). :func:`steady_heap` freezes the
objects that exist when the run starts (``gc.freeze``, after a full collection, so that older garbage
is not frozen with them; at most one per :data:`ENTRY_COLLECT_SECONDS`, so a compress and its export
pay it once), so collections inside traverse the run's own objects, which is where its garbage is
(dropped model copies, a conversion's graphs; a tuning run's trials are inside its block), and
unfreezes them when it ends. Nothing is freed wrongly: references from frozen objects keep what they
reach alive. A process that froze objects itself (a server before forking workers) is left as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import math
import threading
import time
from typing import Any, Iterator

#: A block's full collection before freezing (see :func:`steady_heap`) runs at most this often.
ENTRY_COLLECT_SECONDS = 30.0

#: Weight bytes from which a model's export is preceded by :func:`release_unused`.
LARGE_BYTES = 64 * 2**20


#: While slimkit works, freed blocks up to this size stay in the heap for reuse (glibc's M_MMAP_THRESHOLD).
KEEP_BLOCK_BYTES = 256 * 2**20
#: ... and free space at the heap's top is returned only above this (M_TRIM_THRESHOLD).
KEEP_TOP_BYTES = 2**30
#: Afterwards: glibc's adaptive ceilings (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, and twice it).
AFTER_BLOCK_BYTES, AFTER_TOP_BYTES = 32 * 2**20, 64 * 2**20
#: Free pages go back to the system this long after the outermost block ends, unless another begins.
TRIM_DELAY_SECONDS = 2.0
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers

_depth = 0
_froze = False  # whether the outermost block froze the objects older than it
_last_entry_collect = -math.inf
_lock = threading.Lock()
_pending_trim: threading.Timer | None = None


@functools.cache
def _libc() -> Any:
    """glibc's functions (``malloc_trim`` and ``mallopt`` both present), or None (macOS, Windows, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if getattr(libc, "malloc_trim", None) is None or getattr(libc, "mallopt", None) is None:
        return None
    return libc


def _trim() -> Any:
    """glibc's ``malloc_trim``, or None."""
    libc = _libc()
    return None if libc is None else libc.malloc_trim


@contextlib.contextmanager
def steady_heap() -> Iterator[None]:
    """Within this block (nested blocks count as one), glibc keeps freed blocks for reuse instead of
    unmapping them and collections leave the objects older than the block alone; on leaving the
    outermost, those objects are collectable again and free pages go back to the system
    :data:`TRIM_DELAY_SECONDS` later unless another block has begun (see the module)."""
    global _depth, _froze, _last_entry_collect, _pending_trim
    libc = _libc()
    with _lock:
        _depth += 1
        if _depth == 1:
            if _pending_trim is not None:  # the free pages of the block before serve this one
                _pending_trim.cancel()
                _pending_trim = None
            _froze = gc.get_freeze_count() == 0  # a process that froze objects itself manages them
            if _froze:
                # garbage older than the block goes first (frozen, it would outlive the block: a loop of
                # compress calls whose results are dropped would pile them up), at most once per
                # ENTRY_COLLECT_SECONDS (an export right after its compress finds little new garbage);
                # then collections inside look at the run's own objects only
                now = time.monotonic()
                if now - _last_entry_collect >= ENTRY_COLLECT_SECONDS:
                    gc.collect()
                    _last_entry_collect = now
                gc.freeze()
            if libc is not None:
                libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BLOCK_BYTES)
                libc.mallopt(_M_TRIM_THRESHOLD, KEEP_TOP_BYTES)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                if _froze:
                    gc.unfreeze()
                if libc is not None:
                    libc.mallopt(_M_MMAP_THRESHOLD, AFTER_BLOCK_BYTES)
                    libc.mallopt(_M_TRIM_THRESHOLD, AFTER_TOP_BYTES)
                    _pending_trim = threading.Timer(TRIM_DELAY_SECONDS, _trim_if_idle, args=(libc,))
                    _pending_trim.daemon = True
                    _pending_trim.start()


def _trim_if_idle(libc: Any) -> None:
    """The delayed ``malloc_trim`` of :func:`steady_heap`: skipped when a block has begun since."""
    global _pending_trim
    with _lock:
        if _depth == 0 and _pending_trim is not None and _pending_trim is threading.current_thread():
            _pending_trim = None
            libc.malloc_trim(0)


def weight_bytes(adapter: Any) -> int:
    """float32 bytes of every weight of an adapter's layers (what the size gates here compare)."""
    return 4 * sum(int(math.prod(shape)) for info in adapter.layers() for shape in info.shapes.values())


def collect(weight_bytes: int) -> None:
    """Frees unreachable objects (models form reference cycles: Keras layers and their graph nodes) once a
    model of ``weight_bytes`` of weights was dropped, so that its memory is free before the next
    framework run (nothing under :data:`LARGE_BYTES`, where the collection costs more than it frees)."""
    if weight_bytes >= LARGE_BYTES:
        gc.collect()


def release_unused(weight_bytes: int) -> None:
    """Frees unreachable objects and returns free heap pages to the system where the C library can,
    before or after work on a model of ``weight_bytes`` of weights (nothing under :data:`LARGE_BYTES`)."""
    if weight_bytes < LARGE_BYTES:
        return
    gc.collect()
    trim = _trim()
    if trim is not None:
        trim(0)
