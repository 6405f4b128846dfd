"""examples/custom_criterion.py: a criterion defined outside slimkit drives channel pruning on twins in
every framework of the examples to identical channel choices, the ones the criterion ranks highest."""

from __future__ import annotations

import numpy as np
import pytest

import custom_criterion
import slimkit
from slimkit.errors import RecipeError
from frameworks import building, pair_ids, pairs
from twins import canonical_kernels


@pytest.fixture(scope="module")
def kept():
    return custom_criterion.main()


@pytest.mark.parametrize("pair", pairs("examples"), ids=pair_ids("examples"))
def test_twins_keep_the_same_channels(kept, pair):
    a, b = pair
    assert kept[a] == kept[b]
    assert [len(kept[a][layer]) for layer in ("fc1", "fc2")] == [24, 16]


@pytest.mark.parametrize("framework", building("examples"))
def test_the_kept_channels_are_the_criterions_top_half(kept, framework):
    kernels = canonical_kernels(custom_criterion.twins()[framework])  # (out, in)
    fc1, fc2 = kernels["fc1"], kernels["fc2"]
    # fc1's channel group: fc1's output rows and fc2's input columns
    score = np.maximum(np.abs(fc1).max(axis=1), np.abs(fc2).max(axis=0))
    assert kept[framework]["fc1"] == sorted(np.argsort(-score, kind="stable")[:24].tolist())


def test_the_registry_knows_it_and_recipes_name_it():
    assert "max_abs" in slimkit.CRITERIA
    with pytest.raises(RecipeError, match=r"stages\[0\]\.prune\.criterion: 'max_ab' is not one of .*max_abs"):
        slimkit.Recipe.load({"stages": [{"prune": {"method": "channel", "sparsity": 0.5, "criterion": "max_ab"}}]})


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="a criterion named 'l1' is registered already"):
        slimkit.register_criterion("l1")(type("Other", (slimkit.Criterion,), {}))
