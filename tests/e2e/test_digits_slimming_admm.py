"""Network slimming and ADMM pruning on the batch-norm digits CNN (tests/twins.py ``bn_cnn``), in every
framework that builds it: the penalty's effect on the scales of the channels that get removed, the
smaller model, ADMM's exact sparsity and how close its weights come to their projection."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.pruning.methods import PruneContext, method_of
from slimkit.recipe import Recipe
from slimkit.registry import adapter_for_copy
from slimkit.selection import select_layers
from frameworks import BY_NAME, building
from twins import twin_pair

FIELD = "stages[0].prune.layers"


@pytest.fixture(scope="module")
def digits():
    """1,280 training and 517 test digits as 8x8x1 images (NHWC)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    y = data.target.astype(np.int64)
    return (x[:1280], y[:1280]), (x[1280:], y[1280:])


def _layout(x, framework):
    return x if BY_NAME[framework].channels_last else x.transpose(0, 3, 1, 2).copy()


def run_stage(framework, digits, stage, epochs):
    """Fine-tunes a fresh bn_cnn twin under one prune stage as ``compress`` runs it (Adam, lr 0.01, batch 64:
    20 steps an epoch); returns the pruner, the adapter over the result and its test accuracy."""
    (x, y), (x_test, y_test) = digits
    x, x_test = _layout(x, framework), _layout(x_test, framework)
    recipe = Recipe.load({"seed": 0, "fine_tune": {"epochs": epochs, "batch_size": 64, "learning_rate": 0.01},
                          "layers": {"exclude": ["logits"]}, "stages": [{"prune": stage}]})
    model = twin_pair("bn_cnn", seed=1, he=True, frameworks=(framework,))[framework]
    work = adapter_for_copy(model)
    work.seed(0)
    stage = recipe.stages[0]
    method = method_of(stage)
    layers = select_layers(work.layers(), stage.layers, method.kinds, FIELD)
    pruner = method.pruner(work, layers, stage, PruneContext(FIELD, x[:64], (x, y), 0))
    work.fit((x, y), stage.fine_tune, pruner)
    result = pruner.finish()
    accuracy = float(np.mean(np.argmax(result.predict(x_test), axis=1) == y_test))
    return pruner, result, accuracy


def _out_channels(adapter, name):
    info = next(layer for layer in adapter.layers() if layer.name == name)
    return info.shapes["kernel"][info.kernel_perm[0]]


@pytest.mark.parametrize("framework", building("twins"))
def test_bn_l1_drives_the_removed_channels_scales_toward_zero(digits, framework):
    """Same seed, same 240 steps, channels chosen by bn_scale at step 180 (constant schedule, begin 0.75):
    with bn_l1 1.2 the removed channels' scales end about 5x closer to zero than without (mean |gamma| 0.29
    vs 1.63), and lower against the kept ones (0.62 of them vs 0.88); half the channels go, and after 60
    steps of recovery accuracy is about that of plain bn_scale pruning (0.72 vs 0.75)."""
    stage = {"method": "channel", "sparsity": 0.5, "criterion": "bn_scale",
             "schedule": {"kind": "constant", "begin": 0.75}}
    plain, _, plain_accuracy = run_stage(framework, digits, stage, epochs=12)
    slim, small, accuracy = run_stage(framework, digits, {**stage, "regularize": {"bn_l1": 1.2}}, epochs=12)
    assert plain.scales.step == slim.scales.step == 180
    assert slim.scales.removed.mean() < 0.3 * plain.scales.removed.mean(), (slim.scales, plain.scales)
    slim_ratio = slim.scales.removed.mean() / slim.scales.kept.mean()
    plain_ratio = plain.scales.removed.mean() / plain.scales.kept.mean()
    assert slim_ratio < 0.85 * plain_ratio, (slim_ratio, plain_ratio)
    assert (_out_channels(small, "conv1"), _out_channels(small, "conv2")) == (4, 8)
    assert accuracy > 0.6 and accuracy >= plain_accuracy - 0.1, (accuracy, plain_accuracy)


@pytest.mark.parametrize("framework", building("twins"))
def test_admm_reaches_the_exact_sparsity_from_weights_already_near_it(digits, framework):
    """120 steps, Z/U every 5 until the hard projection at step 84 (retrain 0.3): ||W - Z|| / ||W|| falls
    (0.17 -> 0.04), and at the projection the weights are within a fifth of the distance it would have
    moved the starting weights (0.35 -> 0.03); the last 36 steps train with the masks."""
    pruner, result, accuracy = run_stage(framework, digits, {"method": "admm", "sparsity": 0.6, "every": 5},
                                         epochs=6)
    residuals = [r for _, r in pruner.residuals]
    assert len(residuals) == 16 and residuals[-1] < 0.4 * residuals[0], residuals
    (_, first), (step, last) = pruner.gaps
    assert step == 84 and last < 0.2 * first, pruner.gaps
    for name in ("conv1", "conv2"):
        kernel = result.get_weights(name)["kernel"]
        assert np.count_nonzero(kernel == 0) == round(0.6 * kernel.size), name
    assert np.count_nonzero(result.get_weights("logits")["kernel"] == 0) == 0
    assert accuracy > 0.6, accuracy
