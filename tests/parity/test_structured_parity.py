"""Twins choose the same channels under every deterministic criterion, for every pair of frameworks of
the ``zoo`` family."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.pruning.structured import ChannelPruner
from slimkit.recipe import Recipe
from slimkit.registry import adapter_for_copy
import zoo
from frameworks import pair_ids, pairs

PAIRS, PAIR_IDS = pairs("zoo"), pair_ids("zoo")

CRITERIA = ["l1", "l2", "fpgm", "bn_scale", "apoz", "mean_activation"]


def _choices(model, arch, framework, criterion, scope):
    x = zoo.sample(arch, framework, n=32, seed=5)
    recipe = Recipe.load({"fine_tune": None, "layers": {"exclude": ["logits"]}, "stages": [{"prune": {
        "method": "channel", "sparsity": 0.4, "criterion": criterion, "scope": scope, "samples": 32}}]})
    work = adapter_for_copy(model)
    layers = [layer for layer in work.layers() if layer.kind in ("conv", "dense") and layer.name != "logits"]
    pruner = ChannelPruner(work, layers, recipe.stages[0], "stages[0].prune.layers", x, None, seed=0)
    return {tuple(sorted(c.group.producers)): c.keep for c in pruner.choose(0.4)}


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("arch", ["plain", "residual", "inverted", "concat"])
@pytest.mark.parametrize("criterion", CRITERIA)
def test_twins_choose_identical_channels(arch, criterion, pair):
    a, b = pair
    models = zoo.twins(arch, seed=4, frameworks=pair)
    choice_a = _choices(models[a], arch, a, criterion, "layer")
    choice_b = _choices(models[b], arch, b, criterion, "layer")
    assert choice_a.keys() == choice_b.keys()
    for producers, keep in choice_a.items():
        np.testing.assert_array_equal(keep, choice_b[producers], err_msg=f"{arch} {criterion} {producers}")


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("arch", ["residual", "concat"])
def test_twins_choose_identical_channels_globally(arch, pair):
    a, b = pair
    models = zoo.twins(arch, seed=4, frameworks=pair)
    choice_a = _choices(models[a], arch, a, "l2", "global")
    choice_b = _choices(models[b], arch, b, "l2", "global")
    assert choice_a.keys() == choice_b.keys()
    for producers, keep in choice_a.items():
        np.testing.assert_array_equal(keep, choice_b[producers], err_msg=f"{arch} {producers}")
