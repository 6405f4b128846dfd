"""Twins with identical weights and calibration data get the same quantization, for every pair of
frameworks of the ``zoo`` family.

Scales may differ by float rounding between the frameworks' kernels (1e-5 relative); zero points
and the set of quantized tensors must be identical.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.registry import adapter_for
import zoo
from frameworks import pair_ids, pairs

PAIRS, PAIR_IDS = pairs("zoo"), pair_ids("zoo")

STATIC = {"seed": 0, "stages": [{"quantize": {"method": "static", "activations": {"samples": 64}}}]}


def quantized(model, arch, framework, recipe=STATIC):
    x = zoo.sample(arch, framework, n=64, seed=3)
    result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
    adapter = adapter_for(result.model)
    return adapter.quant_plan(), adapter.quant_state(), result


def per_layer(plan, state):
    """layer -> {role: (scale, zero_point)} with roles input, output, kernel, bias."""
    out = {}
    for site in plan.layers:
        roles = {"kernel": f"{site.layer}/kernel", "bias": f"{site.layer}/bias",
                 "input": site.input, "output": site.output}
        out[site.layer] = {role: (state[key]["scale"], state[key]["zero_point"])
                           for role, key in roles.items() if key is not None and state.get(key)}
    return out


def assert_same_per_layer(layers_a, layers_b, arch, rtol):
    """Same layers and roles; scales within ``rtol``, zero points equal."""
    assert layers_a.keys() == layers_b.keys() and layers_a
    for layer, roles in layers_a.items():
        assert roles.keys() == layers_b[layer].keys(), layer
        for role, (scale, zp) in roles.items():
            b_scale, b_zp = layers_b[layer][role]
            np.testing.assert_allclose(scale, b_scale, rtol=rtol, err_msg=f"{arch} {layer} {role}")
            np.testing.assert_array_equal(zp, b_zp, err_msg=f"{arch} {layer} {role}")


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("arch", list(zoo.ARCHS))
def test_twins_get_the_same_scales_and_zero_points(arch, pair):
    a, b = pair
    models = zoo.twins(arch, seed=4, frameworks=pair)
    a_plan, a_state, a_result = quantized(models[a], arch, a)
    b_plan, b_state, b_result = quantized(models[b], arch, b)
    assert len(a_plan.acts) == len(b_plan.acts)
    assert_same_per_layer(per_layer(a_plan, a_state), per_layer(b_plan, b_state), arch, rtol=1e-5)
    assert a_result.report.notes == b_result.report.notes  # the same batch norms were folded


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("arch", ["plain", "mlp"])
def test_twins_simulate_the_same_outputs(arch, pair):
    a, b = pair
    models = zoo.twins(arch, seed=4, frameworks=pair)
    outs, steps = {}, {}
    for fw in pair:
        plan, state, result = quantized(models[fw], arch, fw)
        outs[fw] = adapter_for(result.model).predict(zoo.sample(arch, fw, n=16, seed=9))
        steps[fw] = float(state[plan.layers[-1].output]["scale"])
    np.testing.assert_allclose(steps[a], steps[b], rtol=1e-5)
    diff = np.abs(outs[a] - outs[b])
    # outputs are quantized: equal up to the scales' last bit, or one step apart where float
    # rounding tipped a tie
    assert np.max(diff) <= steps[a] * 1.001
    assert np.mean(diff > 0.5 * steps[a]) < 0.02


DYNAMIC = {"seed": 0, "stages": [{"quantize": {"method": "dynamic"}}]}
# QAT with a vanishing learning rate and unshuffled batches: both frameworks see the same batches in
# the same order, so the moving-average ranges and the kernels' ranges must agree.
QAT = {"seed": 0, "fine_tune": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-12, "shuffle": False},
       "stages": [{"quantize": {"method": "qat"}}]}


def trained(model, arch, framework, recipe):
    x = zoo.sample(arch, framework, n=64, seed=3)
    y = np.arange(64) % 4
    result = slimkit.compress(model, recipe, train_data=(x, y), calib_data=x, verbose=False)
    adapter = adapter_for(result.model)
    return adapter.quant_plan(), adapter.quant_state()


# No QAT case for mlp: its dropout draws different random masks in each framework while training.
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("arch, recipe", [("plain", DYNAMIC), ("mlp", DYNAMIC), ("plain", QAT)],
                         ids=["plain-dynamic", "mlp-dynamic", "plain-qat"])
def test_twins_agree_under_dynamic_and_qat(arch, recipe, pair):
    a, b = pair
    models = zoo.twins(arch, seed=4, frameworks=pair)
    a_plan, a_state = trained(models[a], arch, a, recipe)
    b_plan, b_state = trained(models[b], arch, b, recipe)
    assert_same_per_layer(per_layer(a_plan, a_state), per_layer(b_plan, b_state), arch, rtol=1e-4)
