"""Report values measured when first read, so that writing a file does not wait for them.

An export's report rows carry the file's gzip size and onnxruntime's latency of the int8 file and
its float twin. Measuring them while exporting puts seconds on every export (gzipping a ResNet50's
100 MB file is 3 s, its two latencies 0.4-1 s) that a script which never reads them pays too. A
:class:`Deferred` field of a frozen dataclass row holds a :class:`Pending` measurement instead and
takes it the first time the field is read (``row.gzip_bytes``, ``report.to_dict()``, printing the
report), keeping the value from then on.

A measurement of a written file is taken only if the file is still the one written (same size and
modification time); a file changed, removed or made unreadable since gives None. A file the measurement owns (the
float twin, which the export does not keep) is removed once measured, or when the row is dropped
unread, or at exit.
"""

from __future__ import annotations

import gzip
import os
import shutil
import weakref
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Pending(Generic[T]):
    """A measurement not taken yet: ``result()`` takes it once and returns the same value after."""

    def __init__(self, measure: Callable[[], T | None], owned_folder: Path | None = None) -> None:
        self._measure: Callable[[], T | None] | None = measure
        self._value: T | None = None
        # The owned folder goes with this object, measured or not (weakref.finalize also runs at exit).
        self._cleanup = weakref.finalize(self, _remove, owned_folder) if owned_folder is not None else None

    def result(self) -> T | None:
        if self._measure is not None:
            measure, self._measure = self._measure, None
            try:
                self._value = measure()
            finally:
                if self._cleanup is not None:
                    self._cleanup()
        return self._value


def of_file(path: str | os.PathLike[str], measure: Callable[[Path], T], owned_folder: Path | None = None,
            written: str | os.PathLike[str] | None = None) -> Pending[T]:
    """``measure(path)`` later, if ``path`` still has the size and modification time it has now.

    Args:
        owned_folder: a temporary folder holding the file, removed after measuring (or when the
            measurement is dropped unread).
        written: the file as written now, when it is yet to be moved to ``path`` (a rename keeps both).
    """
    path = Path(path)
    stat = Path(written if written is not None else path).stat()
    key = (stat.st_size, stat.st_mtime_ns)

    def checked() -> T | None:
        try:
            now = path.stat()
            return measure(path) if (now.st_size, now.st_mtime_ns) == key else None
        except OSError:  # gone, or no longer readable: not the file the row describes any more
            return None

    return Pending(checked, owned_folder)


def gzip_size(path: Path) -> int:
    """Bytes of ``path`` gzip-compressed at level 6 (what zeroed weights save in transfer)."""
    return len(gzip.compress(path.read_bytes(), 6))


class Deferred:
    """A frozen dataclass field that may be given a :class:`Pending`: it is measured on first read.

    Declared as the field's default (``gzip_bytes: int | None = Deferred()``) it still is a required
    argument; the dataclass' ``__init__`` stores through :meth:`__set__` and readers (``asdict``,
    equality, ``repr``) all go through :meth:`__get__`.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_deferred_{name}"

    def __get__(self, row: Any, owner: type | None = None) -> Any:
        if row is None:  # no class-level default: the dataclass sees a required field
            raise AttributeError(self._slot)
        value = row.__dict__[self._slot]
        if isinstance(value, Pending):
            value = value.result()
            row.__dict__[self._slot] = value
        return value

    def __set__(self, row: Any, value: Any) -> None:
        row.__dict__[self._slot] = value


def _remove(folder: Path) -> None:
    """A measurement's own temporary folder (the export created it; nothing else is in it)."""
    shutil.rmtree(folder, ignore_errors=True)
