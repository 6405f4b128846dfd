"""ONNX export paths on every exporting framework: target checks before any work, symbolic links written
through, temporary files removed on failure and stale ones of killed writers removed by the next export,
opsets the recipe accepts exported, and mapping failures that name their likely cause."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import slimkit
from slimkit import ExportError
from slimkit.deploy.runtime import run
from slimkit.staging import TEMP_PREFIX, temp_name

from frameworks import having, mlp_data, mlp_twin
from twins import sample_input, twin_pair

EXPORTING = pytest.mark.parametrize("framework", having("exports_onnx"), ids=str, indirect=True)


def temps(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX))


@pytest.fixture
def model_and_sample(framework):
    return mlp_twin(framework), mlp_data(8)[0]


@EXPORTING
def test_bad_targets_fail_before_any_work(model_and_sample, tmp_path, monkeypatch):
    model, x = model_and_sample
    monkeypatch.setattr("slimkit.export.adapter_for", lambda m: pytest.fail("the model was touched"))
    with pytest.raises(ExportError, match=f"export_onnx: {tmp_path} is a directory"):
        slimkit.export_onnx(model, tmp_path, x)
    with pytest.raises(ExportError, match=r"export_onnx: cannot write .*nope/m\.onnx: directory .*nope does not exist"):
        slimkit.export_onnx(model, tmp_path / "nope" / "m.onnx", x)
    with pytest.raises(ExportError, match=r"export_onnx: opset 24 is outside 13\.\.23"):
        slimkit.export_onnx(model, tmp_path / "m.onnx", x, opset=24)
    assert list(tmp_path.iterdir()) == []


@EXPORTING
def test_export_writes_through_a_link_and_removes_only_dead_writers_files(model_and_sample, tmp_path):
    model, x = model_and_sample
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        stale, live = temp_name(dead.pid), temp_name(child.pid)
        for name in (stale, stale + ".float.onnx", live):
            (tmp_path / name).write_bytes(b"partial")
        (tmp_path / "v1.onnx").write_bytes(b"old")
        (tmp_path / "model.onnx").symlink_to("v1.onnx")
        row = slimkit.export_onnx(model, tmp_path / "model.onnx", x)
    finally:
        child.kill()
        child.wait()
    assert (tmp_path / "model.onnx").is_symlink() and row.path == str(tmp_path / "model.onnx")
    assert row.bytes == (tmp_path / "v1.onnx").stat().st_size
    assert temps(tmp_path) == [live]  # the live writer's file is kept, the dead one's are gone
    np.testing.assert_allclose(run(str(tmp_path / "v1.onnx"), x), slimkit.registry.adapter_for(model).predict(x),
                               atol=1e-4)


@EXPORTING
def test_a_failed_export_leaves_the_old_file_and_no_temporary_file(model_and_sample, tmp_path, monkeypatch):
    model, x = model_and_sample
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")

    def fail(*args, **kwargs):
        assert temps(tmp_path), "the file is written beside the target"
        raise ExportError("verification failed")

    monkeypatch.setattr("slimkit.export.verify", fail)
    with pytest.raises(ExportError, match="verification failed"):
        slimkit.export_onnx(model, target, x)
    assert target.read_bytes() == b"old" and temps(tmp_path) == []


@EXPORTING
def test_the_highest_opset_the_recipe_accepts_exports(model_and_sample, tmp_path):
    import onnx

    model, x = model_and_sample
    recipe = slimkit.Recipe.load({"fine_tune": None, "stages": [{"prune": {"sparsity": 0.5}}],
                                  "export": {"onnx": {"opset": 23}}})
    result = slimkit.compress(model, recipe, train_data=mlp_data(8), verbose=False)
    row = result.export_onnx(tmp_path / "m.onnx")
    assert row.max_abs_diff is not None and row.max_abs_diff <= row.tolerance
    opsets = {o.domain: o.version for o in onnx.load(tmp_path / "m.onnx").opset_import}
    assert opsets[""] == 23


@EXPORTING
def test_unmapped_kernels_name_disabled_batchnorm_folding(framework, tmp_path):
    model = twin_pair("bn_cnn", frameworks=(framework.name,))[framework.name]
    recipe = {"stages": [{"quantize": {"method": "static", "fold_batchnorm": False, "activations": {"samples": 8}}}]}
    result = slimkit.compress(model, recipe, calib_data=sample_input("bn_cnn", framework.name, n=8), verbose=False)
    with pytest.raises(ExportError, match=r"layer 'conv1': no Conv/Gemm/MatMul node .* the exporter most likely folded "
                                          r"an op that follows the layer into its weight: a batch norm, .*unless the "
                                          r"quantize stage sets fold_batchnorm: false"):
        result.export_onnx(tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
