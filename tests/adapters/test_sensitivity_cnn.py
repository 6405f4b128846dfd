"""Sensitivity on the digits CNN twins (conv1-bn1, depthwise dw, pointwise pw, fc1, logits), per framework.

The model is made fragile between ``pw`` and ``fc1`` (``tests/fragile.py``: one pw channel times 1e4, the
matching fc1 input divided by it). The metric is the MSE against the float model's outputs on 128 digits, so
the baseline is 0 and every drop is the error a change brings.

Measured (torch and keras agree to 4 digits): int8 of fc1 alone brings MSE 0.083, of pw alone 0.018, of any
other layer below 1e-5; fc1's output SQNR is -0.3 dB (nothing but its bias survives: its kernel's column for
the scaled channel rounds to zero too), pw's 44 dB (its output is dominated by the one huge channel, which is
exact). Prune curves, the stated "monotone-ish": for every layer the MSE grows with the ratio
(0.25 < 0.5 < 0.75), strictly in these runs (e.g. fc1 0.034, 0.035, 0.049; conv1 0.0004, 0.0042, 0.027).
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit import SlimkitWarning
from slimkit.registry import adapter_for
from fragile import digits_images, fidelity_data, make_fragile
from frameworks import building
from twins import twin_pair

RECIPE = {"stages": [{"quantize": {"method": "static"}}],
          "analyze": {"prune": {"ratios": [0.25, 0.5, 0.75]}, "quantize": {"bits": [8]}, "samples": 64}}


@pytest.fixture(params=building("twins"))
def cnn(request):
    fw = request.param
    model = twin_pair("cnn", seed=1, he=True, frameworks=(fw,))[fw]
    return fw, model


def test_fragile_model_is_the_same_in_float_and_broken_in_int8(cnn):
    fw, model = cnn
    x = digits_images(fw, 128)
    fragile = make_fragile(model, "pw", "fc1")
    before, after = adapter_for(model).predict(x), adapter_for(fragile).predict(x)
    assert np.abs(after - before).max() <= 1e-4 * np.abs(before).max()
    recipe = {"stages": [{"quantize": {"method": "static", "max_float_share": 0.0}}]}
    with pytest.warns(SlimkitWarning, match="int8 changes what this model computes"):
        q = slimkit.compress(fragile, recipe, calib_data=x[:64], verbose=False).model
    corr = float(np.corrcoef(adapter_for(q).predict(x).ravel(), before.ravel())[0, 1])
    assert corr < 0.5, corr  # (the same recipe on the plain twin: above 0.99; its int8 rows below are benign)


def test_quant_order_puts_the_fragile_pair_first(cnn):
    fw, model = cnn
    x = digits_images(fw, 128)
    fragile = make_fragile(model, "pw", "fc1")
    weights = {info.name: adapter_for(fragile).get_weights(info.name) for info in adapter_for(fragile).layers()}
    result = slimkit.sensitivity(fragile, RECIPE, eval_data=fidelity_data(fragile, x), calib_data=x, verbose=False)
    print(result.to_markdown())
    assert result.metric_name == "mse" and result.baseline == 0.0
    order = result.quant_order()
    assert order[:2] == ["fc1", "pw"], order
    rows = {(r.layer, r.action, r.setting): r for r in result.rows}
    assert rows[("fc1", "quantize", 8.0)].drop > 0.01 and rows[("pw", "quantize", 8.0)].drop > 0.01
    assert all(rows[(name, "quantize", 8.0)].drop < 1e-4 for name in ("conv1", "dw", "logits"))
    assert rows[("fc1", "quantize", 8.0)].sqnr_db < 1.0 and rows[("conv1", "quantize", 8.0)].sqnr_db > 30
    for name in ("conv1", "dw", "pw", "fc1", "logits"):
        curve = result.prune_curve(name)
        assert [r for r, _ in curve] == [0.25, 0.5, 0.75]
        drops = [d for _, d in curve]
        assert 0 < drops[0] < drops[1] < drops[2], (name, curve)
    # the model passed in is never changed
    for info in adapter_for(fragile).layers():
        for key, value in adapter_for(fragile).get_weights(info.name).items():
            np.testing.assert_array_equal(value, weights[info.name][key])
