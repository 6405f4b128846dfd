"""ResNet50-shaped models quantize to a QDQ file of int8 weights at most 0.3x the fp32 file, every
conv and the classifier running as integer kernels in onnxruntime, in both frameworks.

Random weights and 64x64 inputs keep it quick: the file size and the fusion do not depend on them.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.deploy.runtime import run
from slimkit.registry import adapter_for
from frameworks import building
from structured import build  # benchmarks/structured.py: Keras application / torch definition

RECIPE = {"seed": 0, "stages": [{"quantize": {"method": "static", "activations": {"samples": 4}}}]}


@pytest.mark.parametrize("framework", building("applications"))
def test_resnet50_int8_file_is_at_most_0_3x_and_runs_integer_kernels(framework, tmp_path):
    model, x = build(framework, "resnet50", 64)
    result = slimkit.compress(model, RECIPE, calib_data=x, verbose=False)
    row = result.export_onnx(tmp_path / "resnet50_int8.onnx", sample=x[:2])
    q = result.report.quant_exports[-1]
    assert len(result.report.quantized) == 54  # 53 convolutions and the classifier
    assert q.size_ratio <= 0.3, (q.int8_bytes, q.float_bytes)
    assert row.bytes == q.int8_bytes
    # Keras' classifier ends in softmax, so its output stays float: MatMulIntegerToFloat.
    kernels = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat")
    assert sum(v for k, v in q.integer_ops.items() if k in kernels) == 54, q.integer_ops
    # every residual add but the last, whose output feeds average pooling (float) rather than a layer
    assert q.integer_ops.get("QLinearAdd", 0) >= 15, q.integer_ops
    # The deployed model follows the simulation. Through 50 layers, rounding ties that torch's or
    # TensorFlow's float sums break differently from onnxruntime's move some outputs by a step or
    # two (random weights, no trained structure, make it chaotic); verification allows 2% of the
    # output range, and most outputs agree within a step.
    sim = adapter_for(result.model).predict(x[:2])
    diff = np.abs(run(str(tmp_path / "resnet50_int8.onnx"), x[:2]) - sim)
    assert np.max(diff) <= q.tolerance and q.tolerance == row.tolerance
    if q.output_step is not None:  # torch: logits are quantized; Keras ends in a float softmax
        assert np.mean(diff <= q.output_step * 1.001) > 0.9
        assert np.max(diff) <= 0.02 * 255 * q.output_step


def test_keras_densenet121_static_int8_passes_verification(tmp_path):
    """keras.applications DenseNet121 (random weights, logits out, 32x32): its concatenations and
    batch norms before convolutions quantize, and verification accepts the file it writes."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10,
                                           classifier_activation=None)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    result = slimkit.compress(model, RECIPE, calib_data=x, verbose=False)
    assert len(result.report.quantized) == 121  # 120 convolutions and the classifier
    row = result.export_onnx(tmp_path / "densenet121_int8.onnx", sample=x[:4])
    q = result.report.quant_exports[-1]
    assert row.format == "onnx-qdq" and q.size_ratio <= 0.35
    assert q.int8_error <= 1.5 * q.simulated_error + 1e-6 or row.max_abs_diff <= q.tolerance
