"""Reuse within a tuning run: the float ONNX export and calibration statistics computed once.

A tuning run compresses and exports the same float model many times with recipes that differ in what
is quantized, not in the model: every static-int8 trial exports the float graph again (tf2onnx takes
10 to 30 s on a Keras ResNet50) and runs the calibration passes again over the same inputs. Inside
:func:`reusing`, both are kept in a :class:`ReuseCache` and served again to every later request with
the same key; outside it nothing is cached and nothing changes.

Keys hold everything the value depends on, so a hit returns what the work would have computed:

* the model: its adapter class, its layers as :meth:`~slimkit.adapter.ModelAdapter.layers` describes them
  (kinds, shapes, fused activations) and :func:`~slimkit.quant.known_outputs.model_digest` of every array
  it holds. Operations without weights appear in neither, so one cache serves the trials of one model
  (as the tuner uses it), not several architectures that happen to hold the same arrays;
* the float export: the opset, and the traced input's form, per-input shape and dtype and values (both
  exporters make the batch axis dynamic, but PyTorch's tracer records the branches the traced values
  took, so the values are keyed too: one sample, a few microseconds to digest);
* calibration: the activation settings observers read (every field but ``learn`` and ``momentum``, which
  configure trained quantizers), the batch size, and a digest of the calibration inputs' bytes. Only
  numpy inputs reach calibration (framework loaders never do), so every cached statistic is keyed by values.

Calibration statistics are kept per tensor, with the pass size they were observed at: a request for
tensors already observed under the same key returns them without a forward pass, and missing tensors are
observed together in one run of passes and added (see :mod:`slimkit.quant.calibrate`).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import os
import shutil
import tempfile
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from slimkit.adapter import ModelAdapter
from slimkit.data import Inputs, leaves
from slimkit.quant.known_outputs import model_digest
from slimkit.recipe import ActivationQuant

#: What :attr:`ReuseCache.stats` counts: float exports, calibration calls (a hit ran no forward pass), the
#: tensors those calls asked for (a hit was observed by an earlier call), and graph captures of adapters
#: that remember them (PyTorch: a torch.fx/torch.export capture and shape propagation, seconds on a ResNet50),
#: and the float file's latency that every quantized export reports next to its own.
KINDS = ("float_export", "calibration", "calibration_tensors", "graph", "float_latency")

#: Float ONNX files a cache keeps on disk before dropping the least recently used: a tuning run's
#: pruning trials each give a new float model, and 20 ResNet50 files would take 2 GB.
MAX_EXPORT_BYTES = 2 * 2**30

#: ActivationQuant fields that configure trained (QAT) quantizers; calibration observers never read them.
_NOT_OBSERVED = frozenset({"learn", "momentum"})

T = TypeVar("T")

_ACTIVE: contextvars.ContextVar["ReuseCache | None"] = contextvars.ContextVar("slimkit_reuse", default=None)


@dataclass
class Observed:
    """One tensor's calibration statistic as a calibration run found it.

    Attributes:
        value: the ``(min, max)`` an observer gave (activation sites), or the model's float outputs on the
            first inputs (:data:`~slimkit.adapter.MODEL_OUTPUT`; None when the adapter cannot read them so).
        step: inputs per pass after the first, single-input one: the batches the observer saw.
        nbytes: the tensor's bytes per input, which decide the pass size of a later request.
        moments: ``(rows, moments)``: the tensor's moments over the first ``rows`` inputs, when the run
            took them.
    """

    value: Any
    step: int
    nbytes: int
    moments: "tuple[int, Any] | None" = None


class ReuseCache:
    """Float ONNX files and calibration statistics of one tuning run.

    Files live in a temporary directory the cache creates on first use and removes on :meth:`close`
    (also as a context manager, and when :func:`reusing` made the cache itself).

    Args:
        max_export_bytes: float files kept on disk at most, the least recently used dropped first.
    """

    def __init__(self, max_export_bytes: int = MAX_EXPORT_BYTES) -> None:
        self.max_export_bytes = int(max_export_bytes)
        self._dir: Path | None = None
        self._files: OrderedDict[tuple, Path] = OrderedDict()
        self._calibrations: dict[tuple, dict[str, Observed]] = {}
        self._values: dict[tuple, Any] = {}
        self._counts = {kind: [0, 0] for kind in KINDS}
        self._serial = 0  # file names: never reused, whatever was dropped
        self._lock = threading.Lock()  # trials in threads (each entering reusing(cache)) share the files

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """``{kind: {"hits": n, "misses": n}}`` for every kind of :data:`KINDS`."""
        return {kind: {"hits": h, "misses": m} for kind, (h, m) in self._counts.items()}

    def count(self, kind: str, hits: int = 0, misses: int = 0) -> None:
        """Adds to the counts of ``kind`` (one of :data:`KINDS`)."""
        self._counts[kind][0] += hits
        self._counts[kind][1] += misses

    def calibration(self, key: tuple) -> dict[str, Observed]:
        """The statistics observed under ``key`` (tensor name -> :class:`Observed`); callers add to it."""
        return self._calibrations.setdefault(key, {})

    def remember(self, kind: str, key: tuple, build: Callable[[], T]) -> T:
        """``build()``'s value for ``key``, built once: every call gets its own deep copy, so that a caller
        changing what it got changes neither the kept value nor another caller's."""
        if key in self._values:
            self.count(kind, hits=1)
            return copy.deepcopy(self._values[key])
        value = build()
        self._values[key] = copy.deepcopy(value)
        self.count(kind, misses=1)
        return value

    def float_file(self, key: tuple) -> Path | None:
        """The kept float ONNX file for ``key``, or None."""
        with self._lock:
            path = self._files.get(key)
            if path is None or not path.is_file():  # removed behind the cache's back: export again
                self._files.pop(key, None)
                return None
            self._files.move_to_end(key)
            return path

    def keep_float_file(self, key: tuple, source: str | os.PathLike[str]) -> None:
        """Copies ``source`` (a file just exported) into the cache under ``key``. A file the copy cannot
        be made of is simply not kept: the cache only saves time, it never fails an export."""
        with self._lock:
            try:
                if self._dir is None:
                    self._dir = Path(tempfile.mkdtemp(prefix="slimkit-reuse-"))
                self._serial += 1
                dest = self._dir / f"float-{self._serial}.onnx"
                shutil.copyfile(source, dest)
            except OSError:
                return
            self._files[key] = dest
            self._files.move_to_end(key)
            total = sum(p.stat().st_size for p in self._files.values() if p.is_file())
            while total > self.max_export_bytes and len(self._files) > 1:
                _, old = self._files.popitem(last=False)
                total -= old.stat().st_size if old.is_file() else 0
                old.unlink(missing_ok=True)

    def close(self) -> None:
        """Removes the kept files and forgets every statistic (the counts stay, for the report)."""
        with self._lock:
            self._files.clear()
            self._calibrations.clear()
            self._values.clear()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> "ReuseCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReuseCache({self.stats})"


