"""Inference outputs of a Keras model as float32 numpy, by the cheapest path for the input count.

``model.predict`` traces a predict function per model (a ``tf.function`` over every layer's call):
graph building costs about half a millisecond per op, seconds for a fake-quantized model whose
quantizers add thousands of ops (MobileNetV2 0.35: 2.6 s of tracing for a 0.3 s run; ResNet50 2 s).
slimkit's own probes run each new model once on a few inputs (the quantize stage's fidelity check,
each fallback trial, export verification), so up to :data:`EAGER_SAMPLES` inputs the model is
called eagerly, batch by batch, and nothing is traced; larger inputs (evaluation sets) amortise the
trace. A model running under a multi-worker strategy predicts in this process alone (see
``distributed.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.data import map_inputs, n_samples, take

from . import data as kdata
from . import distributed as kdist
from .quiet import quiet

#: Up to this many inputs, ``predict`` calls the model eagerly instead of tracing a predict function.
EAGER_SAMPLES = 64


def predict(model: Any, x: Any, batch: int, plain: dict[int, Any]) -> np.ndarray:
    """``model``'s inference-mode outputs on ``x`` (checked inputs) in batches of ``batch``; ``plain``
    keeps the traced functions of models predicted outside their strategy."""
    n = n_samples(x)
    distributed = kdist.runs_distributed(model)
    if n <= EAGER_SAMPLES and not distributed:
        return _eagerly(model, x, n, batch)
    # A last batch of another size would trace the predict function again (seconds on a large
    # fake-quant model): it is filled up with repeats of the last input, and their outputs dropped.
    short = -n % batch if n > batch else 0
    if short:
        x = map_inputs(x, lambda a: np.concatenate([a, np.repeat(a[-1:], short, axis=0)]))
    with quiet():  # retracing notices: slimkit predicts with many models in turn
        if distributed:  # each process alone: no replicas, no collective
            out = kdist.plain_predict(model, plain, x, batch, n)
        else:
            out = model.predict(kdata.keras_inputs(x), batch_size=batch, verbose=0)
    kdata.single_output(model, out)
    return np.asarray(out, dtype=np.float32)[:n]


def _eagerly(model: Any, x: Any, n: int, batch: int) -> np.ndarray:
    outs = []
    for start in range(0, max(n, 1), batch):
        out = model(kdata.keras_inputs(take(x, slice(start, start + batch))), training=False)
        kdata.single_output(model, out)
        outs.append(np.asarray(out, dtype=np.float32))
    return np.concatenate(outs) if len(outs) > 1 else outs[0]
