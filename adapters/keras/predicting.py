"""Inference outputs of a Keras model as float32 numpy.

``model.predict`` traces a predict function per model; a last batch of another size would trace it
again, so it is filled up with repeats of the last input (seconds saved on a large fake-quant model).
Eager calls would skip the tracing (about half a millisecond per op: 2.6 s for a fake-quantized
MobileNetV2 0.35) but leave TensorFlow holding memory after them (+0.56 GB resident after 16 eager
ResNet50 inputs at batch 4, +0.1 GB after ``predict``), which every later step of an export then
stacks on; so slimkit predicts through the traced function. A model running under a multi-worker
strategy predicts in this process alone (see ``distributed.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.data import map_inputs, n_samples

from . import data as kdata
from . import distributed as kdist
from .ops import no_gradients
from .quiet import quiet


def predict(model: Any, x: Any, batch: int, plain: dict[int, Any]) -> np.ndarray:
    """``model``'s inference-mode outputs on ``x`` (checked inputs) in batches of ``batch``; ``plain``
    keeps the traced functions of models predicted outside their strategy."""
    n = n_samples(x)
    distributed = kdist.runs_distributed(model)
    short = -n % batch if n > batch else 0
    if short:
        x = map_inputs(x, lambda a: np.concatenate([a, np.repeat(a[-1:], short, axis=0)]))
    with quiet(), no_gradients():  # retracing notices: slimkit predicts with many models in turn
        if distributed:  # each process alone: no replicas, no collective
            out = kdist.plain_predict(model, plain, x, batch, n)
        else:
            out = model.predict(kdata.keras_inputs(x), batch_size=batch, verbose=0)
    kdata.single_output(model, out)
    return np.asarray(out, dtype=np.float32)[:n]
