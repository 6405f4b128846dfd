"""Keeps TensorFlow's and tf2onnx's log chatter out of what slimkit shows its users.

Both log through Python's ``logging`` (``tensorflow``, ``tf2onnx``): retracing notices when slimkit
predicts with many models in turn, deprecation notices from tf2onnx's own calls. They concern
slimkit's internals, not the user's model, so they are raised to ERROR while slimkit works and put
back afterwards; real errors still show.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

_LOGGERS = ("tensorflow", "tf2onnx")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Within the block, TensorFlow and tf2onnx log errors only."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)
