"""Odd models a user brings: a quantized result compressed again, a Keras custom layer whose config
leaves out its name."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from frameworks import building
from twins import BUILDERS, sample_input

STATIC = {"stages": [{"quantize": {"method": "static"}}]}


@pytest.fixture(scope="module", params=building("twins"))
def quantized(request):
    framework = request.param
    x = sample_input("mlp", framework, n=16)
    return framework, slimkit.compress(BUILDERS["mlp"][framework](), STATIC, calib_data=x, verbose=False).model, x


@pytest.mark.parametrize("recipe, message", [
    (STATIC, r"stages\[0\]\.quantize: the model is quantized already .* quantize the float model it came from"),
    ({"stages": [{"quantize": {"method": "dynamic"}}]}, r"stages\[0\]\.quantize: the model is quantized already"),
    ({"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5}}]},
     r"stages\[0\]\.prune\.layers: channel pruning needs a float model, and this one is quantized"),
], ids=["static", "dynamic", "channel"])
def test_compressing_a_quantized_result_again_says_what_to_do(quantized, recipe, message):
    _, model, x = quantized
    with pytest.raises(slimkit.UnsupportedModelError, match=message) as info:
        slimkit.compress(model, recipe, calib_data=x, verbose=False)
    assert "without_fake_quant" not in str(info.value) and "slimkit_quant" not in str(info.value)


def test_a_keras_custom_layer_without_get_config_keeps_its_name_and_exports(tmp_path):
    import keras

    class Scale(keras.layers.Layer):  # no get_config: Keras's base config leaves the name out
        def build(self, shape):
            self.s = self.add_weight(shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.s

    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(4, name="out")(Scale(name="my_scale")(keras.layers.Dense(16, name="d1")(inputs)))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    recipe = {"fine_tune": None, "stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]}
    result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
    assert [layer.name for layer in result.model.layers] == [layer.name for layer in model.layers]
    assert result.export_onnx(tmp_path / "m.onnx").max_abs_diff < 1e-4
