"""Reuse within a tuning run in both frameworks: two static-int8 trials that differ only in the layers
they exclude export the float model once and calibrate once, and give the files a run without reuse gives."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.deploy.runtime import run
from slimkit.quant.reuse import reusing
from slimkit.registry import adapter_for
from frameworks import building
from twins import sample_input, twin_pair


def recipe(exclude: list[str]) -> dict:
    return {"seed": 0, "stages": [{"quantize": {"method": "static", "activations": {"samples": 32},
                                                "layers": {"exclude": exclude}}}]}


TRIALS = ([], ["pw", "fc1", "logits"])


@pytest.mark.parametrize("framework", building("twins"))
def test_trials_export_the_float_model_once_and_calibrate_once(framework, tmp_path, monkeypatch):
    model = twin_pair("cnn", seed=5, he=True, frameworks=(framework,))[framework]
    x = sample_input("cnn", framework, n=32, seed=1)
    probe = sample_input("cnn", framework, n=16, seed=9)  # inputs calibration never saw

    def trial(index: int, exclude: list[str], tag: str) -> np.ndarray:
        result = slimkit.compress(model, recipe(exclude), calib_data=x, verbose=False)
        path = tmp_path / f"{tag}{index}.onnx"
        result.export_onnx(path)
        return run(str(path), probe)

    plain = [trial(i, e, "plain") for i, e in enumerate(TRIALS)]
    exporter = type(adapter_for(model))
    calls = []
    original = exporter.export_onnx

    def counted(self, path, sample, opset):
        calls.append(path)
        return original(self, path, sample, opset)

    monkeypatch.setattr(exporter, "export_onnx", counted)
    with reusing() as cache:
        reused = [trial(i, e, "reused") for i, e in enumerate(TRIALS)]
    assert len(calls) == 1
    assert cache.stats["float_export"] == {"hits": 1, "misses": 1}
    assert cache.stats["calibration"] == {"hits": 1, "misses": 1}
    # graphs an adapter captures at a cost (PyTorch's) were captured in the first trial only
    assert cache.stats["graph"]["hits"] == cache.stats["graph"]["misses"]
    for a, b in zip(plain, reused):
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)
    assert not np.allclose(reused[0], reused[1])  # the trials did quantize differently


@pytest.mark.parametrize("framework", building("twins"))
def test_export_maps_sites_with_the_moments_calibration_took(framework, tmp_path, monkeypatch):
    """Calibration summarised each site on the first inputs, so export does not run the float model again
    to find the sites in the ONNX graph; the file is the one a mapping from fresh values gives."""
    import dataclasses

    model = twin_pair("cnn", seed=5, he=True, frameworks=(framework,))[framework]
    x = sample_input("cnn", framework, n=32, seed=1)
    probe = sample_input("cnn", framework, n=16, seed=9)
    result = slimkit.compress(model, recipe([]), calib_data=x, verbose=False)
    assert result.known is not None and result.known.site_moments
    cls = type(adapter_for(model))
    calls = []
    original = cls.layer_outputs

    def counted(self, inputs, names, batch_size=256):
        calls.append(len(names))
        return original(self, inputs, names, batch_size)

    monkeypatch.setattr(cls, "layer_outputs", counted)
    result.export_onnx(tmp_path / "known.onnx")
    assert calls == []
    dataclasses.replace(result, known=dataclasses.replace(result.known, site_moments=None)).export_onnx(
        tmp_path / "fresh.onnx")
    assert calls == [len(result.known.site_moments)]
    np.testing.assert_allclose(run(str(tmp_path / "known.onnx"), probe), run(str(tmp_path / "fresh.onnx"), probe),
                               atol=0, rtol=0)
