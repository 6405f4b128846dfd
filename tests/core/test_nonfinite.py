"""NaN and infinity are refused where data enters, naming the argument and the count; uint8 inputs are
image pixels (the model's float type), wider integers stay token ids."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.data import as_arrays, check_finite, count_nonfinite, first_inputs, is_integer

X = np.arange(32, dtype=np.float32).reshape(8, 4)
Y = np.arange(8) % 4


def with_bad(x: np.ndarray, nans: int, infs: int) -> np.ndarray:
    x = x.copy()
    flat = x.reshape(-1)
    flat[:nans] = np.nan
    flat[nans:nans + infs] = -np.inf
    return x


def test_counts_nan_and_infinity_separately_over_every_input():
    x = {"a": with_bad(X, 2, 1), "ids": np.ones((8, 3), np.int64), "b": with_bad(X, 0, 3)}
    assert count_nonfinite(x) == (2, 4)
    with pytest.raises(slimkit.DataError, match=r"^calib_data: holds 2 NaN and 4 infinite value\(s\) \(of 88\)"):
        check_finite(x, "calib_data")


@pytest.mark.parametrize("where, message", [
    ("x", r"^train_data x: holds 3 NaN value\(s\) \(of 32\)"),
    ("y", r"^train_data y: holds 1 infinite value\(s\) \(of 8\)"),
])
def test_labelled_data_names_x_or_y(where, message):
    x, y = (with_bad(X, 3, 0), Y) if where == "x" else (X, with_bad(Y.astype(np.float32), 0, 1))
    with pytest.raises(slimkit.DataError, match=message):
        as_arrays((x, y), "train_data", need_labels=True)


def test_unlabelled_inputs_are_checked_whole_before_the_head_is_taken():
    x = np.concatenate([X, with_bad(X, 1, 0)])  # the NaN lies past the first 8 samples
    with pytest.raises(slimkit.DataError, match=r"^calib_data: holds 1 NaN"):
        first_inputs(x, "calib_data", 8, labelled=False)
    with pytest.raises(slimkit.DataError, match=r"^sample: holds 1 NaN"):
        as_arrays(x, "sample", need_labels=False)


def test_finite_data_passes_unchanged():
    x, y = as_arrays((X, Y), "train_data", need_labels=True)
    assert x is not None and np.array_equal(y, Y)
    assert first_inputs(X, "calib_data", 4, labelled=False).shape == (4, 4)


@pytest.mark.parametrize("recipe", [
    {"fine_tune": {"epochs": 1}, "stages": [{"prune": {"sparsity": 0.5}}]},
    {"stages": [{"quantize": {"method": "qat", "fine_tune": {"epochs": 1}}}]},  # once "min/max must be finite"
], ids=["prune", "qat"])
@pytest.mark.parametrize("argument", ["train_data", "calib_data", "eval_data"])
def test_compress_refuses_non_finite_data_up_front(fake_registered, mlp, argument, recipe):
    x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    y = np.arange(16) % 4
    bad = with_bad(x, 5, 2)
    data = {"train_data": (bad, y), "calib_data": bad, "eval_data": (bad, y)}[argument]
    others = {"train_data": (x, y)} if argument != "train_data" else {}
    with pytest.raises(slimkit.DataError, match=rf"^{argument}( x)?: holds 5 NaN and 2 infinite value\(s\)"):
        slimkit.compress(mlp, recipe, verbose=False, **{argument: data}, **others)


@pytest.mark.parametrize("dtype, integer", [
    (np.uint8, False), (np.uint16, True), (np.int32, True), (np.int64, True), (np.bool_, True), (np.float64, False),
])
def test_uint8_is_pixels_other_integers_are_ids(dtype, integer):
    assert is_integer(np.zeros(3, dtype)) is integer
