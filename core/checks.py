"""How much checking and report measurement a compression does: full by default, cut short in tuning trials.

A plain ``compress`` + ``export_onnx`` compares the quantized model with the float one on the first
calibration inputs that give :data:`FIDELITY_VALUES` output values (at least :data:`MIN_FIDELITY_SAMPLES`
inputs, at most :data:`slimkit.quant.methods.FIDELITY_SAMPLES`), verifies the ONNX file on up to
:data:`PROBE_SAMPLES` inputs (no more than the fidelity check compared, whose outputs it reuses) and
gzips the file for the report. A tuning trial is judged on its own ONNX
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
import math
from typing import Iterator

import numpy as np

#: Inputs on which an exported file's outputs are compared with the framework model's.
PROBE_SAMPLES = 16

#: Output values the fidelity comparison looks at. A correlation over a few thousand values already
#: tells a faithful model from a broken one; an ImageNet classifier gives them in 8 inputs, so running
#: the simulated model over 64 would add seconds (a ResNet50 input costs ~60 ms on 2 cores in PyTorch,
#: more in Keras) and nothing to the check, while a model with a handful of outputs needs the 64.
FIDELITY_VALUES = 4096

#: Fewest inputs the fidelity comparison uses (unless :func:`quick_checks` says otherwise): the
#: correlation should not rest on one or two inputs however large the outputs are.
MIN_FIDELITY_SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class Checks:
    """``samples``: inputs of the fidelity comparison and export's verification (None: the defaults);
    ``gzip``: whether exported files' gzip sizes are measured."""

    samples: int | None = None
    gzip: bool = True


_ACTIVE: contextvars.ContextVar[Checks] = contextvars.ContextVar("slimkit_checks", default=Checks())


def fidelity_samples(outputs: np.ndarray | None = None) -> int:
    """Calibration inputs on which the quantized model is compared with the float model.

    Args:
        outputs: the float model's outputs on the first inputs (batch first), when known: the count is
            the fewest inputs giving :data:`FIDELITY_VALUES` output values, within
            :data:`MIN_FIDELITY_SAMPLES` and :data:`~slimkit.quant.methods.FIDELITY_SAMPLES`; unknown,
            the latter (calibration records that many outputs).
    """
    from slimkit.quant.methods import FIDELITY_SAMPLES

    samples = _ACTIVE.get().samples
    if samples is not None:
        return samples
    if outputs is None or np.ndim(outputs) == 0 or len(outputs) == 0:
        return FIDELITY_SAMPLES
    per_input = max(1, int(np.prod(np.shape(outputs)[1:], dtype=np.int64)))
    return int(min(FIDELITY_SAMPLES, max(MIN_FIDELITY_SAMPLES, math.ceil(FIDELITY_VALUES / per_input))))


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
