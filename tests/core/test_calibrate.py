"""Calibration passes: sized by the activations' memory, the same ranges however the inputs are split,
and the float outputs recorded in the same passes."""

from __future__ import annotations

import numpy as np
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
