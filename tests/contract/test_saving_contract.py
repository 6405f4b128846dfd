"""The saving capability (``slimkit.adapter.SavingAdapter``), the same contract for every adapter.

Every kind of result (magnitude-pruned after fine-tuning, channel-pruned, n:m, static int8, dynamic
int8, channel-pruned then QAT with learned activation scales) of the contract MLP saved with
``result.save`` loads back with ``slimkit.load`` onto a fresh instance of the architecture (other
weights; the instance is not modified) and computes what the saved model computes within 1e-6, with
the same quantization sites and state; a reloaded int8 model exports to the same ONNX outputs.
Nothing but a model folder or an empty folder is overwritten, ``overwrite=False`` refuses, a failed
save leaves the old folder and no temporary folder, and stale temporary folders of dead writers are
removed (a live writer's are kept). Damaged or foreign folders and unusable ``model=`` arguments are
refused with DataError naming the file, field or argument. An adapter without the capability refuses
to save with UnsupportedModelError.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import pytest

import slimkit
from slimkit.registry import adapter_for

import frameworks
from frameworks import MLP_HIDDEN, mlp_data, mlp_twin

RECIPE = {"fine_tune": None, "layers": {"exclude": ["logits"]},
          "stages": [{"prune": {"method": "channel", "sparsity": 0.5, "criterion": "l1"}}]}
CHANNEL = RECIPE["stages"][0]
#: every kind of result, each as small as it gets
METHODS = {
    "magnitude": {"fine_tune": {"epochs": 1}, "stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]},
    "channel": RECIPE,
    "n:m": {"fine_tune": None, "stages": [{"prune": {"method": "n:m", "n": 2, "m": 4}}]},
    "static": {"fine_tune": None, "stages": [{"quantize": {"method": "static"}}]},
    "dynamic": {"fine_tune": None, "stages": [{"quantize": {"method": "dynamic"}}]},
    "channel+qat": {"fine_tune": None, "layers": {"exclude": ["logits"]},
                    "stages": [CHANNEL, {"quantize": {"method": "qat", "activations": {"learn": "lsq"},
                                                      "fine_tune": {"epochs": 1}}}]},
}
SAVES = frameworks.having("saves")


@functools.lru_cache(maxsize=None)
def _result(framework_name: str, method: str):
    """One compressed contract MLP per framework and method, shared by the tests (none modifies it)."""
    x, y = mlp_data(32)
    return slimkit.compress(mlp_twin(frameworks.BY_NAME[framework_name]), METHODS[method], calib_data=x,
                            train_data=(x, y), verbose=False)


def _pruned(framework):
    return _result(framework.name, "channel"), mlp_data(32)[0]


def _weights(model) -> dict[str, dict[str, np.ndarray]]:
    adapter = adapter_for(model)
    return {layer.name: adapter.get_weights(layer.name) for layer in adapter.layers()}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("framework", SAVES, ids=str, indirect=True)
def test_every_result_loads_back_computing_the_same(framework, method, tmp_path):
    result, (x, _) = _result(framework.name, method), mlp_data(32)
    architecture = framework.mlp()
    before = _weights(architecture)
    loaded = slimkit.load(result.save(tmp_path / "model"), model=architecture)
    saved, again = adapter_for(result.model), adapter_for(loaded)
    np.testing.assert_allclose(again.predict(x), saved.predict(x), atol=1e-6)
    assert again.quant_plan() == saved.quant_plan()
    state = saved.quant_state()
    assert state.keys() == again.quant_state().keys()
    for key, values in again.quant_state().items():
        for name, value in values.items():
            np.testing.assert_array_equal(value, state[key][name], err_msg=f"{key}.{name}")
    after = _weights(architecture)  # the architecture given is not modified
    assert after.keys() == before.keys()
    for layer, weights in before.items():
        for key, value in weights.items():
            np.testing.assert_array_equal(after[layer][key], value)


@pytest.mark.parametrize("framework", SAVES, ids=str, indirect=True)
def test_a_reloaded_int8_model_exports_what_the_saved_one_exports(framework, tmp_path):
    from slimkit.deploy.runtime import run

    result, (x, _) = _result(framework.name, "static"), mlp_data(32)
    loaded = slimkit.load(result.save(tmp_path / "model"), model=framework.mlp)  # a factory works too
    result.export_onnx(tmp_path / "saved.onnx")
    slimkit.export_onnx(loaded, tmp_path / "loaded.onnx", x[:8])
    np.testing.assert_allclose(run(str(tmp_path / "loaded.onnx"), x), run(str(tmp_path / "saved.onnx"), x), atol=1e-6)


@pytest.mark.parametrize("framework", SAVES, ids=str, indirect=True)
def test_saved_pruned_model_replaces_only_model_folders(framework, tmp_path):
    result, x = _pruned(framework)
    folder = result.save(tmp_path / "model")
    assert (folder / "slimkit.json").is_file()
    assert adapter_for(slimkit.load(folder, model=framework.mlp())).get_weights("fc1")["bias"].shape == \
        (MLP_HIDDEN // 2,)
    with pytest.raises(slimkit.ExportError, match="model exists .pass overwrite=True"):
        slimkit.save(result.model, folder, overwrite=False)
    result.save(folder)  # a model folder is replaced
    np.testing.assert_allclose(adapter_for(slimkit.load(folder, model=framework.mlp())).predict(x),
                               adapter_for(result.model).predict(x), atol=1e-6)
    (tmp_path / "empty").mkdir()
    result.save(tmp_path / "empty")  # so is an empty folder
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("keep me")
    with pytest.raises(slimkit.ExportError, match="data exists and is not a model folder"):
        result.save(tmp_path / "data")
    (tmp_path / "link").symlink_to(folder, target_is_directory=True)
    with pytest.raises(slimkit.ExportError, match="link is a symbolic link; .* pass the folder's real path"):
        result.save(tmp_path / "link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "empty", "link", "model"]  # no temporary folder


@pytest.mark.parametrize("framework", SAVES, ids=str, indirect=True)
def test_a_failed_save_keeps_the_old_folder_and_leaves_nothing(framework, tmp_path, monkeypatch):
    result, x = _pruned(framework)
    folder = result.save(tmp_path / "model")

    def half_written(self, work):
        (work / "part.bin").write_bytes(b"\0" * 64)
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(adapter_for(result.model)), "save_files", half_written)
    with pytest.raises(slimkit.ExportError, match=r"writing .*model failed \(RuntimeError: disk full\)"):
        result.save(folder)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    np.testing.assert_allclose(adapter_for(slimkit.load(folder, model=framework.mlp())).predict(x),
                               adapter_for(result.model).predict(x), atol=1e-6)


@pytest.mark.parametrize("framework", SAVES, ids=str, indirect=True)
def test_stale_save_folders_of_dead_writers_are_removed_by_the_next_save(framework, tmp_path):
    result, _ = _pruned(framework)
    dead = tmp_path / ".model.slimkit-save-99999999-abc"  # above Linux's pid_max: no such process
    live = tmp_path / f".model.slimkit-save-{os.getppid()}-def"  # pytest's parent: a concurrent writer
    other = tmp_path / ".other.slimkit-save-99999999-ghi"  # another target's: not this save's business
    for stale in (dead, live, other):
        stale.mkdir()
        (stale / "model.bin").write_bytes(b"\0" * 16)
    result.save(tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "model"])


@pytest.mark.parametrize("framework", SAVES, ids=str, indirect=True)
def test_save_and_load_refuse_what_is_not_a_model_folder(framework, tmp_path):
    result, _ = _pruned(framework)
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    with pytest.raises(slimkit.ExportError, match="notes.txt exists and is not a model folder"):
        result.save(other)
    with pytest.raises(slimkit.ExportError, match="notes.txt is a file, so the folder .* cannot be created under it"):
        result.save(other / "model")
    assert other.read_text() == "keep me"
    with pytest.raises(slimkit.DataError, match="has no slimkit.json"):
        slimkit.load(tmp_path, model=framework.mlp())
    folder = result.save(tmp_path / "model")
    manifest = folder / "slimkit.json"
    manifest.write_text(json.dumps({"format": 99, "framework": framework.name, "model": {}}))
    with pytest.raises(slimkit.DataError, match="format 99"):
        slimkit.load(folder, model=framework.mlp())
    manifest.write_text("{not json")
    with pytest.raises(slimkit.DataError, match="slimkit.json is damaged"):
        slimkit.load(folder, model=framework.mlp())
    manifest.write_text(json.dumps({"format": 2, "framework": framework.name, "model": 5}))
    with pytest.raises(slimkit.DataError, match="slimkit.json is damaged: .*model an object"):
        slimkit.load(folder, model=framework.mlp())
    manifest.write_text(json.dumps({"format": 2, "framework": "caffe", "model": {}}))
    with pytest.raises(slimkit.DataError, match="holds a 'caffe' model, which no installed adapter loads"):
        slimkit.load(folder, model=framework.mlp())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "notes.txt"]  # no temporary folder left


@pytest.mark.parametrize("framework", SAVES, ids=str, indirect=True)
def test_load_refuses_a_model_argument_it_cannot_use(framework, tmp_path):
    result, _ = _pruned(framework)
    folder = result.save(tmp_path / "model")
    with pytest.raises(slimkit.DataError, match="model= must be a .* model or a function returning one, not int"):
        slimkit.load(folder, model=42)

    def broken():
        raise ZeroDivisionError("no architecture today")

    with pytest.raises(slimkit.DataError, match="factory passed as model= raised ZeroDivisionError: no architecture"):
        slimkit.load(folder, model=broken)
    with pytest.raises(slimkit.DataError, match="factory passed as model= returned a str"):
        slimkit.load(folder, model=lambda: "mlp")


@pytest.mark.parametrize("framework", [fw for fw in frameworks.FRAMEWORKS if not fw.saves], ids=str, indirect=True)
def test_adapters_without_saving_refuse_by_capability(framework, tmp_path):
    x, _ = mlp_data(32)
    result = slimkit.compress(mlp_twin(framework), RECIPE, calib_data=x, verbose=False)
    with pytest.raises(slimkit.UnsupportedModelError, match="save needs the SavingAdapter capability"):
        result.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()
