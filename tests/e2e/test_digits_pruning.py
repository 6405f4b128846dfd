"""The example's job, checked: 80% magnitude pruning on digits keeps accuracy, sparsity and zeros in ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import digits
import prune_digits
import slimkit
from slimkit.deploy.runtime import initializer_zeros, run as run_onnx
from slimkit.registry import adapter_for
from frameworks import building

RECIPE_TEXT = prune_digits.RECIPE.read_text()


def test_recipe_file_names_no_framework():
    lowered = RECIPE_TEXT.lower()
    for word in ("keras", "torch", "tensorflow", "pytorch", "tf."):
        assert word not in lowered


@pytest.fixture(scope="module", params=building("examples"))
def pruned(request, tmp_path_factory):
    framework = request.param
    train_data, test_data = digits.load(framework)
    model = digits.build(framework)
    digits.train(framework, model, train_data)
    result = slimkit.compress(model, prune_digits.RECIPE, train_data=train_data, eval_data=test_data)
    path = tmp_path_factory.mktemp(framework) / "pruned.onnx"
    file_row = result.export_onnx(path)
    result.user_model = model
    return framework, result, test_data, path, file_row


def test_accuracy_within_1_5_points_of_dense(pruned):
    framework, result, *_ = pruned
    before, after = result.report.metrics_before["accuracy"], result.report.metrics_after["accuracy"]
    assert before > 0.95, f"{framework} dense baseline did not train ({before:.3f})"
    assert after >= before - 0.015, f"{framework}: {before:.4f} -> {after:.4f}"


def test_every_targeted_layer_within_1_percent_of_target(pruned):
    framework, result, *_ = pruned
    targeted = [row for row in result.report.layers if row.target is not None]
    assert {row.name for row in targeted} == {"conv1", "conv2", "fc1"}
    for row in targeted:
        assert abs(row.sparsity - 0.8) <= 0.01, f"{framework} {row.name}: {row.sparsity:.4f}"
    assert result.report.layer("logits").sparsity == 0.0  # excluded by "*logits*"


def test_stripped_model_exports_with_zeros_intact(pruned):
    framework, result, test_data, path, file_row = pruned
    assert file_row.max_abs_diff < 1e-4
    zeros = initializer_zeros(str(path))
    big = {name: z for name, (size, z) in zeros.items() if size >= 144}  # the pruned kernels
    fractions = sorted(z / zeros[name][0] for name, z in big.items())
    assert len([f for f in fractions if f >= 0.79]) == 3, f"{framework}: zero fractions {fractions}"
    x = test_data[0]
    onnx_acc = float(np.mean(np.argmax(run_onnx(str(path), x), -1) == test_data[1]))
    assert onnx_acc == pytest.approx(result.report.metrics_after["accuracy"], abs=1 / len(x))


def test_users_model_is_not_modified(pruned):
    framework, result, test_data, *_ = pruned
    user = adapter_for(result.user_model)
    for name in ("conv1", "conv2", "fc1"):
        kernel = user.get_weights(name)["kernel"]
        assert np.mean(kernel == 0) < 0.01, f"{framework} {name}: the user's model was pruned"
    dense_acc = float(np.mean(np.argmax(user.predict(test_data[0]), -1) == test_data[1]))
    assert dense_acc == pytest.approx(result.report.metrics_before["accuracy"], abs=1e-9)
