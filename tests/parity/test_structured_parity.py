"""Keras and PyTorch twins choose the same channels under every deterministic criterion."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.pruning.structured import ChannelPruner
from slimkit.recipe import Recipe
from slimkit.registry import adapter_for_copy
import zoo

CRITERIA = ["l1", "l2", "fpgm", "bn_scale", "apoz", "mean_activation"]


def _choices(model, arch, framework, criterion, scope):
    x = zoo.sample(arch, framework, n=32, seed=5)
    recipe = Recipe.load({"fine_tune": None, "layers": {"exclude": ["logits"]}, "stages": [{"prune": {
        "method": "channel", "sparsity": 0.4, "criterion": criterion, "scope": scope, "samples": 32}}]})
    work = adapter_for_copy(model)
    layers = [layer for layer in work.layers() if layer.kind in ("conv", "dense") and layer.name != "logits"]
    pruner = ChannelPruner(work, layers, recipe.stages[0], "stages[0].prune.layers", x, None, seed=0)
    return {tuple(sorted(c.group.producers)): c.keep for c in pruner.choose(0.4)}


@pytest.mark.parametrize("arch", ["plain", "residual", "inverted", "concat"])
@pytest.mark.parametrize("criterion", CRITERIA)
def test_twins_choose_identical_channels(arch, criterion):
    models = zoo.twins(arch, seed=4)
    keras_choice = _choices(models["keras"], arch, "keras", criterion, "layer")
    torch_choice = _choices(models["torch"], arch, "torch", criterion, "layer")
    assert keras_choice.keys() == torch_choice.keys()
    for producers, keep in keras_choice.items():
        np.testing.assert_array_equal(keep, torch_choice[producers], err_msg=f"{arch} {criterion} {producers}")


@pytest.mark.parametrize("arch", ["residual", "concat"])
def test_twins_choose_identical_channels_globally(arch):
    models = zoo.twins(arch, seed=4)
    keras_choice = _choices(models["keras"], arch, "keras", "l2", "global")
    torch_choice = _choices(models["torch"], arch, "torch", "l2", "global")
    for producers, keep in keras_choice.items():
        np.testing.assert_array_equal(keep, torch_choice[producers], err_msg=f"{arch} {producers}")
