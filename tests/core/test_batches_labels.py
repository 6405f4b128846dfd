"""Batch order and label forms: defined once in core, used by every adapter's training loop."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.batches import ArrayBatches
from slimkit.errors import DataError
from slimkit.labels import prepare_labels


def test_epochs_cover_every_sample_once_with_a_partial_last_batch():
    order = ArrayBatches(10, 4, shuffle=True, rng=np.random.default_rng(3))
    assert len(order) == 3
    epochs = list(order.epochs(2))
    for batches in epochs:
        assert [len(b) for b in batches] == [4, 4, 2]
        assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert not np.array_equal(np.concatenate(epochs[0]), np.concatenate(epochs[1]))


def test_the_same_seed_gives_the_same_order_and_unshuffled_is_in_order():
    a = list(ArrayBatches(50, 8, True, np.random.default_rng(7)).epochs(3))
    b = list(ArrayBatches(50, 8, True, np.random.default_rng(7)).epochs(3))
    assert all(np.array_equal(x, y) for ea, eb in zip(a, b) for x, y in zip(ea, eb))
    plain = ArrayBatches(5, 2, False, np.random.default_rng(0)).epoch()
    assert [b.tolist() for b in plain] == [[0, 1], [2, 3], [4]]


def test_sparse_labels_become_int64_class_ids_without_a_trailing_one():
    y = prepare_labels(np.array([[1.0], [0.0], [2.0]]), "sparse_categorical_crossentropy", (3,), 3)
    assert y.dtype == np.int64 and y.tolist() == [1, 0, 2]
    seq = prepare_labels(np.zeros((2, 5), np.int32), "sparse_categorical_crossentropy", (5, 7), 2)
    assert seq.shape == (2, 5) and seq.dtype == np.int64


def test_regression_and_binary_targets_get_the_outputs_shape():
    y = prepare_labels(np.array([0, 1, 1]), "binary_crossentropy", (1,), 3)
    assert y.shape == (3, 1) and y.dtype == np.float32
    assert prepare_labels(np.ones((3, 2)), "mse", (2,), 3).shape == (3, 2)
    onehot = prepare_labels(np.eye(3), "categorical_crossentropy", (3,), 3)
    assert onehot.dtype == np.float32


@pytest.mark.parametrize("y, loss, out, message", [
    (np.array([0, 3]), "sparse_categorical_crossentropy", (3,),
     "train_data: y class labels must lie in [0, 3) for a model with 3 outputs; found labels from 0 to 3"),
    (np.array([0.5, 1.0]), "sparse_categorical_crossentropy", (3,), "train_data: y must hold integer class labels"),
    (np.zeros((2, 3)), "sparse_categorical_crossentropy", (3,),
     "train_data: y for sparse_categorical_crossentropy on model outputs of shape (batch, 3) must have shape (batch,)"),
    (np.zeros(2), "categorical_crossentropy", (3,), "train_data: y for categorical_crossentropy"),
    (np.zeros((2, 4)), "mse", (2,), "train_data: y for mse on model outputs of shape (batch, 2) must have shape"),
    (np.array(["a", "b"]), "mse", (1,), "train_data: y must be numeric, got dtype <U1"),
    (np.zeros(3), "mse", (1,), "train_data: x has 2 samples but y has 3"),
])
def test_bad_labels_are_data_errors_naming_the_problem(y, loss, out, message):
    with pytest.raises(DataError) as info:
        prepare_labels(y, loss, out, 2)
    assert str(info.value).startswith(message)
