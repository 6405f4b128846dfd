"""Keras model styles beyond Functional: subclassed Keras 3 models and tf_keras (Keras 2) models.

PyTorch models are all "subclassed", which the shared contract tests cover; these styles exist only
in Keras, so they are tested here, through the same public API.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.registry import adapter_for

RECIPE = {"fine_tune": {"epochs": 1, "batch_size": 16},
          "stages": [{"prune": {"sparsity": 0.5, "schedule": {"kind": "constant"}}}]}


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, n).astype(np.int64)


def _subclassed():
    import keras

    @keras.saving.register_keras_serializable(package="slimkit_tests")
    class Small(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(4, 3, name="conv")
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.head = keras.layers.Dense(3, name="head")

        def call(self, x):
            return self.head(self.pool(self.conv(x)))

    model = Small()
    model(np.zeros((1, 8, 8, 1), np.float32))
    return model


def _tf_keras():
    import tf_keras  # part of the [keras] extra

    return tf_keras.Sequential([
        tf_keras.Input((8, 8, 1)),
        tf_keras.layers.Conv2D(4, 3, name="conv"),
        tf_keras.layers.GlobalAveragePooling2D(),
        tf_keras.layers.Dense(3, name="head"),
    ])


@pytest.mark.parametrize("build", [_subclassed, _tf_keras], ids=["keras3-subclassed", "tf_keras-sequential"])
def test_magnitude_pruning_trains_strips_and_exports(build, tmp_path):
    model = build()
    before = {k: v.copy() for k, v in adapter_for(model).get_weights("conv").items()}
    x, y = _data()
    result = slimkit.compress(model, RECIPE, train_data=(x, y), verbose=False)
    for name in ("conv", "head"):
        assert result.report.layer(name).sparsity == pytest.approx(0.5, abs=0.02)
    assert all(getattr(v, "constraint", None) is None for v in result.model.variables)
    for key, value in adapter_for(model).get_weights("conv").items():
        np.testing.assert_array_equal(value, before[key])  # the user's model is untouched
    row = result.export_onnx(tmp_path / "m.onnx")
    assert row.max_abs_diff < 1e-4


def test_separable_convolutions_are_split_into_layers_slimkit_prunes_and_quantizes(tmp_path):
    import keras

    import slimkit
    from slimkit.deploy.runtime import run
    from slimkit.registry import adapter_for, adapter_for_copy

    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, name="stem")(inp)
    h = keras.layers.SeparableConv2D(16, 3, padding="same", activation="relu", name="sep")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.SeparableConv2D(16, 3, name="sep2")(h)
    model = keras.Model(inp, keras.layers.Dense(4, name="logits")(keras.layers.GlobalAveragePooling2D()(h)))
    x = np.random.default_rng(0).normal(size=(16, 12, 12, 3)).astype("float32")
    copy = adapter_for_copy(model)
    assert [(layer.name, layer.kind) for layer in copy.layers()][1:3] == [("sep/depthwise", "depthwise_conv"),
                                                                         ("sep/pointwise", "conv")]
    np.testing.assert_array_equal(copy.predict(x), adapter_for(model).predict(x))  # the same function
    pruned = slimkit.compress(model, {"fine_tune": None, "stages": [{"prune": {"sparsity": 0.5}}]}, verbose=False)
    assert pruned.report.stages[0].params_removed == pytest.approx(0.5, abs=0.01)
    quantized = slimkit.compress(model, {"stages": [{"quantize": {"method": "static"}}]}, calib_data=x,
                                 verbose=False)
    assert {"sep/depthwise", "sep/pointwise", "sep2/depthwise", "sep2/pointwise"} <= set(quantized.report.quantized)
    quantized.export_onnx(tmp_path / "separable.onnx")
    assert np.corrcoef(run(str(tmp_path / "separable.onnx"), x).ravel(), copy.predict(x).ravel())[0, 1] > 0.99
