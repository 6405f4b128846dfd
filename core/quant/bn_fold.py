"""Batch-norm folding: ``conv -> batchnorm`` becomes one conv with a scaled kernel and a new bias.

Inference-mode batch norm is an affine map per channel, ``y = gamma * (x - mean) / sqrt(var + eps) +
beta``, so it folds exactly into the conv/dense before it. Quantizing after folding is what the
deployed model runs (onnxruntime folds it too), and it leaves one weight tensor per layer to
quantize instead of a float affine op between two quantized tensors.
"""

from __future__ import annotations

import numpy as np

from slimkit.adapter import LayerInfo, ModelAdapter
from slimkit.graph import LayerGraph
from slimkit.quant.plan import consumers

_FOLDABLE = ("conv", "depthwise_conv", "dense")


def foldable_pairs(graph: LayerGraph, layers: dict[str, LayerInfo]) -> list[tuple[str, str]]:
    """``(layer, batchnorm)`` pairs where the batch norm is the only reader of a linear layer."""
    readers = consumers(graph)
    pairs = []
    for node in graph.nodes:
        if node.op != "batchnorm" or len(node.inputs) != 1 or node.layer is None:
            continue
        prev = graph.by_name[node.inputs[0]]
        info = layers.get(prev.layer or "")
        # a grouped convolution is opaque to channel analysis but still its layer's only node
        linear = info is not None and info.kind in _FOLDABLE and prev.op in (*_FOLDABLE, "opaque")
        if not linear or prev.layer is None or len(readers[prev.name]) != 1:
            continue
        if info is None or info.activation != "linear" or layers[node.layer].eps is None:
            continue  # an activation between the two (Keras' fused activation) blocks folding
        pairs.append((prev.layer, node.layer))
    return pairs


def folded_weights(layer: LayerInfo, weights: dict[str, np.ndarray], bn: LayerInfo,
                   bn_weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The layer's kernel and bias with the batch norm folded in (native layout).

    The per-channel factor and the bias are computed in float64; the kernel is scaled in float32 by the
    factor rounded to float32 (within an ulp or two of scaling in float64; torch.nn.utils.fusion folds
    in float32 too), which spares two float64 copies of every kernel (0.24 -> 0.07 s on a ResNet50)."""
    kernel = np.asarray(weights["kernel"])
    if kernel.dtype != np.float32:
        kernel = kernel.astype(np.float32)
    out = kernel.shape[layer.out_axis]
    mean = bn_weights["mean"].astype(np.float64)
    gamma = bn_weights.get("gamma", np.ones_like(mean)).astype(np.float64)
    beta = bn_weights.get("beta", np.zeros_like(mean)).astype(np.float64)
    factor = gamma / np.sqrt(bn_weights["var"].astype(np.float64) + float(bn.eps or 0.0))
    if factor.shape != (out,):
        raise ValueError(f"batch norm {bn.name!r} has {factor.shape[0]} channels, {layer.name!r} outputs {out}")
    shape = [1] * kernel.ndim
    shape[layer.out_axis] = out
    bias = weights.get("bias", np.zeros(out)).astype(np.float64)
    return {"kernel": kernel * factor.astype(np.float32).reshape(shape),
            "bias": ((bias - mean) * factor + beta).astype(np.float32)}


def fold_batchnorm(adapter: ModelAdapter, sample: np.ndarray | None) -> tuple[ModelAdapter, list[tuple[str, str]]]:
    """An adapter over a copy with every foldable batch norm folded; the input is not modified.

    Returns:
        The new adapter (``adapter`` itself when nothing folds) and the folded ``(layer, bn)`` pairs.
    """
    infos = {info.name: info for info in adapter.layers()}
    pairs = foldable_pairs(adapter.graph(sample), infos)
    if not pairs:
        return adapter, []
    weights = {layer: folded_weights(infos[layer], adapter.read_weights(layer), infos[bn], adapter.read_weights(bn))
               for layer, bn in pairs}
    # the folded arrays are made here and dropped after: the new model may hold them as they are
    return adapter.shrink(weights, drop=tuple(bn for _, bn in pairs), adopt=True), pairs
