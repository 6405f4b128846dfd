"""Optimizer settings in the recipe, and the update rules' formulas checked by hand in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.errors import RecipeError
from slimkit.optim import NumpyOptimizer, make_rule
from slimkit.optim.adam import AdamOptions, AdamWOptions
from slimkit.optim.rmsprop import RMSpropOptions
from slimkit.optim.sgd import SGDOptions
from slimkit.recipe import FineTune, Recipe


def fine_tune(raw, stage=None):
    recipe = {"fine_tune": raw, "stages": [{"prune": {"sparsity": 0.5, **({"fine_tune": stage} if stage else {})}}]}
    return Recipe.load(recipe).stages[0].fine_tune


def error(raw):
    with pytest.raises(RecipeError) as info:
        fine_tune(raw)
    return str(info.value)


def test_a_name_means_that_optimizers_documented_defaults():
    ft = fine_tune({"optimizer": "sgd"})
    assert ft.optimizer == "sgd" and ft.optimizer_options is None
    assert ft.rule().options == SGDOptions(momentum=0.9, nesterov=False, weight_decay=0.0)
    assert fine_tune({}).rule().options == AdamOptions(betas=(0.9, 0.999), epsilon=1e-8, weight_decay=0.0)
    assert fine_tune({"optimizer": "adamw"}).rule().options.weight_decay == 0.01
    assert fine_tune({"optimizer": "rmsprop"}).rule().options == RMSpropOptions(rho=0.99, epsilon=1e-8)


def test_a_mapping_sets_options():
    ft = fine_tune({"optimizer": {"name": "adamw", "betas": [0.8, 0.95], "weight_decay": 0.05, "epsilon": 1e-6}})
    assert ft.optimizer == "adamw"
    assert ft.optimizer_options == AdamWOptions(betas=(0.8, 0.95), epsilon=1e-6, weight_decay=0.05)


def test_a_stage_overlays_options_of_the_same_optimizer_and_resets_for_another():
    base = {"optimizer": {"name": "sgd", "momentum": 0.5, "weight_decay": 1e-4}}
    same = fine_tune(base, stage={"optimizer": {"nesterov": True}})
    assert same.optimizer_options == SGDOptions(momentum=0.5, nesterov=True, weight_decay=1e-4)
    other = fine_tune(base, stage={"optimizer": {"name": "adam", "epsilon": 1e-7}})
    assert other.optimizer_options == AdamOptions(epsilon=1e-7)
    named = fine_tune(base, stage={"optimizer": "rmsprop"})
    assert named.optimizer == "rmsprop" and named.optimizer_options is None


@pytest.mark.parametrize("raw, message", [
    ({"optimizer": "lbfgs"}, "fine_tune.optimizer: 'lbfgs' is not one of adam, adamw, rmsprop, sgd"),
    ({"optimizer": {"name": "lbfgs"}}, "fine_tune.optimizer.name: 'lbfgs' is not one of"),
    ({"optimizer": {"name": "sgd", "betas": [0.9, 0.99]}},
     "fine_tune.optimizer: unknown key 'betas'; allowed keys are name, momentum, nesterov, weight_decay"),
    ({"optimizer": {"name": "sgd", "momentum": 1.0}}, "fine_tune.optimizer.momentum: 1.0 is outside [0, 1)"),
    ({"optimizer": {"name": "sgd", "momentum": 0.0, "nesterov": True}},
     "fine_tune.optimizer.nesterov: nesterov momentum needs momentum > 0"),
    ({"optimizer": {"name": "adam", "betas": [0.9]}}, "fine_tune.optimizer.betas: expected a list of 2 numbers"),
    ({"optimizer": {"name": "adam", "betas": [0.9, 1.5]}}, "fine_tune.optimizer.betas[1]: 1.5 is outside [0, 1)"),
    ({"optimizer": {"name": "adam", "epsilon": 0}}, "fine_tune.optimizer.epsilon: 0 is outside (0, inf]"),
    ({"optimizer": {"name": "adamw", "weight_decay": -1}}, "fine_tune.optimizer.weight_decay: -1 is outside [0, inf]"),
    ({"optimizer": {"name": "rmsprop", "centered": "yes"}}, "fine_tune.optimizer.centered: expected true or false"),
    ({"optimizer": 3}, "fine_tune.optimizer: expected an optimizer name or a mapping"),
])
def test_bad_optimizer_settings_name_the_field(raw, message):
    assert error(raw).startswith(message)


def test_sgd_with_momentum_by_hand():
    w = np.array([1.0, -2.0], np.float32)
    opt = NumpyOptimizer(make_rule("sgd", SGDOptions(momentum=0.5, weight_decay=0.1)), 0.1)
    g1, g2 = np.array([1.0, 1.0], np.float32), np.array([2.0, 0.0], np.float32)
    opt.step({"w": w}, {"w": g1})
    b1 = g1 + 0.1 * np.array([1.0, -2.0])  # L2 added to the gradient; the first buffer is the gradient
    w1 = np.array([1.0, -2.0]) - 0.1 * b1
    np.testing.assert_allclose(w, w1, rtol=1e-6)
    opt.step({"w": w}, {"w": g2})
    b2 = 0.5 * b1 + (g2 + 0.1 * w1)
    np.testing.assert_allclose(w, w1 - 0.1 * b2, rtol=1e-6)


def test_adam_first_step_moves_by_the_learning_rate_with_epsilon_after_the_correction():
    # bias-corrected m / sqrt(v) is sign(g) at step 1; epsilon is added to the corrected sqrt(v)
    # (PyTorch), so a gradient of 1e-8 moves by lr / 2, where Keras' rule would move by about lr * 0.03
    w = np.zeros(3, np.float32)
    opt = NumpyOptimizer(make_rule("adam"), 0.01)
    opt.step({"w": w}, {"w": np.array([3.0, -0.5, 1e-8], np.float32)})
    np.testing.assert_allclose(w, [-0.01, 0.01, -0.005], rtol=1e-4)


def test_adamw_decays_the_weights_directly():
    w = np.ones(2, np.float32)
    opt = NumpyOptimizer(make_rule("adamw", AdamWOptions(weight_decay=0.5)), 0.1)
    opt.step({"w": w}, {"w": np.array([0.0, 2.0], np.float32)})
    np.testing.assert_allclose(w, [1.0 * (1 - 0.1 * 0.5), 1.0 * (1 - 0.05) - 0.1], rtol=1e-5)


def test_rmsprop_divides_by_sqrt_v_plus_epsilon():
    w = np.zeros(1, np.float32)
    opt = NumpyOptimizer(make_rule("rmsprop", RMSpropOptions(rho=0.9, epsilon=1e-3)), 0.1)
    opt.step({"w": w}, {"w": np.array([2.0], np.float32)})
    v = 0.1 * 4.0
    np.testing.assert_allclose(w, [-0.1 * 2.0 / (np.sqrt(v) + 1e-3)], rtol=1e-6)


def test_state_restarts_when_a_parameter_changes_shape():
    opt = NumpyOptimizer(make_rule("sgd"), 1.0)
    w = np.zeros(2, np.float32)
    opt.step({"w": w}, {"w": np.ones(2, np.float32)})
    small = np.zeros(1, np.float32)  # a rebuilt (smaller) layer under the same name
    opt.step({"w": small}, {"w": np.ones(1, np.float32)})
    np.testing.assert_allclose(small, [-1.0])  # no momentum carried over


def test_fine_tune_equality_keeps_working_for_plain_names():
    assert fine_tune({"epochs": 5, "optimizer": "sgd"}) == FineTune(epochs=5, optimizer="sgd")
