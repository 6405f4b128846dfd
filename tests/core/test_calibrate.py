"""Calibration passes: sized by the activations' memory, the same ranges however the inputs are split,
and the float outputs recorded in the same passes."""

from __future__ import annotations

import numpy as np
import slimkit
from slimkit.quant import calibrate as calibration
from slimkit.recipe import ActivationQuant

from fake_adapter import FakeAdapter, make_mlp

NODES = ["fc1", "fc2/relu", "logits"]


class Counting(FakeAdapter):
    """Records the inputs of each layer_outputs pass."""

    passes: list[int]

    def layer_outputs(self, x, names, batch_size=256):
        self.passes.append(len(x))
        return super().layer_outputs(x, names, batch_size)


def _adapter() -> Counting:
    adapter = Counting(make_mlp(seed=3))
    adapter.passes = []
    return adapter


def test_passes_hold_no_more_activation_bytes_than_allowed(monkeypatch):
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    whole = _adapter()
    expected = calibration.calibrate_recording(whole, NODES, x, ActivationQuant(samples=50), "q", batch_size=64, verbose=False)
    assert whole.passes == [1, 49]
    # per input: fc1 16 + fc2/relu 12 + logits 4 + the recorded output 4 floats = 144 bytes; 1 KiB fits 7
    monkeypatch.setattr(calibration, "PASS_BYTES", 1024)
    small = _adapter()
    got = calibration.calibrate_recording(small, NODES, x, ActivationQuant(samples=50), "q", batch_size=64,
                                          verbose=False, record=20)
    assert small.passes == [1] + [7] * 7
    assert got.ranges == expected.ranges  # min-max does not depend on how the inputs were split
    np.testing.assert_allclose(got.outputs, small.predict(x[:20]), atol=1e-6, rtol=0)


def test_histogram_calibration_stays_close_when_passes_shrink(monkeypatch):
    x = np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32)
    settings = ActivationQuant(samples=64, calibration="percentile")
    big = calibration.calibrate_recording(_adapter(), NODES, x, settings, "q", batch_size=64, verbose=False).ranges
    monkeypatch.setattr(calibration, "PASS_BYTES", 512)
    small = calibration.calibrate_recording(_adapter(), NODES, x, settings, "q", batch_size=64, verbose=False).ranges
    for node in NODES:
        span = big[node][1] - big[node][0]
        np.testing.assert_allclose(small[node], big[node], atol=0.02 * span, rtol=0, err_msg=node)


def test_moments_of_the_first_inputs_are_taken_across_passes(monkeypatch):
    """Rows 0..2 come from the single-input first pass and the start of the next: merged, they give the
    moments of the first three inputs' tensors, as export's mapping would compute them."""
    from slimkit.quant.moments import Moments

    x = np.random.default_rng(2).normal(size=(20, 8)).astype(np.float32)
    adapter = _adapter()
    got = calibration.calibrate_recording(adapter, NODES, x, ActivationQuant(samples=20), "q", batch_size=8,
                                          verbose=False, summarize=3)
    assert adapter.passes == [1, 8, 8, 3]
    direct = adapter.layer_outputs(x[:3], NODES)
    for node in NODES:
        want, have = Moments.of(direct[node]), got.moments[node]
        assert have.size == want.size and (have.low, have.high) == (want.low, want.high), node
        assert abs(have.mean - want.mean) <= 1e-6 * max(1.0, want.max_abs) and abs(have.rms - want.rms) <= 1e-6 * want.rms
    plain = calibration.calibrate_recording(_adapter(), NODES, x, ActivationQuant(samples=20), "q", verbose=False)
    assert plain.moments is None and plain.ranges == got.ranges


class Keeping:
    """A plugin observer that keeps every batch it is given (so it must be given copies)."""

    def __init__(self):
        self.batches = []

    def update(self, x):
        self.batches.append(x)

    def range(self):
        flat = np.concatenate([b.ravel() for b in self.batches])
        return np.float32(flat.min()), np.float32(flat.max())

    @classmethod
    def build(cls, options, settings):
        return cls()


class Reusing(FakeAdapter):
    """Streams every tensor through one buffer it overwrites afterwards, as a framework reusing memory would."""

    def stream_outputs(self, x, names, consume, batch_size=256):
        for name, values in self.layer_outputs(x, names, batch_size).items():
            buffer = np.array(values)
            consume(name, buffer)
            buffer[...] = 1e9  # the framework reuses its memory once the tensor was handed over


def test_observers_that_may_keep_batches_get_copies_and_builtin_ones_views():
    from slimkit.quant.observers.base import OBSERVERS

    x = np.random.default_rng(3).normal(size=(12, 8)).astype(np.float32)
    adapter = Reusing(make_mlp(seed=3))
    expected = {n: (float(v.min()), float(v.max())) for n, v in adapter.layer_outputs(x, NODES).items()}
    # minmax declares keeps_batches = False: it reads each view at once, before the buffer changes
    got = calibration.calibrate_recording(adapter, NODES, x, ActivationQuant(samples=12), "q", verbose=False)
    assert got.ranges == expected
    # a plugin without that promise keeps its batches: only copies keep them intact
    slimkit.register_observer("keeping")(Keeping)
    try:
        kept = calibration.calibrate_recording(adapter, NODES, x, ActivationQuant(samples=12, calibration="keeping"),
                                               "q", verbose=False)
    finally:
        OBSERVERS.unregister("keeping")
    assert kept.ranges == expected
