"""Quantized export verification catches real faults and passes faithful models.

A wrong activation scale or saturated int8 weights (injected into the parameters the QDQ file is
written with) make onnxruntime's int8 output far worse against the float model than the simulation
is: export refuses, names the recipe keys that relax it, and writes no file. A model whose int8
output differs from the simulation by more than the step bound but is as faithful to the float model
passes (``export.onnx.quant_error_ratio``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import slimkit
import slimkit.quant.export as quant_export
from slimkit.quant.specs import bias_params
import zoo
from frameworks import building

STATIC = {"seed": 0, "stages": [{"quantize": {"method": "static", "activations": {"samples": 64}}}]}


def _quantized(framework, recipe=STATIC):
    model = zoo.twins("plain", seed=4)[framework]
    x = zoo.sample("plain", framework, n=64, seed=3)
    return slimkit.compress(model, recipe, calib_data=x, verbose=False)


def _corrupt(monkeypatch, change):
    """Makes the export write the QDQ file with parameters ``change`` alters (the simulation keeps its own)."""
    real = quant_export.site_params

    def corrupted(adapter, plan):
        params = real(adapter, plan)
        change(plan, params)
        return params

    monkeypatch.setattr(quant_export, "site_params", corrupted)


def _consistent_biases(plan, params):
    """Bias scales follow their input and kernel scales, as the integer kernels need (the writer checks)."""
    for site in plan.layers:
        if f"{site.layer}/bias" in params:
            kernel = params[f"{site.layer}/kernel"]
            params[f"{site.layer}/bias"] = bias_params(params[site.input].scale, kernel.scale, kernel.axis)


def wrong_activation_scale(plan, params):
    """A hidden activation's scale an eighth of the calibrated one, as a wrong range gives."""
    key = plan.layers[1].input  # the input of the second quantized layer
    params[key] = dataclasses.replace(params[key], scale=np.float32(params[key].scale / 8))
    _consistent_biases(plan, params)


def saturated_weights(plan, params):
    key = f"{plan.layers[0].layer}/kernel"  # a quarter of the scale: most int8 weights clip at the range ends
    params[key] = dataclasses.replace(params[key], scale=(np.asarray(params[key].scale) / 4).astype(np.float32))
    _consistent_biases(plan, params)


def nudged_activation_scale(plan, params):
    """A scale off by 0.1%: some values round to the neighbouring step, the model is no worse."""
    key = plan.layers[1].input
    params[key] = dataclasses.replace(params[key], scale=np.float32(params[key].scale * 1.001))
    _consistent_biases(plan, params)


@pytest.mark.parametrize("framework", building("zoo"))
@pytest.mark.parametrize("fault", [wrong_activation_scale, saturated_weights], ids=["wrong-scale", "saturation"])
def test_an_injected_fault_is_refused_and_no_file_written(framework, fault, monkeypatch, tmp_path):
    result = _quantized(framework)
    _corrupt(monkeypatch, fault)
    path = tmp_path / "m.onnx"
    with pytest.raises(slimkit.ExportError) as info:
        result.export_onnx(path)
    message = str(info.value)
    assert "export.onnx.quant_tolerance" in message and "export.onnx.quant_error_ratio" in message
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("framework", building("zoo"))
def test_int8_off_the_simulation_but_as_faithful_passes(framework, monkeypatch, tmp_path):
    """Values a step away from the simulation (a scale nudged by 0.1%), with the step bound made tiny
    (no output step, tolerances 1e-12): only the fidelity rule can accept the export, and it does."""
    recipe = dict(STATIC, export={"onnx": {"tolerance": 1e-12, "quant_tolerance": 1e-12}})
    result = _quantized(framework, recipe)
    _corrupt(monkeypatch, nudged_activation_scale)
    monkeypatch.setattr(quant_export, "output_step", lambda *args: (None, 0.0))
    result.export_onnx(tmp_path / "m.onnx")
    q = result.report.quant_exports[-1]
    assert q.max_abs_diff > q.tolerance  # the step bound alone would have refused it
    assert 0 < q.int8_error <= 1.5 * q.simulated_error
