"""``slimkit inspect`` on ResNet50 (issue 15's acceptance): Keras' own ``keras.applications.ResNet50`` (the v1
design, stride in the 1x1 conv) reports Keras' ``count_params()`` and 3.86 GMACs at 224x224; the
torchvision-shaped (v1.5, stride in the 3x3 conv) PyTorch definition in ``benchmarks/torch_models.py``
4.09 GMACs, each within 1%. One test per framework: the models are large, read from files as users
pass them."""

from __future__ import annotations

import json

import pytest

from cli.cli_run import invoke

#: (framework, reference GMACs at 224x224)
REFERENCE = {"keras": 3.86, "torch": 4.09}


@pytest.mark.parametrize("framework", list(REFERENCE))
def test_inspect_resnet50_params_and_macs(tmp_path, framework):
    if framework == "keras":
        import keras

        model = keras.applications.ResNet50(weights=None)
        path, extra, params = tmp_path / "resnet50.keras", [], model.count_params()
        model.save(path)
    else:
        import torch
        from torch_models import resnet50

        model = resnet50()
        path, extra = tmp_path / "resnet50.pt", ["--factory", "torch_models:resnet50", "--input-shape", "3,224,224"]
        params = sum(t.numel() for t in model.state_dict().values() if t.dtype.is_floating_point)
        torch.save(model.state_dict(), path)
    code, out, err = invoke("inspect", path, *extra, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["params"] == params  # every weight array, batch-norm statistics included
    assert summary["macs"] == pytest.approx(REFERENCE[framework] * 1e9, rel=0.01)
    layers = {row["name"]: row for row in summary["layers"]}
    assert sum(row["macs"] or 0 for row in layers.values()) == summary["macs"]
    assert len(summary["groups"]) == 37 and summary["activation_sites"] > 50
    print(f"{framework} ResNet50: {summary['params']:,} params, {summary['macs'] / 1e9:.4f} GMACs")
