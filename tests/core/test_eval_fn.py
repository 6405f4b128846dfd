"""eval_fn results and eval_data labels are checked (DataError naming them), over the fake framework;
and quantize overrides that pick no layer are refused like stage selectors."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit import DataError, RecipeError
from slimkit.metrics import call_eval_fn

pytestmark = pytest.mark.usefixtures("fake_registered")

ONE_SHOT = {"fine_tune": None, "stages": [{"prune": {"sparsity": 0.5}}]}


class Tensor0d:
    """A framework's 0-d tensor as eval_fn may return it: shape () and item()."""

    shape = ()

    def __init__(self, value):
        self.value = value

    def item(self):
        return self.value


@pytest.mark.parametrize("value, expected", [
    (0.5, 0.5), (3, 3.0), (np.float32(0.25), 0.25), (np.int64(2), 2.0), (np.array(0.75), 0.75),
    (Tensor0d(0.125), 0.125),
])
def test_real_scalars_of_any_kind_are_accepted(value, expected):
    assert call_eval_fn(lambda m: value, object()) == expected


@pytest.mark.parametrize("value, match", [
    (None, r"eval_fn must return a finite real number .*, got None None"),
    ("0.9", r"eval_fn must return a finite real number .*, got builtins\.str '0\.9'"),
    (np.array([0.5, 0.6]), r"got numpy\.ndarray array of shape \(2,\) and dtype float64"),
    (True, r"got builtins\.bool True"),
    (1 + 2j, r"got builtins\.complex \(1\+2j\)"),
    ({"acc": 0.9}, r"got builtins\.dict \{'acc': 0\.9\}"),
    (Tensor0d("x"), r"got test_eval_fn\.Tensor0d"),
    (float("nan"), r"eval_fn returned nan; it must return a finite real number"),
    (np.float64("inf"), r"eval_fn returned inf"),
])
def test_other_results_are_data_errors_naming_eval_fn_and_the_value(value, match):
    with pytest.raises(DataError, match=match):
        call_eval_fn(lambda m: value, object())


def test_long_reprs_are_cut():
    with pytest.raises(DataError) as info:
        call_eval_fn(lambda m: "x" * 10_000, object())
    assert len(str(info.value)) < 300


def test_an_exception_in_eval_fn_is_wrapped_with_the_original_as_cause(mlp):
    def broken(model):
        return 1 / 0

    with pytest.raises(DataError, match=r"eval_fn raised ZeroDivisionError: division by zero") as info:
        slimkit.compress(mlp, ONE_SHOT, eval_fn=broken, verbose=False)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_compress_reports_a_checked_eval_fn(mlp):
    result = slimkit.compress(mlp, ONE_SHOT, eval_fn=lambda m: np.array(0.5), verbose=False)
    assert result.report.metrics_before["eval_fn"] == 0.5 == result.report.metrics_after["eval_fn"]
    with pytest.raises(DataError, match="eval_fn must return a finite real number"):
        slimkit.compress(mlp, ONE_SHOT, eval_fn=lambda m: None, verbose=False)


def test_eval_labels_shaped_n_by_1_are_class_ids(mlp, classification_data):
    x, y = classification_data
    flat = slimkit.compress(mlp, ONE_SHOT, eval_data=(x, y), verbose=False).report.metrics_before
    column = slimkit.compress(mlp, ONE_SHOT, eval_data=(x, y[:, None]), verbose=False).report.metrics_before
    assert column == flat and set(flat) == {"accuracy"}


@pytest.mark.parametrize("labels, match", [
    (lambda y: y.astype(np.float32), r"eval_data: labels of shape \(200,\) do not fit the model's output \(200, 4\); "
                                     r"give \(N,\) or \(N, 1\) class ids, or targets shaped \(200, 4\)"),
    (lambda y: np.stack([y, y], 1), r"eval_data: labels of shape \(200, 2\) do not fit"),
    (lambda y: y + 4, r"eval_data: class ids must lie in \[0, 4\) for a model with 4 outputs; found ids from 4 to 7"),
])
def test_eval_labels_that_fit_no_metric_are_data_errors(mlp, classification_data, labels, match):
    x, y = classification_data
    with pytest.raises(DataError, match=match):
        slimkit.compress(mlp, ONE_SHOT, eval_data=(x, labels(y)), verbose=False)


def test_quantize_override_matching_no_layer_is_refused(classification_data):
    from fake_adapter import make_mlp

    x, _ = classification_data
    recipe = {"stages": [{"quantize": {"layers": {"exclude": ["logits"]}, "overrides": [
        {"layers": {"names": ["fc2"]}, "weights": {"per_channel": False}},
        {"layers": {"names": ["logits"]}, "weights": {"per_channel": False}}]}}]}
    with pytest.raises(RecipeError, match=r"stages\[0\]\.quantize\.overrides\[1\]\.layers: selector "
                                          r"\(names=\['logits'\].*matches no layer this stage quantizes; its layers "
                                          r"are: fc1 \(dense\), fc2 \(dense\)"):
        slimkit.compress(make_mlp(other=False), recipe, calib_data=x, verbose=False)
