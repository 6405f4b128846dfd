"""The fake framework must itself be right, or the core tests built on it prove nothing."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.adapter import ModelAdapter, TrainHooks
from slimkit.recipe import FineTune

from fake_adapter import FakeAdapter, all_weights, make_mlp


def test_fake_adapter_implements_every_abstract_method():
    assert not getattr(FakeAdapter, "__abstractmethods__", frozenset())
    assert issubclass(FakeAdapter, ModelAdapter)


def test_forward_matches_a_handwritten_forward(mlp):
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    w = {name: layer.weights for name, layer in ((l.name, l) for l in mlp.layers)}
    h = x @ w["fc1"]["kernel"] + w["fc1"]["bias"]
    bn = w["bn"]
    h = (h - bn["mean"]) / np.sqrt(bn["var"] + 1e-5) * bn["gamma"] + bn["beta"]
    h = np.maximum(h, 0)
    h = np.maximum(h @ w["fc2"]["kernel"] + w["fc2"]["bias"], 0)
    h = h * w["scale"]["scale"]
    expected = h @ w["logits"]["kernel"] + w["logits"]["bias"]
    np.testing.assert_allclose(FakeAdapter(mlp).predict(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "mse"])
def test_gradients_match_finite_differences(loss):
    """The fake backprop, in float64, against central differences on weights of every layer."""

    def model64():
        model = make_mlp(seed=3)
        for layer in model.layers:
            layer.weights = {k: v.astype(np.float64) for k, v in layer.weights.items()}
        return model

    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 8))
    y = rng.integers(0, 4, 6) if loss != "mse" else rng.normal(size=(6, 4))
    _, grads = model64().gradients(x, y, loss)
    assert set(grads) == {(l, k) for l, ks in [("fc1", "kernel bias"), ("bn", "gamma beta"),
                                               ("fc2", "kernel bias"), ("scale", "scale"),
                                               ("logits", "kernel bias")] for k in ks.split()}
    eps = 1e-6
    for (name, key), grad in grads.items():
        for index in [(0,) * grad.ndim, tuple(d - 1 for d in grad.shape)]:
            plus, minus = model64(), model64()
            plus.layer(name).weights[key][index] += eps
            minus.layer(name).weights[key][index] -= eps
            numeric = (plus.gradients(x, y, loss)[0] - minus.gradients(x, y, loss)[0]) / (2 * eps)
            assert grad[index] == pytest.approx(numeric, rel=1e-4, abs=1e-8), (name, key, index)


def test_train_step_is_plain_sgd(classification_data):
    x, y = classification_data[0][:10], classification_data[1][:10]
    model = make_mlp()
    before = all_weights(model)
    _, grads = model.gradients(x, y)
    model.train_step(x, y, lr=0.1)
    for key, grad in grads.items():
        np.testing.assert_allclose(model.layer(key[0]).weights[key[1]], before[key] - 0.1 * grad,
                                   rtol=1e-5, atol=1e-6)


def test_training_moves_zeroed_weights_unless_masked(classification_data):
    """Control for the mask tests: plain zeros are revived by SGD, masked zeros are not."""
    settings = FineTune(epochs=1, batch_size=50, learning_rate=0.1)
    kernel = make_mlp().layer("fc2").weights["kernel"]
    zero = np.zeros_like(kernel)
    zero[:, :6] = 1.0  # zero the first 6 output columns

    plain = FakeAdapter(make_mlp())
    plain.set_weights("fc2", {"kernel": kernel * zero})
    plain.fit(classification_data, settings, TrainHooks())
    assert np.count_nonzero(plain.get_weights("fc2")["kernel"][:, 6:]) > 0

    masked = FakeAdapter(make_mlp())
    masked.set_mask("fc2", zero)
    masked.fit(classification_data, settings, TrainHooks())
    after = masked.get_weights("fc2")["kernel"]
    assert np.all(after[:, 6:] == 0)
    assert not np.allclose(after[:, :6], kernel[:, :6])  # the kept weights did train


def test_fit_calls_hooks_in_order(classification_data):
    calls = []

    class Recorder(TrainHooks):
        def begin(self, total_steps):
            calls.append(("begin", total_steps))

        def step_end(self, step):
            calls.append(("step", step))

        def epoch_end(self, epoch, logs):
            calls.append(("epoch", epoch, sorted(logs)))

        def end(self):
            calls.append(("end",))

    FakeAdapter(make_mlp()).fit(classification_data, FineTune(epochs=2, batch_size=64), Recorder())
    per_epoch = -(-len(classification_data[0]) // 64)
    expected = [("begin", 2 * per_epoch)]
    for epoch in (1, 2):
        expected += [("step", (epoch - 1) * per_epoch + s) for s in range(1, per_epoch + 1)]
        expected.append(("epoch", epoch, ["loss"]))
    expected.append(("end",))
    assert calls == expected


def test_training_lowers_the_loss(classification_data):
    adapter = FakeAdapter(make_mlp())
    losses = []

    class Logs(TrainHooks):
        def epoch_end(self, epoch, logs):
            losses.append(logs["loss"])

    adapter.fit(classification_data, FineTune(epochs=5, batch_size=32, learning_rate=0.05), Logs())
    assert losses[-1] < losses[0]


def test_copy_of_is_independent(mlp):
    before = all_weights(mlp)
    copy = FakeAdapter.copy_of(mlp)
    copy.set_mask("fc1", np.zeros((8, 16), np.float32))
    copy.set_weights("bn", {"gamma": np.zeros(16, np.float32)})
    for key, value in all_weights(mlp).items():
        np.testing.assert_array_equal(value, before[key], err_msg=str(key))
    assert mlp.layer("fc1").mask is None


def test_strip_bakes_masks_and_removes_them(mlp):
    adapter = FakeAdapter(mlp)
    mask = np.ones((16, 12), np.float32)
    mask[3] = 0
    adapter.set_mask("fc2", mask)
    model = adapter.strip()
    assert model.layer("fc2").mask is None
    assert np.all(model.layer("fc2").weights["kernel"][3] == 0)


def test_check_input_names_what_and_shapes(mlp):
    expected = r"calib_data: expected input of shape \(batch, 8\), got shape \(3, 5\)"
    with pytest.raises(slimkit.DataError, match=expected):
        FakeAdapter(mlp).check_input(np.zeros((3, 5)), "calib_data")


def test_set_weights_rejects_unknown_key_and_wrong_shape(mlp):
    adapter = FakeAdapter(mlp)
    with pytest.raises(KeyError, match="'gamma'"):
        adapter.set_weights("fc1", {"gamma": np.zeros(16)})
    with pytest.raises(slimkit.DataError, match=r"'kernel': shape \(2, 2\)"):
        adapter.set_weights("fc1", {"kernel": np.zeros((2, 2))})


def test_export_onnx_raises_export_error(mlp, tmp_path):
    with pytest.raises(slimkit.ExportError, match="fake adapter has no ONNX exporter"):
        FakeAdapter(mlp).export_onnx(str(tmp_path / "m.onnx"), np.zeros((1, 8), np.float32), 17)


def test_make_mlp_options():
    plain = FakeAdapter(make_mlp(sizes=(3, 5, 2), batchnorm=False, other=False))
    assert [(l.name, l.kind) for l in plain.layers()] == [("fc1", "dense"), ("logits", "dense")]
    assert plain.predict(np.ones((4, 3), np.float32)).shape == (4, 2)
    full = FakeAdapter(make_mlp())
    assert [(l.name, l.kind) for l in full.layers()] == [
        ("fc1", "dense"), ("bn", "batchnorm"), ("fc2", "dense"), ("scale", "other"), ("logits", "dense")]
    assert [l.kernel_perm for l in full.layers()] == [(1, 0), (), (1, 0), (), (1, 0)]