def active() -> ReuseCache | None:
    """The cache of the innermost :func:`reusing` block around this call, or None."""
    return _ACTIVE.get()


@contextlib.contextmanager
def reusing(cache: ReuseCache | None = None) -> Iterator[ReuseCache]:
    """Reuses float exports and calibration statistics inside the block.

    Nested blocks keep the outer cache (a tuner's run inside a user's block shares the user's). The
    cache is closed on leaving the block when this call made it; a cache passed in stays open for its
    owner to use again and close. The block covers this thread (and tasks that copy its context):
    trials run in worker threads each enter ``reusing(cache)`` with the run's cache.

    Args:
        cache: the cache to fill and read; a new one when None.

    Yields:
        The cache in effect (its :attr:`ReuseCache.stats` say what was reused).
    """
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    own = cache is None
    cache = ReuseCache() if cache is None else cache
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
        if own:
            cache.close()


def model_key(adapter: ModelAdapter) -> tuple:
    """What identifies a model's computation to the cache: adapter class, layers and array digest."""
    kind = type(adapter)
    return f"{kind.__module__}.{kind.__qualname__}", repr(adapter.layers()), model_digest(adapter)


def inputs_digest(x: Inputs) -> str:
    """A digest of model inputs: their form (array, positional or named), shapes, dtypes and bytes."""
    form = type(x).__name__ + (repr(list(x)) if isinstance(x, dict) else "")
    crc = zlib.crc32(form.encode())
    for a in leaves(x):
        a = np.ascontiguousarray(a)
        crc = zlib.crc32(f"{a.shape}|{a.dtype}".encode(), crc)
        crc = zlib.crc32(memoryview(a).cast("B") if a.size else b"", crc)
    return f"{len(leaves(x))}:{crc:08x}"


def export_key(adapter: ModelAdapter, sample: Inputs, opset: int) -> tuple:
    """The key of ``adapter``'s float export traced on ``sample`` at ``opset``."""
    signature = tuple((tuple(np.shape(a)[1:]), str(np.asarray(a).dtype)) for a in leaves(sample))
    return "float_export", model_key(adapter), int(opset), signature, inputs_digest(sample)


def calibration_key(adapter: ModelAdapter, settings: ActivationQuant, x: Inputs, batch_size: int) -> tuple:
    """The key of calibration statistics of ``adapter`` over inputs ``x`` with ``settings``."""
    observed = tuple((f.name, repr(getattr(settings, f.name))) for f in dataclasses.fields(settings)
                     if f.name not in _NOT_OBSERVED)
    return "calibration", model_key(adapter), observed, int(batch_size), inputs_digest(x)


def remembered_graph(adapter: ModelAdapter, sample: Inputs, build: Callable[[], T]) -> T:
    """``build()`` (the adapter's graph of its model traced on ``sample``), or inside :func:`reusing` a copy
    of the graph an earlier call with the same model and sample built. For adapters whose capture is costly."""
    cache = active()
    if cache is None:
        return build()
    return cache.remember("graph", ("graph", model_key(adapter), inputs_digest(sample)), build)


def export_float(adapter: ModelAdapter, path: str, sample: Inputs, opset: int) -> None:
    """``adapter.export_onnx(path, sample, opset)``, or inside :func:`reusing` a copy of the file an
    earlier call with the same key wrote."""
    cache = active()
    if cache is None:
        adapter.export_onnx(path, sample, opset)
        return
    key = export_key(adapter, sample, opset)
    kept = cache.float_file(key)
    if kept is not None:
        try:
            shutil.copyfile(kept, path)
        except OSError:
            kept = None
        else:
            cache.count("float_export", hits=1)
            return
    adapter.export_onnx(path, sample, opset)
    cache.count("float_export", misses=1)
    cache.keep_float_file(key, path)
