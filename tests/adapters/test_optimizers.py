"""Each framework's optimizer driver runs slimkit's update rules exactly, and the rules are PyTorch's.

The rules (``slimkit.optim``) are written once; the PyTorch driver is checked against ``torch.optim``
itself (the documented formulas), the Keras drivers (Keras 3 and tf_keras) against the numpy
reference, both over 20 steps of a fixed gradient sequence.
"""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.optim import OPTIMIZERS, NumpyOptimizer, make_rule
from slimkit.plugins import parse_options

# (rule, recipe options, the same settings as torch.optim keyword arguments)
CASES = [
    ("sgd", {}, {"momentum": 0.9}),
    ("sgd", {"momentum": 0.0}, {}),
    ("sgd", {"nesterov": True, "weight_decay": 0.01}, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adam", {}, {}),
    ("adam", {"betas": [0.8, 0.99], "epsilon": 1e-6, "weight_decay": 0.1},
     {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("adamw", {}, {}),
    ("adamw", {"weight_decay": 0.1}, {"weight_decay": 0.1}),
    ("rmsprop", {}, {}),
    ("rmsprop", {"rho": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.01},
     {"alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.01}),
]
IDS = [f"{name}-{'-'.join(opts) or 'defaults'}" for name, opts, _ in CASES]
LR = 0.01
STEPS = 20


def _rule(name, options):
    return make_rule(name, parse_options(OPTIMIZERS.get(name).options, options, "optimizer"))


def _start_and_grads():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(6, 5)).astype(np.float32)
    grads = [rng.normal(size=(6, 5)).astype(np.float32) * (1 + i % 3) for i in range(STEPS)]
    return w0, grads


def _numpy_reference(name, options):
    w0, grads = _start_and_grads()
    w = w0.copy()
    optimizer = NumpyOptimizer(_rule(name, options), LR)
    for g in grads:
        optimizer.step({"w": w}, {"w": g})
    return w0, w


def test_every_registered_rule_is_covered():
    assert {name for name, _, _ in CASES} == set(OPTIMIZERS.names())


@pytest.mark.parametrize("name, options, torch_kwargs", CASES, ids=IDS)
def test_torch_driver_equals_torch_optim(name, options, torch_kwargs):
    import torch

    from slimkit.adapters.torch.optimizer import RuleOptimizer

    reference = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                 "rmsprop": torch.optim.RMSprop}[name]
    w0, grads = _start_and_grads()
    ours, theirs = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(w0))
    opt_ours = RuleOptimizer([ours], _rule(name, options), LR)
    opt_theirs = reference([theirs], lr=LR, **torch_kwargs)
    for g in grads:
        for p, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            p.grad = torch.tensor(g)
            opt.step()
    moved = float((theirs.detach() - torch.tensor(w0)).abs().max())
    assert moved > 1e-2  # the comparison below is not between two unmoved copies
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=0, atol=1e-6)
    _, numpy_w = _numpy_reference(name, options)
    np.testing.assert_allclose(numpy_w, theirs.detach().numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("keras_module", ["keras", "tf_keras"])
@pytest.mark.parametrize("name, options, torch_kwargs", CASES, ids=IDS)
def test_keras_driver_equals_the_numpy_reference(keras_module, name, options, torch_kwargs):
    import importlib

    import tensorflow as tf

    from slimkit.adapters.keras.optimizer import make_optimizer

    k = importlib.import_module(keras_module)
    w0, grads = _start_and_grads()
    var = k.Variable(w0) if keras_module == "keras" else tf.Variable(w0)
    optimizer = make_optimizer(k, _rule(name, options), LR)
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), var)])
    _, expected = _numpy_reference(name, options)
    np.testing.assert_allclose(np.asarray(var.numpy()), expected, rtol=0, atol=2e-6)


def test_keras_optimizer_round_trips_through_its_config():
    import keras

    from slimkit.adapters.keras.optimizer import make_optimizer

    optimizer = make_optimizer(keras, _rule("adamw", {"weight_decay": 0.05, "betas": [0.8, 0.9]}), 0.02)
    config = keras.optimizers.serialize(optimizer)
    again = keras.optimizers.deserialize(config)
    assert again.rule_name == "adamw"
    assert again._rule.options == optimizer._rule.options
    assert float(again.learning_rate) == pytest.approx(0.02)
