"""Keras and PyTorch compute the same loss value for the same predictions and labels (labels in the
form core's ``prepare_labels`` gives both)."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.labels import prepare_labels
from slimkit.recipe import FineTune

CASES = [(loss, logits) for loss in ("sparse_categorical_crossentropy", "categorical_crossentropy",
                                     "binary_crossentropy") for logits in (True, False)] + [("mse", True)]


def _outputs_and_labels(loss, from_logits, shape):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=shape).astype(np.float32) * 3
    if not from_logits:  # probabilities, some saturated so that the clipping matters
        raw = np.exp(raw) / np.exp(raw).sum(-1, keepdims=True) if "categorical" in loss else 1 / (1 + np.exp(-raw))
        raw[0] = 0.0
        raw[0, ..., 0] = 1.0  # a saturated (one-hot) prediction: the clipping decides its loss
    classes = shape[-1]
    if loss == "sparse_categorical_crossentropy":
        y = rng.integers(0, classes, size=shape[:-1])
    elif loss == "categorical_crossentropy":
        y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, size=shape[:-1])]
    elif loss == "binary_crossentropy":
        y = rng.integers(0, 2, size=shape).astype(np.float32)
    else:
        y = rng.normal(size=shape).astype(np.float32)
    return raw.astype(np.float32), prepare_labels(y, loss, shape[1:], shape[0])


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 6)], ids=["per-sample", "per-position"])
@pytest.mark.parametrize("loss, from_logits", CASES, ids=[f"{l}-{'logits' if f else 'probs'}" for l, f in CASES])
def test_keras_and_torch_losses_agree(loss, from_logits, shape):
    import keras
    import torch

    from slimkit.adapters.keras.training import make_loss as keras_loss
    from slimkit.adapters.torch.training import make_loss as torch_loss

    settings = FineTune(loss=loss, from_logits=from_logits)
    out, y = _outputs_and_labels(loss, from_logits, shape)
    expected = float(keras_loss(keras, settings)(y, out))
    got = float(torch_loss(settings)[0](torch.tensor(out), torch.from_numpy(y)))
    assert got == pytest.approx(expected, rel=1e-5)
