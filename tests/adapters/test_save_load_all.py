"""Saving and loading what is specific to each framework (the shared contract: tests/contract/test_saving_contract.py).

PyTorch: a quantized model folder holds only safetensors and JSON and loads with every unpickler
disabled; models captured with torch.export and batch norms folded into bias-less convolutions replay;
an architecture or record that does not fit is a DataError naming the layer or field. Keras: a
quantized ``.keras`` file loads in a fresh process through ``slimkit.load`` with nothing imported
by hand, and through plain ``keras.saving.load_model`` after ``import keras; import slimkit``; a
fine-tuned pruned model's file needs no slimkit at all (slimkit's training state is not saved, and
the result keeps it).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import slimkit
from slimkit.registry import adapter_for

from frameworks import BY_NAME, mlp_data, mlp_twin

STATIC = {"fine_tune": None, "stages": [{"quantize": {"method": "static"}}]}


@pytest.fixture(scope="module")
def torch_int8(tmp_path_factory):
    """A static int8 contract MLP (PyTorch), its folder and inputs."""
    pytest.importorskip("torch")
    x, _ = mlp_data(32)
    result = slimkit.compress(mlp_twin(BY_NAME["torch"]), STATIC, calib_data=x, verbose=False)
    return result, result.save(tmp_path_factory.mktemp("torch") / "int8"), x


def _edited(folder, tmp_path, edit):
    """A copy of a model folder whose manifest ``edit(manifest)`` changed."""
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / "slimkit.json").read_text())
    edit(manifest)
    (copy / "slimkit.json").write_text(json.dumps(manifest))
    return copy


# ----------------------------------------------------------------------------------------------- PyTorch
def test_torch_int8_folder_is_safetensors_and_json_and_loads_with_unpickling_disabled(torch_int8, monkeypatch):
    import torch

    result, folder, x = torch_int8
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "slimkit.json"]
    record = json.loads((folder / "slimkit.json").read_text())["model"]
    assert record["modules"]["bn"] == "Identity"  # folded into fc1
    assert [a["node"] for a in record["quant"]["plan"]["acts"]] == ["x", "relu", "relu_1", "logits"]

    def refuse(*args, **kwargs):
        raise AssertionError("slimkit.load unpickled something")

    for owner, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(owner, name, refuse)
    loaded = slimkit.load(folder, model=BY_NAME["torch"].mlp())
    monkeypatch.undo()
    np.testing.assert_allclose(adapter_for(loaded).predict(x), adapter_for(result.model).predict(x), atol=1e-6)
    assert not loaded.training


def test_torch_models_captured_by_torch_export_and_folded_bias_free_convs_replay(tmp_path):
    import torch
    from torch import nn

    import twins

    class Sliced(nn.Module):  # int(shape) stops torch.fx: captured with torch.export on the sample
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x[:, :int(x.shape[-1])])))

    cases = {"captured": (Sliced, np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)),
             "bn_cnn": (twins.torch_bn_cnn, twins.sample_input("bn_cnn", "torch", 16))}
    for name, (build, x) in cases.items():
        torch.manual_seed(0)
        result = slimkit.compress(build(), STATIC, calib_data=x, verbose=False)
        loaded = slimkit.load(result.save(tmp_path / name), model=build)
        np.testing.assert_allclose(adapter_for(loaded).predict(x), adapter_for(result.model).predict(x), atol=1e-6,
                                   err_msg=name)
    assert loaded.conv1.bias is not None and isinstance(loaded.bn1, nn.Identity)  # bias gained from the fold


def test_torch_model_with_pruning_masks_attached_saves_them_baked_in(tmp_path):
    from slimkit.registry import adapter_for_copy

    x, _ = mlp_data(8)
    work = adapter_for_copy(mlp_twin(BY_NAME["torch"]))
    kernel = work.get_weights("fc1")["kernel"]
    work.set_mask("fc1", (np.arange(kernel.size).reshape(kernel.shape) % 2).astype(np.float32))
    loaded = slimkit.load(slimkit.save(work.model, tmp_path / "masked"), model=BY_NAME["torch"].mlp())
    np.testing.assert_allclose(adapter_for(loaded).predict(x), work.predict(x), atol=1e-6)
    assert (loaded.fc1.weight.detach().numpy()[:, ::2] == 0).all() and type(loaded.fc1).__name__ == "Linear"


def test_torch_architecture_that_does_not_fit_the_record_names_the_layer(torch_int8):
    from torch import nn

    _, folder, _ = torch_int8
    swapped = BY_NAME["torch"].mlp()
    swapped.bn = nn.Dropout()  # no tensors: only the class record tells
    with pytest.raises(slimkit.DataError, match="records layer 'bn' as Identity, but ContractMLP rebuilt from it "
                                                "has Dropout"):
        slimkit.load(folder, model=swapped)
    wider = BY_NAME["torch"].mlp()
    wider.extra = nn.Linear(2, 2)  # not called in forward: kept by the trace, absent from the file
    with pytest.raises(slimkit.DataError, match=r"lacks tensor 'extra\.(bias|weight)' \(layer 'extra'\)"):
        slimkit.load(folder, model=wider)
    with pytest.raises(slimkit.DataError, match=r"pass an instance of it .*model=MyModel\(\)"):
        slimkit.load(folder)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["model"]["quant"]["plan"]["acts"][0]["spec"].update(qmin="0"),
     r"model.quant.plan.acts\[0\].spec.qmin must be an integer"),
    (lambda m: m["model"]["quant"]["plan"]["acts"][1].update(node="nowhere"),
     r"field model.quant: the quantization saved does not fit ContractMLP: .*'nowhere'"),
    (lambda m: m["model"]["layers"]["fc1"].update(kernel="32x16"), "field model.layers.fc1.kernel must be a list"),
    (lambda m: m["model"].update(weights="../model.safetensors"), "field model.weights must name a file"),
    (lambda m: m["model"]["quant"]["traced_on"]["inputs"][0].__setitem__(2, "object"),
     r"field model.quant.traced_on.inputs\[0\] is no input"),
], ids=["spec", "site", "shape", "path", "sample"])
def test_torch_damaged_record_is_a_data_error_naming_the_field(torch_int8, tmp_path, edit, match):
    _, folder, _ = torch_int8
    with pytest.raises(slimkit.DataError, match=match):
        slimkit.load(_edited(folder, tmp_path, edit), model=BY_NAME["torch"].mlp())


def test_torch_missing_weights_file_is_named(torch_int8, tmp_path):
    _, folder, _ = torch_int8
    copy = _edited(folder, tmp_path, lambda m: None)
    (copy / "model.safetensors").unlink()
    with pytest.raises(slimkit.DataError, match=r"model.safetensors cannot be read"):
        slimkit.load(copy, model=BY_NAME["torch"].mlp())


# ------------------------------------------------------------------------------------------------- Keras
def test_keras_files_load_without_importing_slimkit_modules_by_hand(tmp_path, monkeypatch):
    keras = pytest.importorskip("keras")
    import zipfile

    x, y = mlp_data(32)
    keras_fw = BY_NAME["keras"]
    int8 = slimkit.compress(mlp_twin(keras_fw), STATIC, calib_data=x, verbose=False)
    tuned = slimkit.compress(mlp_twin(keras_fw), {"fine_tune": {"epochs": 1},
                                                  "stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]},
                             train_data=(x, y), verbose=False)
    optimizer = tuned.model.optimizer
    tuned.save(tmp_path / "tuned")
    assert tuned.model.optimizer is optimizer and tuned.model.compiled  # the result keeps its training state
    with zipfile.ZipFile(tmp_path / "tuned" / "model.keras") as file:  # only Keras' own classes: plain Keras loads it
        assert "slimkit" not in file.read("config.json").decode()
    folder = int8.save(tmp_path / "int8")
    # slimkit.load registers slimkit's layers itself, also when they are not (or no longer) registered
    for name in ("slimkit>FakeQuant", "slimkit>QuantLayer"):
        monkeypatch.delitem(keras.saving.get_custom_objects(), name)
    np.testing.assert_allclose(adapter_for(slimkit.load(folder)).predict(x), adapter_for(int8.model).predict(x),
                               atol=1e-6)
    # import keras; import slimkit: Keras' own loader finds them, in safe mode, in a fresh process
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "int8.npy", adapter_for(int8.model).predict(x))
    code = f"""
        import numpy as np
        import keras
        import slimkit
        model = keras.saving.load_model({str(folder / "model.keras")!r}, safe_mode=True)
        got = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        assert np.abs(got - np.load({str(tmp_path / "int8.npy")!r})).max() <= 1e-6
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def test_keras_manifest_naming_a_file_outside_the_folder_is_refused(tmp_path):
    pytest.importorskip("keras")
    x, _ = mlp_data(32)
    result = slimkit.compress(mlp_twin(BY_NAME["keras"]), {"fine_tune": None, "stages": [{"prune": {"sparsity": 0.5}}]},
                              verbose=False)
    folder = result.save(tmp_path / "model")
    copy = _edited(folder, tmp_path, lambda m: m["model"].update(file="../../model.keras"))
    with pytest.raises(slimkit.DataError, match="field model.file must name a file in the folder"):
        slimkit.load(copy)
    (copy / "slimkit.json").write_text(json.dumps({"format": 2, "framework": "keras", "model": {"file": "gone.keras"}}))
    with pytest.raises(slimkit.DataError, match="gone.keras cannot be loaded safely by keras"):
        slimkit.load(copy)
    np.testing.assert_allclose(adapter_for(slimkit.load(folder)).predict(x), adapter_for(result.model).predict(x),
                               atol=1e-6)
