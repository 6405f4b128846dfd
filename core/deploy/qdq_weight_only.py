"""Weight-only int8 in the ONNX file: float weights that sit on a symmetric int8 grid become int8
initializers with a DequantizeLinear (per tensor), in the main graph and in control-flow bodies.

slimkit snaps the matrices of layers that onnxruntime runs in float (recurrent, attention projections
without an op of their own, embeddings; :mod:`slimkit.quant.weight_only`) onto such a grid in the
framework model. Found here by their values, whatever layout the exporter gave them (transposed, gate
blocks reordered, split), they come back bit for bit: ``q * scale`` in float32. A tensor is on a
grid when every value is an integer multiple of ``max|w| / k`` for an integer ``k <= 127``; float
weights nobody snapped are not, and stay as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from slimkit.quant.weight_only import QMAX

if TYPE_CHECKING:
    import onnx

MIN_SIZE = 16  # smaller tensors (scalars, shapes, norms of a few channels) are not worth a node
_ON_GRID = 1e-3  # max distance of w / scale from an integer


def grid_scale(w: np.ndarray) -> float | None:
    """The int8 step ``w`` sits on, or None.

    A layer's matrices share one grid (:func:`slimkit.quant.weight_only.snap_weight_only`), and an exporter
    may split them (gate blocks, query/key/value), so a tensor's own largest magnitude is ``k`` steps for
    some integer ``k <= 127``: each ``max|w| / k`` is tried, on a few values first.
    """
    flat = w.astype(np.float64).ravel()
    peak = float(np.max(np.abs(flat))) if flat.size else 0.0
    if peak == 0.0 or not np.all(np.isfinite(flat)):
        return None
    probe = flat[:256]
    for k in range(QMAX, 0, -1):
        scale = float(np.float32(peak / k))
        for values in (probe, flat):
            r = values / scale
            if np.max(np.abs(r - np.round(r))) > _ON_GRID:
                break
        else:
            return scale
    return None


def store_weight_only(model: "onnx.ModelProto") -> list[str]:
    """Rewrites on-grid float32 initializers of ``model`` (in place) as int8 + DequantizeLinear.

    Returns:
        The names of the rewritten initializers.
    """
    return _graph(model.graph)


def _graph(graph: "onnx.GraphProto") -> list[str]:
    from onnx import TensorProto, helper, numpy_helper

    done: list[str] = []
    for node in graph.node:  # control-flow bodies (Loop, Scan, If) first; a non-graph attribute's g is empty
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs]:
                done += _graph(sub)
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    keep, new_nodes = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims, dtype=np.int64) < MIN_SIZE or \
                readers.get(init.name, set()) & {"QuantizeLinear", "DequantizeLinear"}:
            keep.append(init)
            continue
        w = numpy_helper.to_array(init)
        scale = grid_scale(w)
        if scale is None:
            keep.append(init)
            continue
        q = np.clip(np.round(w.astype(np.float64) / scale), -QMAX, QMAX).astype(np.int8)
        keep += [numpy_helper.from_array(q, f"{init.name}_int8"),
                 numpy_helper.from_array(np.array(scale, np.float32), f"{init.name}_wscale"),
                 numpy_helper.from_array(np.array(0, np.int8), f"{init.name}_wzero")]
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{init.name}_int8", f"{init.name}_wscale",
                                                               f"{init.name}_wzero"], [init.name],
                                          name=f"{init.name}_weight_only"))
        done.append(init.name)
    if new_nodes:
        del graph.initializer[:]
        graph.initializer.extend(keep)
        nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend(new_nodes + nodes)  # DequantizeLinear reads initializers only: first is in order
    return done

