"""The basic strategy on the digits CNN twins made fragile (``tests/fragile.py``: one ``pw`` output channel
times 1e4, the matching ``fc1`` input column divided by it, the same function in float): int8 of ``fc1``
destroys the model (its kernel's scaled column rounds to zero and its input range is one channel's), so
the fallback keeps ``fc1`` float first, then ``pw``, whose output is the same broken tensor.

The metric is the MSE against the float model's outputs (random-weight twins), tolerance absolute.
"""

from __future__ import annotations

import warnings

import pytest

import slimkit
from fragile import digits_images, fidelity_data, make_fragile
from frameworks import building
from twins import twin_pair


@pytest.fixture(params=building("twins"))
def fragile(request):
    fw = request.param
    model = twin_pair("cnn", seed=1, he=True, frameworks=(fw,))[fw]
    return fw, make_fragile(model, "pw", "fc1")


def test_basic_falls_back_the_fragile_layer_first(fragile):
    fw, model = fragile
    x = digits_images(fw, 128)
    recipe = {"version": 1, "seed": 0, "fine_tune": None,
              "stages": [{"quantize": {"method": "static", "activations": {"samples": 64}}}],
              "analyze": {"prune": None, "quantize": {"bits": [8]}, "samples": 64},
              "tune": {"strategy": "basic", "tolerance": {"absolute": 0.002}, "max_trials": 6,
                       "alternatives": False}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", slimkit.SlimkitWarning)
        result = slimkit.compress(model, recipe, calib_data=x, eval_data=fidelity_data(model, x), verbose=False)
    log = result.report.tuning
    first, second = log.trials[0], log.trials[1]
    assert first.settings == {} and first.violations["tolerance"] > 1  # every layer int8: broken
    assert second.settings == {"float:fc1": True}  # the fragile layer is the first kept float
    # then pw (the same broken tensor is its output) and on, in sensitivity order, until the target is met;
    # a candidate whose int8 file onnxruntime does not run as simulated is a failed trial, never the best
    floated = [t for t in log.trials[1:] if t.error is None]
    assert all(t.settings.get("float:fc1") is True for t in log.trials[1:])
    assert log.met and log.best_trial.settings.get("float:fc1") is True and log.best_trial in floated
    assert log.best_trial.metric <= 0.002 and log.sensitivity_seconds is not None


def test_impossible_tolerance_returns_the_closest_trial(fragile):
    fw, model = fragile
    x = digits_images(fw, 128)
    # int8 everywhere is held (float_layers: false) and int8 destroys this model: no ratio can meet it
    recipe = {"version": 1, "seed": 0, "fine_tune": None,
              "stages": [{"prune": {"method": "magnitude", "sparsity": 0.25, "scope": "layer"}},
                         {"quantize": {"method": "static", "activations": {"samples": 64}}}],
              "analyze": {"prune": {"ratios": [0.5]}, "quantize": None, "samples": 64},
              "tune": {"strategy": "sensitivity", "tolerance": {"absolute": 0.002}, "max_trials": 2,
                       "space": {"sparsity": [0.0, 0.25, 0.5], "float_layers": False}}}
    with pytest.warns(slimkit.SlimkitWarning, match=r"no configuration met mse <= 0\.002\d* in \d trials; the closest "
                                                     r"was trial \d+: mse"):
        result = slimkit.compress(model, recipe, calib_data=x, eval_data=fidelity_data(model, x), verbose=False)
    log = result.report.tuning
    assert not log.met and all(not t.feasible for t in log.trials)
    assert log.best_trial.violations["tolerance"] == min(t.violations["tolerance"] for t in log.trials)
