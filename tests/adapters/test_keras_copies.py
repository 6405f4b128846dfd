"""Keras model copies are built with zero initializers (every weight is assigned right after) and get
the original initializers back: a copy's configs are the original's, its weights the original's."""

from __future__ import annotations

import numpy as np

import slimkit
from slimkit.registry import adapter_for, adapter_for_copy

STATIC = {"stages": [{"quantize": {"method": "static", "activations": {"samples": 8}, "max_float_share": 0.0}}]}


def _mobilenet():
    import keras

    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=5)


def _initializers(model) -> dict[tuple[str, str], object]:
    out = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        inner = getattr(layer, "layer", layer)  # a fake-quant wrapper's layer
        for key, value in inner.get_config().items():
            if key.endswith("_initializer"):
                out[(inner.name, key)] = value
    return out


def test_copies_keep_initializers_and_weights():
    model = _mobilenet()
    original = _initializers(model)
    assert len(original) > 100
    copy = adapter_for_copy(model).model
    assert _initializers(copy) == original
    for mine, theirs in zip(copy.weights, model.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
    x = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    result = slimkit.compress(model, STATIC, calib_data=x, verbose=False)
    float_copy = adapter_for(result.model).without_fake_quant().model
    for quantized in (result.model, float_copy):  # batch norms folded: the layers that remain
        got = _initializers(quantized)
        shared = set(got) & set(original)
        assert len(shared) > 50
        assert {k: got[k] for k in shared} == {k: original[k] for k in shared}


def test_a_layer_whose_initializers_cannot_be_put_back_is_copied_as_it_is():
    import keras

    from slimkit.adapters.keras.layer_copy import ZeroInit

    class Hidden(keras.layers.Layer):
        """Keeps its initializer under another attribute name."""

        def __init__(self, kernel_initializer="ones", **kwargs):
            super().__init__(**kwargs)
            self._init = keras.initializers.get(kernel_initializer)

        def build(self, shape):
            self.kernel = self.add_weight(shape=(int(shape[-1]),), initializer=self._init)

        def call(self, x):
            return x * self.kernel

        def get_config(self):
            return {**super().get_config(), "kernel_initializer": keras.initializers.serialize(self._init)}

    zeros = ZeroInit(keras)
    copy = zeros.copy(Hidden(name="hidden"))
    copy.build((None, 3))
    zeros.restore()
    np.testing.assert_array_equal(copy.kernel.numpy(), 1.0)  # its own initializer ran: nothing to put back
    dense = zeros.copy(keras.layers.Dense(3, kernel_initializer="ones", name="dense"))
    dense.build((None, 2))
    np.testing.assert_array_equal(dense.kernel.numpy(), 0.0)  # zeros until assigned
    zeros.restore()
    assert dense.get_config()["kernel_initializer"]["class_name"] == "Ones"
