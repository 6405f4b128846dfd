"""Static int8's fidelity-driven fallback over the numpy fake framework: the shortest float prefix that
brings the outputs' correlation with the float model up to the target, and the switch that turns it off."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import slimkit
from slimkit import RecipeError, SlimkitWarning

from fake_adapter import FakeAdapter, make_mlp

pytestmark = pytest.mark.usefixtures("fake_registered")

NAMES = ["fc1", "fc2", "fc3", "fc4", "fc5", "fc6", "fc7", "fc8", "logits"]


@pytest.fixture(scope="module")
def deep():
    """Nine dense layers (8 -> 32 x 8 -> 4) and 200 inputs."""
    x = np.random.default_rng(123).normal(size=(200, 8)).astype(np.float32)
    return make_mlp(sizes=(8,) + (32,) * 8 + (4,), batchnorm=False, other=False), x


def static(**options):
    layers = options.pop("layers", None)
    body = {"method": "static", **options, **({"layers": layers} if layers else {})}
    return {"seed": 0, "stages": [{"quantize": body}]}


def correlation(model, quantized, x):
    ref = FakeAdapter(model).predict(x[:64]).ravel()
    return float(np.corrcoef(ref, FakeAdapter(quantized).predict(x[:64]).ravel())[0, 1])


def r_with_float_prefix(model, x, k):
    """Correlation of the int8 model whose first ``k`` layers the recipe excludes (no fallback)."""
    recipe = static(max_float_share=0.0, layers={"exclude": NAMES[:k]} if k else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlimkitWarning)
        return correlation(model, slimkit.compress(model, recipe, calib_data=x, verbose=False).model, x)


def test_fallback_keeps_the_shortest_float_prefix_that_reaches_the_target(deep):
    model, x = deep
    curve = [r_with_float_prefix(model, x, k) for k in range(5)]
    assert curve[2] < curve[3] and curve[4] > curve[2]  # the premise: floating fc3 as well helps here
    target = (curve[2] + curve[3]) / 2
    with pytest.warns(SlimkitWarning, match=r"3 of 9 selected layers kept float .*: fc1, fc2, fc3$"):
        result = slimkit.compress(model, static(min_correlation=target), calib_data=x, verbose=False)
    assert result.report.float_layers == ["fc1", "fc2", "fc3"]
    assert result.report.quantized == NAMES[3:]
    assert correlation(model, result.model, x) == pytest.approx(curve[3], abs=1e-9)
    assert correlation(model, result.model, x) >= target
    # the sites of the float layers are gone: fc4's input is the first quantized tensor
    assert "fc1/kernel" not in {row.site for row in result.report.quant}
    assert {"fc3/relu", "fc4/kernel"} <= {row.site for row in result.report.quant}


def test_no_fallback_when_the_target_holds_or_it_is_switched_off(deep):
    model, x = deep
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlimkitWarning)
        result = slimkit.compress(model, static(), calib_data=x, verbose=False)  # r > 0.999 here
    assert result.report.quantized == NAMES and result.report.float_layers == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlimkitWarning)
        off = slimkit.compress(model, static(min_correlation=0.99999, max_float_share=0.0), calib_data=x,
                               verbose=False)
    assert off.report.quantized == NAMES


def test_unreachable_target_keeps_the_closest_trial_and_warns(deep):
    model, x = deep
    with pytest.warns(SlimkitWarning) as record:
        result = slimkit.compress(model, static(min_correlation=1.0, max_float_share=0.3), calib_data=x,
                                  verbose=False)
    messages = [str(w.message) for w in record]
    # int(0.3 * 9) layers at most, and the shortfall said
    assert any(re.search(r"2 of 9 selected layers kept float .*short of min_correlation 1\.0", m) for m in messages)
    assert len(result.report.float_layers) == 2


@pytest.mark.parametrize("key, value, phrase", [
    ("min_correlation", 1.5, r"min_correlation: 1\.5 is outside"),
    ("max_float_share", -0.1, r"max_float_share: -0\.1 is outside"),
    ("max_float_share", "half", r"max_float_share: expected a number"),
])
def test_fallback_options_are_checked(key, value, phrase):
    with pytest.raises(RecipeError, match=rf"stages\[0\]\.quantize\.{phrase}"):
        slimkit.Recipe.load(static(**{key: value}))
