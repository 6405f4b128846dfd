"""How much checking and report measurement a compression does: full by default, cut short in tuning trials.

A plain ``compress`` + ``export_onnx`` compares the quantized model with the float one on up to
:data:`slimkit.quant.methods.FIDELITY_SAMPLES` calibration inputs, verifies the ONNX file on up to
:data:`PROBE_SAMPLES` inputs and gzips the file for the report. A tuning trial is judged on its own ONNX
file in onnxruntime (its metric on ``eval_data``), so the same work on every one of dozens of trials
mostly repeats what the trial measures anyway: on a Keras ResNet50, the fake-quant model's run over 16
inputs is 5 s of a 20 s trial and gzipping the file 1-3 s. Inside :func:`quick_checks` both comparisons
run on a couple of inputs (still a check: a mis-mapped tensor or a wrong scale shows on any input) and
the gzip size is left out unless asked for. The best trial's model verifies in full when the user
exports it: its recorded outputs do not cover a larger probe, so both models run again.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Iterator

#: Inputs on which an exported file's outputs are compared with the framework model's.
PROBE_SAMPLES = 16


@dataclasses.dataclass(frozen=True)
class Checks:
    """``samples``: inputs of the fidelity comparison and export's verification (None: the defaults);
    ``gzip``: whether exported files' gzip sizes are measured."""

    samples: int | None = None
    gzip: bool = True


_ACTIVE: contextvars.ContextVar[Checks] = contextvars.ContextVar("slimkit_checks", default=Checks())


def fidelity_samples() -> int:
    """Calibration inputs on which the quantized model is compared with the float model."""
    from slimkit.quant.methods import FIDELITY_SAMPLES

    samples = _ACTIVE.get().samples
    return FIDELITY_SAMPLES if samples is None else samples


def probe_samples() -> int:
    """Inputs on which an exported ONNX file is verified against the framework model."""
    samples = _ACTIVE.get().samples
    return PROBE_SAMPLES if samples is None else samples


def measure_gzip() -> bool:
    """Whether exported files' gzip sizes are measured for the report."""
    return _ACTIVE.get().gzip


@contextlib.contextmanager
def quick_checks(samples: int = 2, gzip: bool = False) -> Iterator[Checks]:
    """Within this block, checks run on ``samples`` inputs and gzip sizes are measured only if ``gzip``."""
    if samples < 2:
        raise ValueError(f"quick_checks: samples must be at least 2 (two rows check the batch axis), got {samples}")
    checks = Checks(samples, gzip)
    token = _ACTIVE.set(checks)
    try:
        yield checks
    finally:
        _ACTIVE.reset(token)
