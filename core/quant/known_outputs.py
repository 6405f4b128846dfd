"""Outputs a quantize stage already computed, reused by the export that follows it.

The quantize stage runs the float model and the simulated int8 model on the first calibration inputs
to measure fidelity (and, for static int8, to choose which layers stay float). Exporting then needs the
same two outputs on the same inputs to verify onnxruntime's file. Running the models again costs two
forward passes (seconds on a ResNet50; a Keras model traces its predict function again for each new
batch shape), so the stage's outputs travel with the result instead.

They are only used while they still describe the model: the inputs must be the ones the outputs were
computed on, and a digest of every array the model holds (weights, batch-norm statistics, fake-quant
parameters; CRC-32, a few hundredths of a second per 100 MB) must equal the one taken when compress
returned. A model trained, edited or re-quantized since gives another digest, and both models run again.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from slimkit.adapter import ModelAdapter
from slimkit.data import PROBE_BATCH, Inputs, head, leaves, n_samples, take
from slimkit.quant.moments import Moments

#: Inputs the ONNX tensors of activation sites are identified on. Every float tensor of the graph is
#: kept for them at once (the export's memory peak: 0.6 GB for a ResNet50 at 224x224 with 4), and two
#: already give each tensor's moments over hundreds of thousands of values; anchoring to the layers'
#: nodes decides ties, and the file is verified on the whole probe afterwards.
MAPPING_SAMPLES = 2


@dataclass(frozen=True)
class KnownOutputs:
    """The float and the simulated model's outputs on ``inputs`` (batch first, in the model's layout).

    Attributes:
        inputs: the calibration inputs the outputs were computed on.
        reference: the float model's outputs.
        simulated: the fake-quant model's outputs.
        digest: :func:`model_digest` of the model they describe ("" until compress returns it).
        output_grid: the plan's :attr:`~slimkit.quant.plan.QuantPlan.output_grid`, which a plan read back
            from the model does not carry (finding it again captures the model's graph).
        site_moments: the float model's activation sites' :class:`Moments` on the first
            :data:`MAPPING_SAMPLES` inputs (calibration took them), which export's mapping compares.
    """

    inputs: Inputs
    reference: np.ndarray
    simulated: np.ndarray
    digest: str = ""
    output_grid: tuple[str, ...] | None = None
    site_moments: dict[str, Moments] | None = None

    def moments_on(self, few: Inputs, sites: list[str]) -> dict[str, Moments] | None:
        """The recorded moments of ``sites`` when ``few`` is the first :data:`MAPPING_SAMPLES` rows of
        :attr:`inputs` and every site has them, else None."""
        if self.site_moments is None or n_samples(few) != MAPPING_SAMPLES or n_samples(self.inputs) < MAPPING_SAMPLES:
            return None
        if not _same_inputs(head(self.inputs, MAPPING_SAMPLES), few) or any(s not in self.site_moments for s in sites):
            return None
        return {s: self.site_moments[s] for s in sites}

    def covering(self, probe: Inputs) -> tuple[np.ndarray, np.ndarray] | None:
        """``(reference, simulated)`` for ``probe`` (any input form: array, tuple or dict of arrays)
        when it is the first rows of :attr:`inputs`, else None."""
        count = n_samples(probe)
        if count > n_samples(self.inputs) or len(self.reference) < count or len(self.simulated) < count:
            return None
        if not _same_inputs(head(self.inputs, count), probe):
            return None
        return self.reference[:count], self.simulated[:count]

    def describes(self, adapter: ModelAdapter) -> bool:
        """True when ``adapter``'s model holds exactly the arrays it held when the outputs were recorded."""
        return bool(self.digest) and model_digest(adapter) == self.digest


def outputs_on(adapter: ModelAdapter, x: Inputs, first: np.ndarray | None) -> np.ndarray:
    """``adapter.predict(x)``, where ``first`` (outputs already read on the first rows of ``x``, as
    calibration records them) spares running those rows again."""
    count = 0 if first is None else min(len(first), n_samples(x))
    if count == 0:
        return adapter.predict(x, PROBE_BATCH)
    if count == n_samples(x):
        return first[:count]
    return np.concatenate([first[:count], adapter.predict(take(x, slice(count, None)), PROBE_BATCH)])


def model_digest(adapter: ModelAdapter) -> str:
    """A digest of every array the model's outputs depend on (names, shapes, dtypes and bytes)."""
    crc, count = 0, 0
    for name, value in adapter.state_arrays():
        value = np.ascontiguousarray(value)
        crc = zlib.crc32(f"{name}|{value.shape}|{value.dtype}".encode(), crc)
        crc = zlib.crc32(memoryview(value).cast("B") if value.size else b"", crc)
        count += 1
    return f"{count}:{crc:08x}"


def _same_inputs(a: Inputs, b: Inputs) -> bool:
    """The same form (array, positional or named arrays) and equal arrays, dtype included."""
    if type(a) is not type(b) or (isinstance(a, dict) and list(a) != list(b)):
        return False
    pairs = list(zip(leaves(a), leaves(b)))
    return len(pairs) == len(leaves(a)) == len(leaves(b)) and all(
        np.shape(x) == np.shape(y) and np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
        for x, y in pairs)
