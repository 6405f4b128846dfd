"""The structured example's job: 50% of channels removed on digits, within 2 points of dense."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import digits
import slimkit
from slimkit.registry import adapter_for
from frameworks import building

RECIPE = Path(digits.__file__).resolve().parent / "recipes" / "channel_50.yaml"


@pytest.fixture(scope="module", params=building("examples"))
def pruned(request, tmp_path_factory):
    framework = request.param
    train_data, test_data = digits.load(framework)
    model = digits.build(framework)
    digits.train(framework, model, train_data)
    result = slimkit.compress(model, RECIPE, train_data=train_data, eval_data=test_data)
    row = result.export_onnx(tmp_path_factory.mktemp(framework) / "small.onnx")
    return framework, model, result, row


def test_accuracy_within_2_points(pruned):
    framework, _, result, _ = pruned
    before, after = result.report.metrics_before["accuracy"], result.report.metrics_after["accuracy"]
    assert before > 0.95
    assert after >= before - 0.02, f"{framework}: {before:.4f} -> {after:.4f}"


def test_layers_are_physically_smaller(pruned):
    framework, model, result, row = pruned
    small = {layer.name: layer.shapes["kernel"] for layer in adapter_for(result.model).layers()}
    dense = {layer.name: layer.shapes["kernel"] for layer in adapter_for(model).layers()}
    infos = {layer.name: layer for layer in adapter_for(model).layers()}
    for name, out_channels in (("conv1", 8), ("conv2", 16), ("fc1", 32)):
        assert small[name][infos[name].kernel_perm[0]] == out_channels, (framework, name, small[name])
    assert small["logits"][infos["logits"].kernel_perm[0]] == 10
    ratio = result.report.weight_bytes["fp32 after"] / result.report.weight_bytes["fp32 before"]
    assert ratio < 0.3, ratio  # conv2 and fc1 lose half their inputs and outputs
    assert row.max_abs_diff < 1e-4
    assert np.prod(dense["fc1"]) == 4 * np.prod(small["fc1"])
