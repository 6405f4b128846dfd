"""How much checking a compression does: the defaults, and tuning trials' quick checks."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit import checks
from slimkit.quant.methods import FIDELITY_SAMPLES

pytestmark = pytest.mark.usefixtures("fake_registered")


def test_quick_checks_cut_samples_and_gzip_inside_the_block_only():
    assert (checks.fidelity_samples(), checks.probe_samples(), checks.measure_gzip()) == \
        (FIDELITY_SAMPLES, checks.PROBE_SAMPLES, True)
    with checks.quick_checks(samples=3):
        assert (checks.fidelity_samples(), checks.probe_samples(), checks.measure_gzip()) == (3, 3, False)
        with checks.quick_checks(gzip=True):
            assert (checks.probe_samples(), checks.measure_gzip()) == (2, True)
        assert checks.probe_samples() == 3
    assert checks.probe_samples() == checks.PROBE_SAMPLES
    with pytest.raises(ValueError, match="samples must be at least 2"):
        with checks.quick_checks(samples=1):
            pass


def test_the_fidelity_inputs_follow_the_output_size():
    # as many inputs as give FIDELITY_VALUES output values, within MIN_FIDELITY_SAMPLES..FIDELITY_SAMPLES
    assert checks.FIDELITY_VALUES == 4096 and checks.MIN_FIDELITY_SAMPLES == 8 and FIDELITY_SAMPLES == 64
    assert checks.fidelity_samples(np.zeros((16, 1000), np.float32)) == 8  # an ImageNet classifier
    assert checks.fidelity_samples(np.zeros((16, 100), np.float32)) == 41
    assert checks.fidelity_samples(np.zeros((16, 10), np.float32)) == FIDELITY_SAMPLES
    assert checks.fidelity_samples(np.zeros((16, 8, 64), np.float32)) == 8
    assert checks.fidelity_samples(None) == FIDELITY_SAMPLES  # not known yet: calibration records that many
    with checks.quick_checks(samples=3):
        assert checks.fidelity_samples(np.zeros((16, 10), np.float32)) == 3


def fidelity_note(report) -> str:
    return next(n for n in report.notes if "correlate" in n)


def test_the_fidelity_comparison_runs_on_the_quick_checks_inputs(mlp, classification_data):
    x, _ = classification_data
    recipe = {"seed": 0, "stages": [{"quantize": {"method": "static"}}]}
    full = slimkit.compress(mlp, recipe, calib_data=x[:40], verbose=False)
    assert "on 40 calibration inputs" in fidelity_note(full.report)
    with checks.quick_checks():
        quick = slimkit.compress(mlp, recipe, calib_data=x[:40], verbose=False)
    assert "on 2 calibration inputs" in fidelity_note(quick.report)
    # the same model either way: only the check is smaller
    assert quick.report.quant == full.report.quant
