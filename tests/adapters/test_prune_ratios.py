"""Per-layer ratios (``overrides``) on each framework of the ``twins`` family, on the batch-norm digits CNN
(conv1 8 - bn - conv2 16 - bn - pool - logits): every layer reaches its own sparsity (magnitude, along a
schedule) and keeps its own share of channels (channel pruning, rebuilt smaller)."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.registry import adapter_for
import twins
from frameworks import building

MAGNITUDE = {"seed": 0, "stages": [{"prune": {
    "method": "magnitude", "sparsity": 0.5, "schedule": {"begin": 0.0, "end": 1.0, "every": 1},
    "fine_tune": {"epochs": 1, "batch_size": 16, "learning_rate": 0.01},
    "overrides": [{"layers": {"names": ["conv1"]}, "sparsity": 0.25},
                  {"layers": {"names": ["logits"]}, "sparsity": 0.75}],
}}]}
CHANNEL = {"seed": 0, "fine_tune": None, "stages": [{"prune": {
    "method": "channel", "sparsity": 0.5, "criterion": "l2", "layers": {"exclude": ["logits"]},
    "overrides": [{"layers": {"names": ["conv1"]}, "sparsity": 0.25}],
}}]}


@pytest.mark.parametrize("framework", building("twins"))
def test_each_layer_reaches_its_override(framework):
    model = twins.twin_pair("bn_cnn", seed=3, he=True, frameworks=(framework,))[framework]
    x = twins.sample_input("bn_cnn", framework, n=48, seed=1)
    y = np.random.default_rng(2).integers(0, 10, 48)

    result = slimkit.compress(model, MAGNITUDE, train_data=(x, y), verbose=False)
    kernels = twins.canonical_kernels(result.model)
    for name, ratio in {"conv1": 0.25, "conv2": 0.5, "logits": 0.75}.items():
        k = kernels[name]
        assert np.count_nonzero(k == 0) == round(ratio * k.size), name
        assert result.report.layer(name).target == ratio
    assert result.report.stages[0].steps == 3  # the schedule ran: 48 samples in batches of 16

    result = slimkit.compress(model, CHANNEL, calib_data=x, verbose=False)
    rows = {g.producers: (g.channels, g.kept) for g in result.report.groups}
    assert rows == {("conv1",): (8, 6), ("conv2",): (16, 8)}
    shapes = {info.name: info.shapes for info in adapter_for(result.model).layers()}
    kernels = twins.canonical_kernels(result.model)
    assert kernels["conv1"].shape[0] == 6 and kernels["conv2"].shape[:2] == (8, 6)
    assert kernels["logits"].shape == (10, 8) and shapes["bn1"]["gamma"] == (6,)
    # the report keeps each layer's size before: conv1 (no bias, a batch norm follows) had 8 3x3x1 filters, now 6
    conv1 = result.report.layer("conv1")
    assert (conv1.params_before, conv1.params) == (8 * 9, 6 * 9)
