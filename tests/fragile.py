"""A model made deliberately fragile to int8, computing the same function in float.

One output channel of ``layer`` is multiplied by ``factor`` and the matching input channel of ``next_layer``
divided by it. What lies between the two must be positively homogeneous (ReLU, pooling, reshapes; no batch
norm, no bias added), so the float model computes the same function. But the per-tensor activation range of
the tensor between them (``layer``'s output site, ``next_layer``'s input site) is then dominated by that one
channel, and every other channel rounds to zero in int8: quantizing either layer destroys the model. Quantizing
``next_layer`` alone also loses the scaled channel's weights (per output channel, a column ``factor`` times
smaller than the rest rounds to zero), so it is the worse of the two: sensitivity ranks ``next_layer`` first,
``layer`` second.

On the digits CNN twins (``tests/twins.py``, ``cnn``): ``make_fragile(model, "pw", "fc1")`` (pw -> ReLU ->
global average pool -> fc1) or ``make_fragile(model, "fc1", "logits")``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.pruning.masks import from_canonical, to_canonical
from slimkit.registry import adapter_class


def _info(adapter: Any, name: str) -> Any:
    for info in adapter.layers():
        if info.name == name:
            return info
    raise KeyError(f"no layer named {name!r}; layers: {[i.name for i in adapter.layers()]}")


def make_fragile(model: Any, layer: str, next_layer: str, factor: float = 1e4, channel: int | None = None) -> Any:
    """A NEW model of ``model``'s framework, equal in float, that int8 destroys.

    Args:
        model: a model slimkit has an adapter for (not modified).
        layer: a conv or dense layer; its output channel ``channel`` is multiplied by ``factor``.
        next_layer: the conv or dense layer reading it (through positively homogeneous ops only); its input
            channel ``channel`` is divided by ``factor``.
        factor: the scale (> 0).
        channel: which channel; default the one whose outgoing weights in ``next_layer`` are largest (so that
            losing it matters).

    Returns:
        The new model (``copy_of`` through slimkit's adapter, weights set through ``set_weights``).
    """
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}")
    work = adapter_class(model).copy_of(model)
    first, second = _info(work, layer), _info(work, next_layer)
    w1, w2 = work.get_weights(layer), work.get_weights(next_layer)
    k1 = to_canonical(w1["kernel"], first.kernel_perm).astype(np.float64)  # (out, in, ...)
    k2 = to_canonical(w2["kernel"], second.kernel_perm).astype(np.float64)
    if k2.shape[1] != k1.shape[0]:
        raise ValueError(f"{next_layer!r} reads {k2.shape[1]} channels, {layer!r} writes {k1.shape[0]}")
    if channel is None:
        channel = int(np.argmax(np.abs(k2).sum(axis=tuple(i for i in range(k2.ndim) if i != 1))))
    k1[channel] *= factor
    k2[:, channel] /= factor
    out1 = {"kernel": from_canonical(k1.astype(np.float32), first.kernel_perm)}
    if "bias" in w1:
        bias = w1["bias"].astype(np.float64)
        bias[channel] *= factor
        out1["bias"] = bias.astype(np.float32)
    work.set_weights(layer, out1)
    work.set_weights(next_layer, {"kernel": from_canonical(k2.astype(np.float32), second.kernel_perm)})
    return work.strip()


def digits_images(framework: str, n: int = 256, start: int = 0) -> np.ndarray:
    """``n`` sklearn digits as 8x8 images in [0, 1], in ``framework``'s layout (the CNN twins' inputs)."""
    from sklearn.datasets import load_digits

    from frameworks import BY_NAME

    x = (load_digits().data[start:start + n] / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    return x if BY_NAME[framework].channels_last else x.transpose(0, 3, 1, 2).copy()


def fidelity_data(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, the float model's outputs)``: eval data whose metric is the MSE against the float model, a
    label-free fidelity metric (random-weight twins predict one class for every digit, so accuracy would
    say nothing)."""
    from slimkit.registry import adapter_for

    return x, adapter_for(model).predict(x)
