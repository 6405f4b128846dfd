"""Keeps TensorFlow's and tf2onnx's log chatter out of what slimkit shows its users.

Both log through Python's ``logging`` (``tensorflow``, ``tf2onnx``): retracing notices when slimkit
predicts with many models in turn, deprecation notices and optimizer tracebacks from tf2onnx's own calls.
They concern slimkit's internals, not the user's model, so they are raised to ERROR while slimkit works
and put back afterwards; real errors still show. TensorFlow's C++ runtime writes to descriptor 2 itself
(grappler's "Starting new session" and device lines at every conversion): ``quiet(native=True)`` filters
those lines too (:mod:`slimkit.native_logs`), for work that prints no progress of its own (export).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from slimkit.native_logs import filtered_stderr

_LOGGERS = ("tensorflow", "tf2onnx")


@contextlib.contextmanager
def quiet(native: bool = False) -> Iterator[None]:
    """Within the block, TensorFlow and tf2onnx log errors only; with ``native``, the C++ runtime's
    informational lines and known banners are dropped from stderr as well.

    tf2onnx logs errors from which it recovers (a graph rewriter that raised, with its traceback) and
    then converts the model anyway; its error records are held, and shown only when the block raises."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    converter = logging.getLogger("tf2onnx")
    held = _Hold()
    propagate = converter.propagate
    converter.addHandler(held)
    converter.propagate = False
    failed = False
    try:
        with filtered_stderr() if native else contextlib.nullcontext():
            yield
    except BaseException:
        failed = True
        raise
    finally:
        converter.removeHandler(held)
        converter.propagate = propagate
        for log, level in zip(loggers, levels):
            log.setLevel(level)
        if failed:  # what tf2onnx said may explain the failure
            for record in held.records:
                logging.getLogger(record.name).handle(record)
        elif held.records:
            logging.getLogger("slimkit").debug(f"tf2onnx logged {len(held.records)} errors it recovered from "
                                               "during a conversion that succeeded")


class _Hold(logging.Handler):
    """Keeps records instead of showing them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
