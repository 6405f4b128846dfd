"""Outputs a quantize stage already computed, reused by the export that follows it.

The quantize stage runs the float model and the simulated int8 model on the first calibration inputs
to measure fidelity (and, for static int8, to choose which layers stay float). Exporting then needs the
same two outputs on the same inputs to verify onnxruntime's file. Running the models again costs two
forward passes (seconds on a ResNet50), so the stage's outputs travel with the result instead.

They are only used while they still describe the model: the export runs the model on the first of those
inputs and compares with what was recorded (a model trained or changed since gives other outputs), and
the inputs must be the ones the outputs were computed on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimkit.data import Inputs, head, leaves, n_samples

#: Relative agreement (of the output's range) a fresh output must have with the recorded one.
_AGREEMENT = 1e-4


@dataclass(frozen=True)
class KnownOutputs:
    """The float and the simulated model's outputs on ``inputs`` (batch first, in the model's layout).

    Attributes:
        inputs: the calibration inputs the outputs were computed on.
        reference: the float model's outputs.
        simulated: the fake-quant model's outputs.
    """

    inputs: Inputs
    reference: np.ndarray
    simulated: np.ndarray

    def covering(self, probe: Inputs) -> tuple[np.ndarray, np.ndarray] | None:
        """``(reference, simulated)`` for ``probe`` (any input form: array, tuple or dict of arrays)
        when it is the first rows of :attr:`inputs`, else None."""
        count = n_samples(probe)
        if count > n_samples(self.inputs) or len(self.reference) < count or len(self.simulated) < count:
            return None
        if not _same_inputs(head(self.inputs, count), probe):
            return None
        return self.reference[:count], self.simulated[:count]

    def still_describes(self, simulated_now: np.ndarray) -> bool:
        """True when ``simulated_now`` (the model's output on the first input, run now) matches the record.

        Not bit equality: a batch of one may take other kernels than the recorded batch did, and a
        fake-quant output can then round one step differently."""
        recorded = self.simulated[:1]
        if recorded.shape != simulated_now.shape:
            return False
        span = float(np.max(self.simulated) - np.min(self.simulated)) if self.simulated.size else 0.0
        step = 2.0 * _step_of(self.simulated)
        tolerance = max(_AGREEMENT * span, step, 1e-6)
        return bool(np.all(np.abs(recorded - simulated_now) <= tolerance))


def _same_inputs(a: Inputs, b: Inputs) -> bool:
    """The same form (array, positional or named arrays) and equal arrays, dtype included."""
    if type(a) is not type(b) or (isinstance(a, dict) and list(a) != list(b)):
        return False
    pairs = list(zip(leaves(a), leaves(b)))
    return len(pairs) == len(leaves(a)) == len(leaves(b)) and all(
        np.shape(x) == np.shape(y) and np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
        for x, y in pairs)


def _step_of(values: np.ndarray) -> float:
    """The smallest gap between distinct output values when they lie on a grid of at most 256 levels
    (a quantized output), else 0."""
    levels = np.unique(values)
    if len(levels) < 2 or len(levels) > 256:
        return 0.0
    return float(np.min(np.diff(levels)))
