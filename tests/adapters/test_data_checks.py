"""Data checks on real frameworks: a fine-tune that diverges stops with the layer named instead of
returning NaN weights, and a tf.data pipeline's first batch is checked as numpy labels are."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from frameworks import building
from twins import BUILDERS, sample_input

FRAMEWORKS = building("twins")

#: mse towards targets of 1e30 with plain SGD at the largest learning rate the recipe allows: finite
#: data (so the up-front check passes) on which the weights overflow within the first epoch.
DIVERGING = {"fine_tune": {"epochs": 1, "batch_size": 4, "loss": "mse", "optimizer": "sgd", "learning_rate": 10.0},
             "stages": [{"prune": {"sparsity": 0.5}}]}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_diverging_fine_tune_stops_naming_the_layer(framework):
    x, y = sample_input("mlp", framework, n=16), np.full((16, 10), 1e30, np.float32)
    with pytest.raises(slimkit.DataError, match=r"^train_data: fine-tuning produced non-finite weights after epoch 1 "
                                                r"\(mean loss .*\): layer '.*(fc1|logits)' (kernel|bias|weight) holds "
                                                r"\d+ NaN or infinite value\(s\).*fine_tune.learning_rate"):
        slimkit.compress(BUILDERS["mlp"][framework](), DIVERGING, train_data=(x, y), verbose=False)


def _dataset(x: np.ndarray, y: np.ndarray):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


TUNE = {"fine_tune": {"epochs": 1, "batch_size": 4}, "stages": [{"prune": {"sparsity": 0.5}}]}


@pytest.mark.parametrize("labels", [np.array([0, 1, 2, 17, 4, 5, 6, 7]), np.array([[0], [1], [2], [17]] * 2)],
                         ids=["ids", "ids-with-trailing-axis"])
def test_tf_data_class_ids_out_of_range_are_a_data_error(labels):
    x = sample_input("mlp", "keras", n=8)
    with pytest.raises(slimkit.DataError, match=r"train_data \(first tf.data batch\): y class labels must lie in "
                                                r"\[0, 10\).*17"):
        slimkit.compress(BUILDERS["mlp"]["keras"](), TUNE, train_data=_dataset(x, labels), verbose=False)


def test_tf_data_with_nan_in_the_first_batch_is_refused():
    x = sample_input("mlp", "keras", n=8)
    x[1, 3] = np.nan
    with pytest.raises(slimkit.DataError, match=r"train_data \(first tf.data batch\) x: holds 1 NaN value\(s\) \(of 256\)"):
        slimkit.compress(BUILDERS["mlp"]["keras"](), TUNE, train_data=_dataset(x, np.arange(8)), verbose=False)


def test_tf_data_class_ids_out_of_range_after_the_first_batch_are_a_data_error():
    x = sample_input("mlp", "keras", n=8)
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 17])  # the first batch of 4 is fine, the second is not
    with pytest.raises(slimkit.DataError, match=r"train_data: TensorFlow could not train on a batch after the first"
                                                r".*sparse_categorical_crossentropy"):
        slimkit.compress(BUILDERS["mlp"]["keras"](), TUNE, train_data=_dataset(x, labels), verbose=False)
