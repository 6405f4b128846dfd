"""The saving capability (``slimkit.adapter.SavingAdapter``), the same contract for every adapter.

A channel-pruned contract MLP saved with ``result.save`` loads back with ``slimkit.load`` (onto a
fresh instance of the architecture, other weights) and computes what the saved model computes;
nothing but a model folder is overwritten; damaged or foreign folders are refused with DataError
naming the file. An adapter without the capability refuses to save with UnsupportedModelError.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import slimkit
from slimkit.registry import adapter_for

import frameworks
from frameworks import MLP_HIDDEN, mlp_data, mlp_twin

RECIPE = {"fine_tune": None, "layers": {"exclude": ["logits"]},
          "stages": [{"prune": {"method": "channel", "sparsity": 0.5, "criterion": "l1"}}]}


def _pruned(framework):
    x, _ = mlp_data(32)
    return slimkit.compress(mlp_twin(framework), RECIPE, calib_data=x, verbose=False), x


@pytest.mark.parametrize("framework", frameworks.having("saves"), ids=str, indirect=True)
def test_saved_pruned_model_loads_back_onto_the_architecture(framework, tmp_path):
    result, x = _pruned(framework)
    folder = result.save(tmp_path / "model")
    assert (folder / "slimkit.json").is_file()
    loaded = slimkit.load(folder, model=framework.mlp())
    np.testing.assert_allclose(adapter_for(loaded).predict(x), adapter_for(result.model).predict(x), atol=1e-6)
    assert adapter_for(loaded).get_weights("fc1")["bias"].shape == (MLP_HIDDEN // 2,)
    result.save(folder)  # a model folder is replaced
    np.testing.assert_allclose(adapter_for(slimkit.load(folder, model=framework.mlp())).predict(x),
                               adapter_for(result.model).predict(x), atol=1e-6)


@pytest.mark.parametrize("framework", frameworks.having("saves"), ids=str, indirect=True)
def test_save_and_load_refuse_what_is_not_a_model_folder(framework, tmp_path):
    result, _ = _pruned(framework)
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    with pytest.raises(slimkit.ExportError, match="notes.txt exists and is not a model folder"):
        result.save(other)
    assert other.read_text() == "keep me"
    with pytest.raises(slimkit.DataError, match="has no slimkit.json"):
        slimkit.load(tmp_path, model=framework.mlp())
    folder = result.save(tmp_path / "model")
    (folder / "slimkit.json").write_text(json.dumps({"format": 99, "framework": framework.name, "model": {}}))
    with pytest.raises(slimkit.DataError, match="format 99"):
        slimkit.load(folder, model=framework.mlp())
    (folder / "slimkit.json").write_text("{not json")
    with pytest.raises(slimkit.DataError, match="slimkit.json is damaged"):
        slimkit.load(folder, model=framework.mlp())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "notes.txt"]  # no temporary folder left


@pytest.mark.parametrize("framework", [fw for fw in frameworks.FRAMEWORKS if not fw.saves], ids=str, indirect=True)
def test_adapters_without_saving_refuse_by_capability(framework, tmp_path):
    result, _ = _pruned(framework)
    with pytest.raises(slimkit.UnsupportedModelError, match="save needs the SavingAdapter capability"):
        result.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()
