"""Twins pruned by a recipe with per-layer ``overrides`` end with the same masks (magnitude, global scope
among the layers no override picks) and keep the same channels (channel pruning), for every pair of
frameworks of the ``twins`` family."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
import twins
from frameworks import pair_ids, pairs

RECIPES = {
    "magnitude": {"seed": 0, "fine_tune": None, "stages": [{"prune": {
        "method": "magnitude", "sparsity": 0.6, "scope": "global",
        "overrides": [{"layers": {"names": ["conv1"]}, "sparsity": 0.2},
                      {"layers": {"kinds": ["dense"]}, "sparsity": 0.4}],
    }}]},
    "channel": {"seed": 0, "fine_tune": None, "stages": [{"prune": {
        "method": "channel", "sparsity": 0.5, "criterion": "l1", "layers": {"exclude": ["logits"]},
        "overrides": [{"layers": {"names": ["conv2"]}, "sparsity": 0.75}],
    }}]},
}


@pytest.mark.parametrize("pair", pairs("twins"), ids=pair_ids("twins"))
@pytest.mark.parametrize("method", list(RECIPES))
def test_twins_prune_overridden_layers_alike(method, pair):
    models = twins.twin_pair("bn_cnn", seed=5, he=True, frameworks=pair)
    kernels = {}
    for fw, model in models.items():
        result = slimkit.compress(model, RECIPES[method], calib_data=twins.sample_input("bn_cnn", fw, n=16),
                                  verbose=False)
        kernels[fw] = twins.canonical_kernels(result.model)
    a, b = (kernels[fw] for fw in pair)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name] == 0, b[name] == 0, err_msg=f"{method} {name}")
        np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=f"{method} {name}")
    if method == "channel":
        assert a["conv2"].shape[0] == 4 and a["conv1"].shape[0] == 4
