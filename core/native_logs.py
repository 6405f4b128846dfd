"""Native log lines (C++ runtimes writing straight to file descriptor 2) kept out of slimkit's output.

TensorFlow's C++ runtime logs through abseil in the glog format (``I0000 00:00:1796507145.667851 6485
devices.cc:67] ...``). Python's ``logging`` never sees these lines, and ``TF_CPP_MIN_LOG_LEVEL`` is read
once, when TensorFlow loads: a library imported beside it cannot lower them afterwards. While slimkit
works, :func:`filtered_stderr` points descriptor 2 at a pipe and a thread forwards everything to the real
stderr at once except the informational lines and a few known banners (below); warnings and errors of
the runtime pass. Nothing here imports a framework.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from typing import Callable, Iterator

#: A glog/abseil line: severity letter, date, time, thread, file:line].
NATIVE_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] ")

#: Warning/error lines that say nothing about the user's model: a CUDA-enabled wheel on a machine without
#: a GPU, factories registered twice, TensorRT absent. (Informational lines are all dropped.)
KNOWN_BANNERS = re.compile(
    r"failed call to cuInit|Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"TF-TRT Warning: Could not find TensorRT|computation placer already registered|oneDNN custom operations")

#: Lines outside the glog format printed with those above: abseil's notice before its first line, the
#: second line of TensorFlow's CPU-feature notice.
PLAIN_BANNERS = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                 "To enable the following instructions:")


def is_noise(line: str) -> bool:
    """True for a native informational line or a known banner; False for anything else (slimkit's own
    lines, warnings, errors, the user's prints)."""
    found = NATIVE_LINE.match(line)
    if found is not None:
        return found.group(1) == "I" or KNOWN_BANNERS.search(line) is not None
    return line.startswith(PLAIN_BANNERS)


_LOCK = threading.Lock()
_ACTIVE = [False]  # descriptor 2 is one per process: one filter at a time, nested blocks share it
_SAVED: list[int | None] = [None]  # the real stderr's descriptor while a filter runs


@contextlib.contextmanager
def filtered_stderr(drop: Callable[[str], bool] = is_noise) -> Iterator[None]:
    """Within the block, lines written to descriptor 2 for which ``drop`` is true are discarded.

    Everything else reaches the real stderr as it is written (a line that might be native is held until
    its newline). Nested blocks share the outer one. Where descriptor 2 cannot be redirected (no such
    descriptor, an embedded interpreter), the block runs unfiltered.
    """
    with _LOCK:
        outer = not _ACTIVE[0]
        _ACTIVE[0] = True
    if not outer:
        yield
        return
    try:
        sys.stderr.flush()
        saved: int | None = os.dup(2)
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved is None:
        try:
            yield
        finally:
            _ACTIVE[0] = False
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forward = threading.Thread(target=_forward, args=(read_end, saved, drop), daemon=True,
                               name="slimkit-stderr-filter")
    forward.start()
    _SAVED[0] = saved
    try:
        yield
    finally:
        _SAVED[0] = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer is gone: the thread reads to its end and stops
        forward.join(timeout=5.0)  # a child process still holding the pipe keeps it open: do not wait
        if not forward.is_alive():
            os.close(read_end)
            os.close(saved)
        _ACTIVE[0] = False


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal, as it was before a filter put a pipe in its place (the progress
    display decides between bars and lines by it)."""
    stream = sys.stderr
    try:
        if stream.fileno() == 2 and _SAVED[0] is not None:
            return os.isatty(_SAVED[0])
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):  # a stream object without a descriptor, or closed
        return False


def _forward(read_end: int, target: int, drop: Callable[[str], bool]) -> None:
    """Copies the pipe to ``target`` line by line, without the dropped lines."""
    pending = b""
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except OSError:
            break
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = [line + b"\n" for line in lines if not drop(line.decode("utf-8", "replace").lstrip("\r"))]
        if pending and pending[:1] not in (b"I", b"W", b"E", b"F", b"T"):
            out.append(pending)  # a partial line that cannot be native (a progress bar's frame): now
            pending = b""
        _write(target, b"".join(out))
    if pending and not drop(pending.decode("utf-8", "replace")):
        _write(target, pending)


def _write(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:
            return
