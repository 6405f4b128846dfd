"""Straight-through gradients of ``dorefa`` and ``bnn`` through each framework's autodiff (core's modes run
on the adapter's TensorOps), against the papers' estimators written out in numpy; values equal NumpyOps'."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slimkit.ops import NUMPY_OPS
from slimkit.quant import fake_quant

from frameworks import building


@dataclasses.dataclass
class Site:
    mode: str
    qmin: int
    qmax: int
    role: str
    axis: int | None = None
    symmetric: bool = True
    momentum: float = 0.9
    site: str = "t"


def _torch(site: Site, x: np.ndarray, upstream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from slimkit.adapters.torch.ops import TORCH_OPS

    t = torch.tensor(x, requires_grad=True)
    y = fake_quant.forward(TORCH_OPS, site, t, True)
    (y * torch.tensor(upstream)).sum().backward()
    return y.detach().numpy(), t.grad.numpy()


def _keras(site: Site, x: np.ndarray, upstream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    from slimkit.adapters.keras.ops import KERAS_OPS

    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = fake_quant.forward(KERAS_OPS, site, tf.convert_to_tensor(v), True)
        loss = tf.reduce_sum(y * upstream)
    return np.asarray(y), np.asarray(tape.gradient(loss, v))


#: framework -> the site's output on ``x`` (training) and the gradient of ``sum(output * upstream)``.
VALUE_AND_GRAD = {"torch": _torch, "keras": _keras}
FRAMEWORKS = [fw for fw in building("zoo") if fw in VALUE_AND_GRAD]


def value_and_grad(framework: str, site: Site, x: np.ndarray, upstream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return VALUE_AND_GRAD[framework](site, x, upstream)


RNG = np.random.default_rng(5)
W = (RNG.normal(size=(20, 4)) * 0.6).astype(np.float32)  # (in, out), channels on axis 1
W[2, 1] = W[9, 3] = 0.0  # pruned
W[4, 0], W[5, 2] = 1.7, -1.3  # beyond the hardtanh window
G = RNG.normal(size=W.shape).astype(np.float32)
X = np.concatenate([[-1.5, -1.0001, -0.6, -1e-3, 0.3, 0.9999, 1.2, 2.0], RNG.uniform(-2, 2, 56)]).astype(np.float32)
GX = RNG.normal(size=X.shape).astype(np.float32)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_dorefa_weight_gradient_flows_through_tanh(framework):
    site = Site("dorefa", -15, 15, "kernel", axis=1)
    y, grad = value_and_grad(framework, site, W, G)
    np.testing.assert_allclose(y, fake_quant.forward(NUMPY_OPS, site, W, True), rtol=1e-6, atol=1e-7)
    t = np.tanh(W.astype(np.float64))
    peak, alpha = np.abs(t).max(axis=0), np.abs(W).max(axis=0)
    # y = alpha * (2 round(n w_t) / n - 1), w_t = tanh(w) / (2 peak) + 0.5: straight through the
    # rounding, d y / d w = alpha * (1 - tanh^2 w) / peak (alpha, peak constant); pruned zeros get none
    expected = np.where(W != 0, G * alpha * (1 - t**2) / peak, 0.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_dorefa_activation_gradient_passes_inside_the_clip(framework):
    site = Site("dorefa", 0, 7, "activation")
    y, grad = value_and_grad(framework, site, X, GX)
    np.testing.assert_allclose(y, fake_quant.forward(NUMPY_OPS, site, X, True), rtol=0, atol=1e-7)
    np.testing.assert_allclose(grad, np.where((X > 0) & (X < 1), GX, 0.0), rtol=1e-6, atol=0)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bnn_weight_gradient_is_hardtanh_straight_through_times_alpha(framework):
    site = Site("bnn", -1, 1, "kernel", axis=1)
    y, grad = value_and_grad(framework, site, W, G)
    np.testing.assert_allclose(y, fake_quant.forward(NUMPY_OPS, site, W, True), rtol=1e-6, atol=0)
    alpha = np.abs(W).sum(axis=0) / (W != 0).sum(axis=0)
    expected = np.where((W != 0) & (np.abs(W) <= 1), G * alpha, 0.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bnn_activation_gradient_is_cut_outside_minus_one_one(framework):
    site = Site("bnn", -1, 1, "activation")
    y, grad = value_and_grad(framework, site, X, GX)
    np.testing.assert_array_equal(y, np.where(X >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(grad, np.where(np.abs(X) <= 1, GX, 0.0))
