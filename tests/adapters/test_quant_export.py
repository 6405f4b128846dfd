"""Quantized export in both frameworks: onnxruntime's int8 model computes what the framework simulated.

One contract run against every adapter: the simulated (fake-quant) output and onnxruntime's output of
the exported QDQ model agree within one quantization step of the output on every element, the layers
run as integer kernels, the file holds int8 weights, and broken inputs never produce a file.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit import DataError, ExportError
from slimkit.deploy.runtime import run
from slimkit.quant.plan import FakeQuantSpec, plan_sites
from slimkit.registry import adapter_for, adapter_for_copy
import zoo
from frameworks import building

STATIC = {"seed": 0, "stages": [{"quantize": {"method": "static", "activations": {"samples": 64}}}]}


def exported(framework, arch, tmp_path, recipe=STATIC):
    model = zoo.twins(arch, seed=4)[framework]
    x = zoo.sample(arch, framework, n=64, seed=3)
    result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
    path = tmp_path / f"{arch}.onnx"
    row = result.export_onnx(path)
    return result, path, row


@pytest.mark.parametrize("framework", building("zoo"))
@pytest.mark.parametrize("arch", ["plain", "residual", "inverted", "concat", "mlp"])
def test_onnxruntime_int8_equals_the_simulation_within_one_step(framework, arch, tmp_path):
    result, path, row = exported(framework, arch, tmp_path)
    q = result.report.quant_exports[-1]
    x = zoo.sample(arch, framework, n=32, seed=11)  # inputs calibration never saw
    sim = adapter_for(result.model).predict(x)
    got = run(str(path), x)
    assert q.output_step is not None and q.output_step > 0
    diff = np.abs(sim - got)
    assert np.max(diff) <= q.output_step * 1.001, (np.max(diff), q.output_step)
    assert np.mean(diff > 1e-6) < 0.05  # off-by-one steps are rare rounding ties
    assert row.format == "onnx-qdq" and row.tolerance == q.tolerance == pytest.approx(0.02 * 255 * q.output_step)
    # every quantized conv/dense layer runs as an integer kernel in onnxruntime
    integer = sum(v for k, v in q.integer_ops.items() if k in ("QLinearConv", "QLinearMatMul", "QGemm"))
    assert integer == len(result.report.quantized), q.integer_ops


@pytest.mark.parametrize("framework", building("zoo"))
def test_dynamic_quantization_exports_runtime_quantized_matmuls(framework, tmp_path):
    recipe = {"seed": 0, "stages": [{"quantize": {"method": "dynamic"}}]}
    result, path, row = exported(framework, "mlp", tmp_path, recipe)
    x = zoo.sample("mlp", framework, n=32, seed=11)
    sim = adapter_for(result.model).predict(x)
    got = run(str(path), x)
    np.testing.assert_allclose(got, sim, atol=1e-4 * max(1.0, float(np.max(np.abs(sim)))))
    ops = result.report.quant_exports[-1].integer_ops
    assert sum(ops.values()) >= len(result.report.quantized), ops


@pytest.mark.parametrize("framework", building("zoo"))
def test_uncalibrated_model_is_not_exported(framework, tmp_path):
    model = zoo.twins("plain", seed=4)[framework]
    x = zoo.sample("plain", framework, n=8)
    adapter = adapter_for_copy(model)
    infos = {i.name: i for i in adapter.layers()}
    spec = FakeQuantSpec(-64, 64, True, infos["fc1"].out_axis)
    plan = plan_sites(adapter.graph(x), {"fc1": spec}, FakeQuantSpec(0, 255, False), "static")
    sim = adapter.with_fake_quant(plan)
    path = tmp_path / "never.onnx"
    with pytest.raises(ExportError, match="no calibrated parameters"):
        slimkit.export_onnx(sim.strip(), path, sample=x)
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("framework", building("zoo"))
def test_low_bit_qat_activations_are_refused_at_export(framework, tmp_path):
    # 4-bit weights alone would export (an int8 container); 6-bit activations cannot: QuantizeLinear
    # saturates at the uint8 bounds, not at the 6-bit range's
    model = zoo.twins("mlp", seed=4)[framework]
    x = zoo.sample("mlp", framework, n=64, seed=3)
    y = np.arange(64) % 4
    recipe = {"seed": 0, "fine_tune": {"epochs": 1, "batch_size": 32},
              "stages": [{"quantize": {"method": "qat", "weights": {"bits": 4}, "activations": {"bits": 6}}}]}
    result = slimkit.compress(model, recipe, train_data=(x, y), verbose=False)
    with pytest.raises(ExportError, match=r"is quantized to 6 bits; onnxruntime runs 8-bit activations, whose "
                                          r"QuantizeLinear saturates at \[0, 255\] or \[-128, 127\], not at this "
                                          r"site's \[0, 63\]"):
        result.export_onnx(tmp_path / "a6.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("framework", building("zoo"))
def test_bad_calibration_data_is_named(framework):
    model = zoo.twins("plain", seed=4)[framework]
    x = zoo.sample("plain", framework, n=8)
    with pytest.raises(DataError, match="calib_data"):
        slimkit.compress(model, STATIC, calib_data=x[..., :2] if framework == "keras" else x[:, :2], verbose=False)
    with pytest.raises(DataError, match="calib_data"):
        slimkit.compress(model, STATIC, calib_data=x[:0], verbose=False)


@pytest.mark.parametrize("framework", building("zoo"))
def test_prune_then_qat_keeps_the_zeros_through_training_and_export(framework, tmp_path):
    model = zoo.twins("plain", seed=4)[framework]
    x = zoo.sample("plain", framework, n=64, seed=3)
    y = np.arange(64) % 4
    recipe = {"seed": 0, "fine_tune": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3},
              "stages": [{"prune": {"sparsity": 0.5, "fine_tune": None, "layers": {"exclude": ["fc1"]}}},
                         {"quantize": {"method": "qat"}}]}
    result = slimkit.compress(model, recipe, train_data=(x, y), verbose=False)
    adapter = adapter_for(result.model)
    assert result.report.stages[1].steps == 2 * 4
    for name in ("conv1", "conv2"):
        kernel = adapter.get_weights(name)["kernel"]
        assert np.mean(kernel == 0) >= 0.5, name  # pruned zeros survived batch-norm folding and QAT
    row = result.export_onnx(tmp_path / "pruned_int8.onnx")
    q = result.report.quant_exports[-1]
    assert row.max_abs_diff <= q.output_step * 1.001
    from slimkit.deploy.runtime import initializer_zeros
    zeros = {k: v for k, v in initializer_zeros(str(tmp_path / "pruned_int8.onnx")).items() if k.startswith("conv")}
    assert zeros and all(z / n >= 0.5 for k, (n, z) in zeros.items() if k.endswith("kernel_quantized")), zeros


def test_sites_with_equal_values_map_to_their_own_tensors(tmp_path):
    """A residual branch that outputs zeros makes the add's output equal its shortcut on every probe;
    the mapping tells the two sites apart by the layers next to them (found by weights)."""
    import torch
    from torch import nn

    class DeadBranch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.branch = nn.Conv2d(8, 8, 1)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            a = torch.relu(self.stem(x))
            return self.head(torch.relu(a + self.branch(a)))

    torch.manual_seed(0)
    model = DeadBranch()
    with torch.no_grad():
        model.branch.weight.zero_()
        model.branch.bias.zero_()
        model.branch.weight[0, 0] = 1e-30  # unique kernel values; still outputs zeros in float32
    x = np.random.default_rng(0).normal(size=(16, 3, 8, 8)).astype(np.float32)
    result = slimkit.compress(model, STATIC, calib_data=x, verbose=False)
    result.export_onnx(tmp_path / "dead.onnx")
    q = result.report.quant_exports[-1]
    assert q.integer_ops.get("QLinearConv") == 3 and q.integer_ops.get("QLinearAdd") == 1, q.integer_ops
    assert q.max_abs_diff <= q.output_step * 1.001


@pytest.mark.parametrize("framework", building("zoo"))
def test_export_reuses_the_stage_outputs_unless_the_model_changed(framework, tmp_path, monkeypatch):
    """The quantize stage ran the float and the simulated model on the calibration inputs: export reuses
    them while the model holds the same arrays; after a weight changes, it runs both models again, and
    still verifies."""
    model = zoo.twins("plain", seed=4)[framework]
    x = zoo.sample("plain", framework, n=64, seed=3)
    result = slimkit.compress(model, STATIC, calib_data=x, verbose=False)
    adapter = adapter_for(result.model)
    sizes = []
    original = type(adapter).predict

    def counting(self, inputs, *args, **kwargs):
        sizes.append(len(inputs))
        return original(self, inputs, *args, **kwargs)

    monkeypatch.setattr(type(adapter), "predict", counting)
    captures = []
    graph = type(adapter).graph
    monkeypatch.setattr(type(adapter), "graph", lambda self, *a, **k: captures.append(1) or graph(self, *a, **k))
    first = result.export_onnx(tmp_path / "a.onnx")
    assert sizes == [], sizes  # neither model ran again
    assert captures == []  # nor was the graph captured to find the output's grid
    layer = result.report.quantized[-1]
    weights = adapter.get_weights(layer)
    adapter.set_weights(layer, {**weights, "kernel": weights["kernel"] * 1.5})
    sizes.clear()
    second = result.export_onnx(tmp_path / "b.onnx")
    assert sizes == [16, 16], sizes  # the record no longer fits: both models run again
    sim = adapter.predict(zoo.sample("plain", framework, n=16, seed=3))
    np.testing.assert_allclose(run(str(tmp_path / "b.onnx"), x[:16]), sim,
                               atol=1.001 * result.report.quant_exports[-1].output_step)
    assert first.max_abs_diff is not None and second.max_abs_diff is not None
