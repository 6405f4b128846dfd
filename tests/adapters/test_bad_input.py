"""Bad input through the public API on real frameworks: clear errors, no files, no mutation."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.deploy import runtime
from frameworks import building
from twins import BUILDERS, sample_input

FRAMEWORKS = building("twins")
ONE_SHOT = {"fine_tune": None, "stages": [{"prune": {"sparsity": 0.5}}]}


@pytest.mark.parametrize("framework", FRAMEWORKS)
class TestBadInput:
    def test_selector_matching_nothing_lists_the_layers(self, framework):
        model = BUILDERS["cnn"][framework]()
        recipe = {**ONE_SHOT, "layers": {"names": ["encoder*"]}}
        with pytest.raises(slimkit.RecipeError, match=r"stages\[0\]\.prune\.layers.*matches no layer") as err:
            slimkit.compress(model, recipe, verbose=False)
        for name in ("conv1", "bn1", "dw", "pw", "fc1", "logits"):
            assert name in str(err.value)

    def test_unsupported_layer_named_outright(self, framework):
        model = BUILDERS["cnn"][framework]()
        recipe = {**ONE_SHOT, "layers": {"names": ["bn1"]}}
        with pytest.raises(slimkit.RecipeError, match="'bn1'.*batchnorm.*not supported"):
            slimkit.compress(model, recipe, verbose=False)

    def test_train_data_of_wrong_shape(self, framework):
        model = BUILDERS["cnn"][framework]()
        recipe = {"fine_tune": {"epochs": 1}, "stages": [{"prune": {"sparsity": 0.5}}]}
        x = np.zeros((10, 64), np.float32)
        with pytest.raises(slimkit.DataError, match=r"train_data.*\(10, 64\)"):
            slimkit.compress(model, recipe, train_data=(x, np.zeros(10, np.int64)), verbose=False)

    def test_missing_train_data_for_fine_tuning(self, framework):
        model = BUILDERS["cnn"][framework]()
        recipe = {"fine_tune": {"epochs": 1}, "stages": [{"prune": {"sparsity": 0.5}}]}
        with pytest.raises(slimkit.DataError, match=r"train_data: required because stages\[0\]"):
            slimkit.compress(model, recipe, verbose=False)

    def test_failed_verification_leaves_no_file(self, framework, tmp_path, monkeypatch):
        model = BUILDERS["cnn"][framework]()
        real_run = runtime.run
        monkeypatch.setattr(runtime, "run", lambda path, x: real_run(path, x) + 1e-2)
        target = tmp_path / "model.onnx"
        with pytest.raises(slimkit.ExportError, match="differs from the framework"):
            slimkit.export_onnx(model, target, sample=sample_input("cnn", framework, n=4))
        assert list(tmp_path.iterdir()) == []

    def test_export_sample_of_wrong_shape(self, framework, tmp_path):
        model = BUILDERS["cnn"][framework]()
        with pytest.raises(slimkit.DataError, match="sample"):
            slimkit.export_onnx(model, tmp_path / "m.onnx", sample=np.zeros((2, 3), np.float32))
        assert list(tmp_path.iterdir()) == []


def test_unsupported_model_type_names_the_type():
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(slimkit.UnsupportedModelError, match="LogisticRegression"):
        slimkit.compress(LogisticRegression(), ONE_SHOT, verbose=False)
