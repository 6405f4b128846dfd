"""Weight-only int8: layers whose ops onnxruntime runs in float get their weight matrices stored as int8.

Recurrent layers (LSTM, GRU), attention projections without an op of their own (PyTorch's fused
``in_proj``, Keras' EinsumDense projections), embeddings and layers whose weights are tied to another
layer keep running in float, but a float32 matrix costs four bytes a weight. A layer's matrices are
snapped, in the framework model, to one symmetric int8 grid (``scale = max|w| / 127`` over the layer);
the quantized ONNX export then finds those initializers on their grid and stores them as int8 with a
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


def snap(array: np.ndarray, peak: float | None = None) -> np.ndarray:
    """``array`` on a symmetric int8 grid: round(w / s) * s with s = peak / 127 (peak: max|w| unless given,
    the largest magnitude of all the matrices that share the grid), float32."""
    w = np.asarray(array, dtype=np.float32)
    peak = (float(np.max(np.abs(w))) if w.size else 0.0) if peak is None else peak
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
    """Snaps the matrices of each of ``layers`` to one int8 grid per layer in the adapter's model; returns
    the layer names.

    One grid per layer, not per matrix: frameworks split a layer's weights differently (Keras' separate
    query/key/value kernels are PyTorch's one fused ``in_proj_weight``), and a shared grid gives twins the
    same values whatever the split.
    """
    for layer in layers:
        weights = adapter.get_weights(layer.name)
        names = [name for name in _matrices(layer) if name in weights and weights[name].size]
        if not names:
            continue
        peak = max(float(np.max(np.abs(weights[name]))) for name in names)
        adapter.set_weights(layer.name, {name: snap(weights[name], peak) for name in names})
    return [layer.name for layer in layers]
