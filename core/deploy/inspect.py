"""What onnxruntime makes of a model: its optimized graph, the ops in it, whether every quantized layer
runs as an integer kernel, and which ops it still runs in float between quantized tensors."""

from __future__ import annotations

import collections
import os
import tempfile
from typing import TYPE_CHECKING

from slimkit.deploy.mapping import QdqMapping
from slimkit.deploy.runtime import optimizing_session
from slimkit.deploy.ops import WEIGHT_INTEGER_OPS
from slimkit.errors import ExportError

if TYPE_CHECKING:
    import onnx


def optimized_model(model: "str | os.PathLike[str] | onnx.ModelProto", level: str = "all") -> "onnx.ModelProto":
    """The graph onnxruntime (CPU) runs after its optimizations at ``level`` (``extended`` or ``all``)."""
    import onnx
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if level not in levels:
        raise ValueError(f"level must be one of {sorted(levels)}, got {level!r}")
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, onnx.ModelProto):
            src = os.path.join(tmp, "model.onnx")
            onnx.save(model, src)
        else:
            src = os.fspath(model)
        try:
            _, optimized = optimizing_session(src, tmp, levels[level])
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load the model: {exc}") from exc
        return onnx.load(optimized)


def fused_ops(model: "str | os.PathLike[str] | onnx.ModelProto", level: str = "all") -> collections.Counter:
    """Op types of onnxruntime's optimized graph (``level`` as in :func:`optimized_model`) and their counts."""
    return collections.Counter(n.op_type for n in optimized_model(model, level).graph.node)


def check_quantized(model: "str | os.PathLike[str] | onnx.ModelProto", mapping: QdqMapping,
                    level: str = "all") -> None:
    """Raises unless onnxruntime runs every quantized layer of ``mapping`` with an integer kernel.

    A layer counts as run in integer arithmetic when a node of :data:`WEIGHT_INTEGER_OPS` reads its integer
    weight initializer in the optimized graph.

    Raises:
        ExportError: listing each layer left to float, with the ops that read its weight instead.
    """
    if mapping.layers and not mapping.weights:
        raise ExportError("the mapping names no integer weights: pass the mapping insert_qdq returned")
    graph = optimized_model(model, level).graph
    readers: dict[str, list[str]] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node.op_type)
    bad = []
    for layer, weight in mapping.weights:
        ops = readers.get(weight, [])
        if not any(op in WEIGHT_INTEGER_OPS for op in ops):
            bad.append(f"{layer} (ONNX node {mapping.node(layer)!r}; its weight is read by "
                       f"{', '.join(sorted(set(ops))) or 'nothing'})")
    if bad:
        raise ExportError("onnxruntime did not turn these quantized layers into integer kernels: " + "; ".join(bad))


# Ops onnxruntime runs in float between two quantized tensors. An op that has an integer kernel for its
# quantized neighbours is fused (DequantizeLinear -> Conv -> QuantizeLinear becomes QLinearConv); one that
# has none stays as DequantizeLinear -> op -> QuantizeLinear and runs in float: a dequantize, the float op
# and a quantize per call. The report lists them, so a slow int8 model says where its float work is.
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def float_between_quantized(graph: "onnx.GraphProto") -> tuple[str, ...]:
    """``"op (node): why"`` for each node of an optimized graph whose data input is dequantized from an
    activation and whose output is quantized again.

    Args:
        graph: onnxruntime's optimized graph (:func:`slimkit.deploy.inspect.optimized_model`).
    """
    constants = {init.name for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    quantized_reads = {name for node in graph.node if node.op_type == "QuantizeLinear" for name in node.input[:1]}
    found = []
    for node in graph.node:
        if node.op_type in _QDQ:
            continue
        dequantized = [name for name in node.input
                       if name in producers and producers[name].op_type == "DequantizeLinear"
                       and producers[name].input[0] not in constants]  # an activation, not a stored weight
        if dequantized and any(out in quantized_reads for out in node.output):
            found.append(f"{node.op_type} ({node.name or node.output[0]}): onnxruntime fuses no integer kernel "
                         f"for it here, so it dequantizes, runs {node.op_type} in float and quantizes again")
    return tuple(found)
