"""Weight-only int8: layers whose ops onnxruntime runs in float get their weight matrices stored as int8.

Recurrent layers (LSTM, GRU), attention projections without an op of their own (PyTorch's fused
``in_proj``, Keras' EinsumDense projections), embeddings and layers whose weights are tied to another
layer keep running in float, but a float32 matrix costs four bytes a weight. Each matrix is snapped,
in the framework model, to a symmetric per-tensor int8 grid (``scale = max|w| / 127``); the quantized
ONNX export then finds those initializers on their grid and stores them as int8 with a
DequantizeLinear (:mod:`slimkit.deploy.qdq_weight_only`), which gives back exactly the snapped values:
the simulated model and onnxruntime compute the same thing, at a quarter of the bytes.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import numpy as np

from slimkit.adapter import LayerInfo, ModelAdapter
from slimkit.recipe import LayerSelector

#: Kinds whose matrices are stored weight-only (their ops have no integer kernel in onnxruntime here).
WEIGHT_ONLY_KINDS = ("recurrent", "attention", "embedding")
QMAX = 127


def snap(array: np.ndarray) -> np.ndarray:
    """``array`` on the symmetric per-tensor int8 grid: round(w / s) * s with s = max|w| / 127, float32."""
    w = np.asarray(array, dtype=np.float32)
    peak = float(np.max(np.abs(w))) if w.size else 0.0
    if peak == 0.0:
        return w.copy()
    scale = np.float32(peak / QMAX)
    return (np.clip(np.round(w / scale), -QMAX, QMAX) * scale).astype(np.float32)


def weight_only_layers(layers: list[LayerInfo], selector: LayerSelector, quantized: set[str],
                       extra: tuple[str, ...] = ()) -> list[LayerInfo]:
    """The selector's layers of :data:`WEIGHT_ONLY_KINDS` (or named in ``extra``: selected layers with no
    op of their own), not quantized with integer kernels, that hold a matrix."""
    out = []
    for layer in layers:
        if layer.name in quantized or not any(fnmatchcase(layer.name, g) for g in selector.names):
            continue
        if any(fnmatchcase(layer.name, g) for g in selector.exclude):
            continue
        wanted = layer.name in extra or (layer.kind in WEIGHT_ONLY_KINDS and (
            selector.kinds is None or any(layer.matches_kind(k) for k in selector.kinds)))
        if wanted and _matrices(layer):
            out.append(layer)
    return out


def _matrices(layer: LayerInfo) -> list[str]:
    names = list(layer.matrices)
    if "kernel" in layer.shapes and "kernel" not in names and len(layer.shapes["kernel"]) >= 2:
        names.insert(0, "kernel")
    return names


def snap_weight_only(adapter: ModelAdapter, layers: list[LayerInfo]) -> list[str]:
    """Snaps every matrix of ``layers`` to its int8 grid in the adapter's model; returns the layer names."""
    for layer in layers:
        weights = adapter.get_weights(layer.name)
        adapter.set_weights(layer.name, {name: snap(weights[name]) for name in _matrices(layer) if name in weights})
    return [layer.name for layer in layers]
