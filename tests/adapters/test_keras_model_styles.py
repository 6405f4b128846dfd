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
