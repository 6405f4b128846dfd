"""ResNet50 and MobileNetV2 (Keras applications, PyTorch equivalents) prune at 50% and still export."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import slimkit
from slimkit.registry import adapter_for

from frameworks import building

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
SIZE = 32


def _build(framework: str, name: str):
    x = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    if framework == "keras":
        import keras

        keras.utils.set_random_seed(0)
        ctor = keras.applications.ResNet50 if name == "resnet50" else keras.applications.MobileNetV2
        return ctor(weights=None, input_shape=(SIZE, SIZE, 3), classes=10), x
    import torch
    import torch_models

    torch.manual_seed(0)
    model = torch_models.resnet50(num_classes=10) if name == "resnet50" else torch_models.mobilenet_v2(num_classes=10)
    return model.eval(), x.transpose(0, 3, 1, 2).copy()


@pytest.mark.parametrize("framework", building("applications"))
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_prunes_half_the_channels_runs_and_exports(framework, name, tmp_path):
    model, x = _build(framework, name)
    recipe = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5, "round_to": 8}}]}
    result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
    groups = result.report.groups
    assert len(groups) >= (30 if name == "resnet50" else 20)
    for g in groups:
        assert g.kept % 8 == 0 or g.kept == g.channels, g
        assert g.kept <= max(8, round(g.channels / 2 / 8) * 8)
    before = sum(layer.params for layer in adapter_for(model).layers())
    after = sum(layer.params for layer in adapter_for(result.model).layers())
    assert after < 0.45 * before, (before, after)
    out = adapter_for(result.model).predict(x)
    assert out.shape == (2, 10) and np.all(np.isfinite(out))
    row = result.export_onnx(tmp_path / f"{name}.onnx")
    assert row.max_abs_diff < 1e-4 * max(1.0, float(np.abs(out).max()))
