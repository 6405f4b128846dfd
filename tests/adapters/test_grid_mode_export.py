"""DoReFa and BNN models exported as QDQ ONNX: k-bit grids in 8-bit containers that onnxruntime runs with
integer kernels and computes as the framework simulated; what it cannot run is refused, naming why."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import slimkit
from slimkit import ExportError
from slimkit.deploy.runtime import run
from slimkit.registry import adapter_for
import zoo

#: One framework is enough here: the Q/DQ writing is core's, the same for every adapter; what each adapter
#: simulates is compared across frameworks in tests/parity/test_grid_mode_parity.py.
FRAMEWORK = "torch"
TRAIN = {"epochs": 1, "batch_size": 32, "optimizer": "sgd", "learning_rate": 0.01}
INNER = {"exclude": ["conv1", "logits"]}

pytestmark = pytest.mark.filterwarnings("ignore:.*correlate.*with the float model")  # low bits drift from float


def compressed(arch, quantize):
    model = zoo.twins(arch, seed=4, frameworks=(FRAMEWORK,))[FRAMEWORK]
    x = zoo.sample(arch, FRAMEWORK, n=64, seed=3)
    recipe = {"seed": 0, "fine_tune": TRAIN, "stages": [{"quantize": {"method": "qat", **quantize}}]}
    return slimkit.compress(model, recipe, train_data=(x, np.arange(64) % 4), verbose=False)


def int8_kernels(path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name.split(".kernel")[0]: numpy_helper.to_array(t) for t in model.graph.initializer
            if ".kernel" in t.name and not t.name.endswith("zero_point") and t.data_type == onnx.TensorProto.INT8}


def assert_runs_the_simulation(result, path, row):
    x = zoo.sample("plain", FRAMEWORK, n=32, seed=11)  # inputs training never saw
    sim, got = adapter_for(result.model).predict(x), run(str(path), x)
    scale = max(1.0, float(np.abs(sim).max()))
    assert row.max_abs_diff <= row.tolerance
    # onnxruntime's integer sums break a rare rounding tie of an activation the other way
    assert np.mean(np.abs(sim - got) > 1e-4 * scale) < 0.03, np.abs(sim - got).max()
    q = result.report.quant_exports[-1]
    integer = {k: v for k, v in q.integer_ops.items() if k in ("QLinearConv", "QGemm", "QLinearMatMul")}
    assert sum(integer.values()) == len(result.report.quantized) == 2, q.integer_ops  # conv2 and fc1
    return q


def test_dorefa_w4a4_exports_as_int8_and_onnxruntime_computes_the_simulation(tmp_path):
    result = compressed("plain", {"layers": INNER, "weights": {"bits": 4, "learn": "dorefa"},
                                  "activations": {"bits": 4, "learn": "dorefa"}})
    path = tmp_path / "dorefa.onnx"
    row = result.export_onnx(path)
    q = assert_runs_the_simulation(result, path, row)
    # the 4-bit grids end at 1.0 above a zero point of 240, so each ReLU before them stays (in float)
    assert q.float_ops and all(op.startswith("Relu") for op in q.float_ops), q.float_ops
    for layer, q in int8_kernels(path).items():  # 4-bit DoReFa weights: odd integers in [-15, 15]
        assert np.all(np.abs(q) <= 15) and np.all(q % 2 == 1), layer
    zero_points = {int(numpy_helper.to_array(t)) for t in onnx.load(str(path)).graph.initializer
                   if t.name.endswith("_zero_point") and t.data_type == onnx.TensorProto.UINT8}
    assert zero_points == {255 - 15}  # every activation: the 4-bit grid saturating at 1.0 in uint8


def test_bnn_weights_export_as_plus_minus_one_int8(tmp_path):
    result = compressed("plain", {"layers": INNER, "weights": {"bits": 1, "learn": "bnn"}})  # activations: ema
    path = tmp_path / "bnn.onnx"
    row = result.export_onnx(path)
    assert_runs_the_simulation(result, path, row)
    kernels = int8_kernels(path)
    assert set(kernels) == {"conv2", "fc1"}
    for layer, q in kernels.items():
        assert set(np.unique(q)) <= {-1, 1}, layer


def test_binarized_activations_are_refused_naming_the_tensor_and_why(tmp_path):
    model = zoo.twins("binary", seed=4, frameworks=(FRAMEWORK,))[FRAMEWORK]
    x = zoo.sample("binary", FRAMEWORK, n=64, seed=3)
    recipe = {"seed": 0, "fine_tune": TRAIN, "stages": [{"quantize": {
        "method": "qat", "layers": {"exclude": ["fc1", "logits"]}, "weights": {"bits": 1, "learn": "bnn"},
        "activations": {"bits": 1, "learn": "bnn"}}}]}
    result = slimkit.compress(model, recipe, train_data=(x, np.arange(64) % 4), verbose=False)
    with pytest.raises(ExportError) as info:
        result.export_onnx(tmp_path / "bnn.onnx")
    assert "activation 'fc1' (the input of layer 'fc2'): it is binarized with sign()" in str(info.value)
    assert "which no QuantizeLinear/DequantizeLinear pair computes" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_8_bit_dorefa_weights_are_refused_beyond_int8(tmp_path):
    result = compressed("plain", {"layers": INNER, "weights": {"bits": 8, "learn": "dorefa"}})
    with pytest.raises(ExportError, match=r"layer 'conv2': its 8-bit weights lie on the integers \[-255, 255\] "
                                          r"\(8-bit DoReFa weights: 256 odd multiples of 1/255"):
        result.export_onnx(tmp_path / "w8.onnx")
    assert list(tmp_path.iterdir()) == []
