"""Quantize stages end to end over the numpy fake framework: folding, planning, PTQ, QAT, errors."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit import DataError, ExportError
from slimkit.quant.bn_fold import fold_batchnorm
from slimkit.quant.export import site_params
from slimkit.quant.params import fake_quantize, params_from_range, QuantParams
from slimkit.quant.plan import FakeQuantSpec, plan_sites

from fake_adapter import FakeAdapter, make_mlp

pytestmark = pytest.mark.usefixtures("fake_registered")


def quant(method="static", **body):
    return {"seed": 0, "stages": [{"quantize": {"method": method, **body}}]}


def test_batchnorm_folds_exactly_and_leaves_the_source_alone(mlp, classification_data):
    x, _ = classification_data
    before = mlp.forward(x)
    adapter = FakeAdapter(mlp)
    folded, pairs = fold_batchnorm(adapter, x[:4])
    assert pairs == [("fc1", "bn")]
    np.testing.assert_allclose(folded.predict(x), before, rtol=1e-5, atol=1e-5)
    assert "bn" not in [i.name for i in folded.layers()]
    assert "bn" in [i.name for i in adapter.layers()]  # the source model still has it
    np.testing.assert_array_equal(mlp.forward(x), before)


def test_no_fold_when_an_activation_sits_between(classification_data):
    model = make_mlp(batchnorm=False)
    model.layers.insert(1, __import__("fake_adapter").FakeBatchNorm("bn", 16, np.random.default_rng(0)))
    adapter = FakeAdapter(model)  # fc1 has a fused ReLU, then bn: not foldable
    _, pairs = fold_batchnorm(adapter, classification_data[0][:4])
    assert pairs == []


def test_plan_quantizes_each_tensor_once_after_relus():
    adapter = FakeAdapter(make_mlp(batchnorm=False, other=False))
    spec = FakeQuantSpec(-64, 64, True, 1)
    plan = plan_sites(adapter.graph(), {n: spec for n in ("fc1", "fc2", "logits")}, FakeQuantSpec(0, 255, False),
                      "static")
    assert [a.node for a in plan.acts] == ["input", "fc1/relu", "fc2/relu", "logits"]
    assert [(s.layer, s.input, s.output) for s in plan.layers] == [
        ("fc1", "input", "fc1/relu"), ("fc2", "fc1/relu", "fc2/relu"), ("logits", "fc2/relu", "logits")]
    dynamic = plan_sites(adapter.graph(), {"fc2": spec}, FakeQuantSpec(0, 255, False, mode="dynamic"), "dynamic",
                         quantize_outputs=False)
    assert [a.node for a in dynamic.acts] == ["fc1/relu"] and dynamic.layers[0].output is None


def reference_static(model, x, state):
    """The static-quantized MLP (bn folded, no scale layer) recomputed from its parameters in numpy."""
    def p(key, axis=None, bits=8, signed=False, reduce_range=False):
        s = state[key]
        return QuantParams(s["scale"], s["zero_point"], bits, signed, axis, reduce_range=reduce_range)

    def kernel(name):
        return fake_quantize(model.layer(name).weights["kernel"], p(f"{name}/kernel", 1, signed=True, reduce_range=True))

    def bias(name):
        s = state[f"{name}/bias"]
        return np.rint(model.layer(name).weights["bias"] / s["scale"]) * s["scale"]

    h = fake_quantize(x, p("input"))
    h = fake_quantize(np.maximum(h @ kernel("fc1") + bias("fc1"), 0), p("relu1"))
    h = fake_quantize(np.maximum(h @ kernel("fc2") + bias("fc2"), 0), p("fc2/relu"))
    return fake_quantize(h @ kernel("logits") + bias("logits"), p("logits"))


def test_static_ptq_computes_exactly_what_its_parameters_say(classification_data):
    x, y = classification_data
    model = make_mlp(other=False)
    result = slimkit.compress(model, quant(), calib_data=x, eval_data=(x, y), verbose=False)
    adapter = FakeAdapter(result.model)
    state = adapter.quant_state()
    assert sorted(state) == sorted(["input", "relu1", "fc2/relu", "logits"] +
                                   [f"{n}/{w}" for n in ("fc1", "fc2", "logits") for w in ("kernel", "bias")])
    assert int(state["relu1"]["zero_point"]) == 0  # post-ReLU uint8 range starts at 0
    assert np.all(np.abs(state["fc1/kernel"]["zero_point"]) == 0) and state["fc1/kernel"]["scale"].shape == (16,)
    sim = adapter.predict(x)
    ref = reference_static(adapter.model, x, state)
    np.testing.assert_allclose(sim, ref, rtol=0, atol=1e-5)
    float_out = make_mlp(other=False).forward(x)
    step = float(state["logits"]["scale"])
    assert np.max(np.abs(sim - float_out)) < 20 * step  # close to float, but really quantized
    assert np.max(np.abs(sim - float_out)) > 0
    # report: every tensor with its scale; folded bn noted; bias scale = input scale x kernel scale
    report = result.report
    rows = {r.site: r for r in report.quant}
    assert rows["fc1/kernel"].channels == 16 and rows["input"].kind == "activation"
    np.testing.assert_allclose(state["fc2/bias"]["scale"], state["relu1"]["scale"] * state["fc2/kernel"]["scale"],
                               rtol=1e-7)
    assert report.quantized == ["fc1", "fc2", "logits"] and report.float_layers == []
    assert any("bn into fc1" in n for n in report.notes)
    md = report.to_markdown()
    assert "| fc1/kernel | kernel | 8 | 16 |" in md and "quantize:static" in md


def test_layers_can_be_skipped_and_overridden(classification_data):
    x, _ = classification_data
    model = make_mlp(other=False)
    result = slimkit.compress(model, quant(layers={"exclude": ["logits"]},
                                           overrides=[{"layers": {"names": ["fc2"]}, "weights": {"per_channel": False}}]),
                              calib_data=x, verbose=False)
    assert result.report.quantized == ["fc1", "fc2"] and result.report.float_layers == ["logits"]
    state = FakeAdapter(result.model).quant_state()
    assert "logits/kernel" not in state and state["fc2/kernel"]["scale"].shape == ()
    assert state["fc1/kernel"]["scale"].shape == (16,)


def test_dynamic_quantizes_kernels_and_runtime_activations(classification_data):
    x, _ = classification_data
    model = make_mlp(other=False, batchnorm=False)
    result = slimkit.compress(model, quant("dynamic"), calib_data=x, verbose=False)
    state = FakeAdapter(result.model).quant_state()
    assert sorted(k for k, v in state.items() if v) == ["fc1/kernel", "fc2/kernel", "logits/kernel"]
    out = FakeAdapter(result.model).predict(x)
    assert 0 < np.max(np.abs(out - model.forward(x))) < 0.2


def test_qat_trains_keeps_pruned_zeros_and_ends_fixed(classification_data):
    x, y = classification_data
    model = make_mlp(other=False)
    recipe = {"seed": 0, "fine_tune": {"epochs": 10, "batch_size": 32, "optimizer": "sgd", "learning_rate": 0.2},
              "stages": [{"prune": {"sparsity": 0.5, "fine_tune": None}},
                         {"quantize": {"method": "qat", "weights": {"bits": 4}, "activations": {"bits": 6}}}]}
    result = slimkit.compress(model, recipe, train_data=(x, y), calib_data=x, eval_data=(x, y), verbose=False)
    adapter = FakeAdapter(result.model)
    plan = adapter.quant_plan()
    assert {a.spec.mode for a in plan.acts} == {"fixed"} and {s.kernel.mode for s in plan.layers} == {"fixed"}
    assert {(s.kernel.qmin, s.kernel.qmax) for s in plan.layers} == {(-8, 7)}  # reduce-range is 8-bit only
    for name in ("fc1", "fc2", "logits"):
        kernel = adapter.model.layer(name).weights["kernel"]
        assert np.mean(kernel == 0) >= 0.5 - 1e-9, name
    stage = result.report.stages[1]
    assert stage.fine_tuned and stage.steps == 10 * 7
    before, after = result.report.metrics_before["accuracy"], result.report.metrics_after["accuracy"]
    assert before < 0.3 and after > 0.7  # it learned through 4-bit weights and 6-bit activations
    with pytest.raises(ExportError, match="quantized to 6 bits; onnxruntime runs 8-bit"):
        site_params(adapter, plan)


def test_calibration_data_errors(classification_data):
    x, _ = classification_data
    with pytest.raises(DataError, match="calib_data"):
        slimkit.compress(make_mlp(), quant(), calib_data=x[:, :5], verbose=False)
    with pytest.raises(DataError, match="calib_data"):
        slimkit.compress(make_mlp(), quant(), calib_data=x[:0], verbose=False)
    bad = x[:10].copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        slimkit.compress(make_mlp(), quant(), calib_data=bad, verbose=False)


def test_uncalibrated_sites_cannot_be_exported(classification_data):
    adapter = FakeAdapter(make_mlp(other=False, batchnorm=False))
    spec = FakeQuantSpec(-64, 64, True, 1)
    plan = plan_sites(adapter.graph(), {"fc1": spec}, FakeQuantSpec(0, 255, False), "static")
    sim = adapter.with_fake_quant(plan)
    np.testing.assert_array_equal(sim.predict(classification_data[0]), adapter.predict(classification_data[0]))
    with pytest.raises(ExportError, match="'input' has no calibrated parameters"):
        site_params(sim, plan)
    with pytest.raises(KeyError, match="no quantization site 'nope'"):
        sim.set_quant_params({"nope": None})


def test_a_float_layer_between_quantized_tensors_is_named(classification_data):
    x, _ = classification_data
    with pytest.warns(slimkit.SlimkitWarning, match=r"kept float between quantized tensors \(fc2\)"):
        result = slimkit.compress(make_mlp(other=False), quant(layers={"exclude": ["fc2"]}), calib_data=x,
                                  verbose=False)
    assert any("WeightBiasQuantization" in n for n in result.report.notes)
