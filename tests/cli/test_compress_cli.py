"""``slimkit compress`` through the real entry point (``python -m slimkit`` in a subprocess): one recipe
file on a Keras ``.keras`` model, a PyTorch state dict with ``--factory``, and a torch.export ``.pt2``
with ``--trust-model-file``; each writes the model folder, the verified ONNX file and the reports, and
the saved model reads back to what :func:`slimkit.compress` computes on the same model and data."""

from __future__ import annotations

import json

import numpy as np
import pytest

import slimkit
from slimkit.registry import adapter_for

from cli.cli_run import RECIPE, run_cli

#: (id, framework, model file, extra arguments, data file)
CASES = [
    ("keras", "keras", "cnn.keras", [], "digits_nhwc.npz"),
    ("torch-state-dict", "torch", "cnn.pt", ["--factory", "twins:torch_cnn"], "digits_nchw.npz"),
    ("torch-pt2", "torch", "cnn.pt2", ["--trust-model-file"], "digits_nchw.npz"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_compress_writes_model_onnx_and_reports(files, tmp_path, case):
    from slimkit.cli.loading import load_data, load_model
    from slimkit.deploy.runtime import run

    _, framework, model_file, extra, data_file = case
    out = tmp_path / "out"
    proc = run_cli("compress", "--model", files / model_file, *extra, "--recipe", files / "recipe.yaml",
                   "--data", files / data_file, "--eval-data", files / data_file, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("model/slimkit.json", "model.onnx", "report.json", "report.md", "report.html"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["framework"] == framework
    assert {r["name"]: r["sparsity"] for r in report["layers"]}["pw"] == pytest.approx(0.5, abs=0.01)
    assert report["files"][0]["path"].endswith("model.onnx") and report["files"][0]["max_abs_diff"] < 1e-4
    assert "## slimkit report" in (out / "report.md").read_text()
    assert "compressed (" in proc.stdout

    # the same run in this process: the saved folder reads back to its result.model
    loaded = load_model(str(files / model_file), extra[1] if extra[:1] == ["--factory"] else None,
                        trust="--trust-model-file" in extra)
    x, y = load_data(str(files / data_file), "--data")
    result = slimkit.compress(loaded.model, RECIPE, train_data=(x, y), verbose=False)
    again = slimkit.load(out / "model", model=loaded.architecture)
    want = adapter_for(result.model).predict(x[:64])
    np.testing.assert_allclose(adapter_for(again).predict(x[:64]), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(run(str(out / "model.onnx"), x[:64]), want, rtol=0, atol=1e-4)
