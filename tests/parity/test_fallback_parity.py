"""Twins with identical weights and calibration data keep the same layers float under static int8's
fidelity fallback, and report the same correlations, for every pair of frameworks of the ``zoo`` family.

Two regimes: a target the fallback reaches part-way through its bisection (``plain``: the search must
stop at the same prefix), and one it cannot reach within a generous float share (``residual``: both keep
the closest trial). Layer order may differ between the frameworks' graphs (a shortcut branch is traced
before or after the main one), so the float layers are compared as sets.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import slimkit
from slimkit import SlimkitWarning
import zoo
from frameworks import pair_ids, pairs

PAIRS, PAIR_IDS = pairs("zoo"), pair_ids("zoo")
CORRELATIONS = re.compile(r"correlation ([-\d.]+) with every layer int8, ([-\d.]+) now")


def fallback(model, arch, framework, target, share):
    recipe = {"seed": 0, "stages": [{"quantize": {
        "method": "static", "min_correlation": target, "max_float_share": share,
        "activations": {"samples": 64}}}]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SlimkitWarning)
        result = slimkit.compress(model, recipe, calib_data=zoo.sample(arch, framework, n=64, seed=3),
                                  verbose=False)
    messages = [str(w.message) for w in caught if "kept float" in str(w.message)]
    assert len(messages) == 1, messages
    before, after = (float(v) for v in CORRELATIONS.search(messages[0]).groups())
    return result.report, before, after, messages[0]


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("arch, target, share, reached", [
    ("plain", 0.99975, 0.5, True),
    ("residual", 0.999999, 0.99, False),
], ids=["plain-reached", "residual-short"])
def test_twins_keep_the_same_layers_float(arch, target, share, reached, pair):
    a, b = pair
    models = zoo.twins(arch, seed=4, frameworks=pair)
    rep_a, before_a, after_a, msg_a = fallback(models[a], arch, a, target, share)
    rep_b, before_b, after_b, msg_b = fallback(models[b], arch, b, target, share)
    assert rep_a.float_layers and set(rep_a.float_layers) == set(rep_b.float_layers)
    assert set(rep_a.quantized) == set(rep_b.quantized)
    assert rep_a.quantized  # the fallback stopped short of keeping everything float
    # the correlations, printed to two significant digits of 1 - r, agree
    np.testing.assert_allclose([before_a, after_a], [before_b, after_b], atol=2e-6)
    assert after_a > before_a
    assert ("short of min_correlation" in msg_a) is (not reached)
    assert ("short of min_correlation" in msg_b) is (not reached)
    assert (after_a >= target) is reached
