"""Ops onnxruntime runs in float between two quantized tensors of an int8 model.

In onnxruntime's optimized graph, an op that has an integer kernel for its quantized neighbours is
fused (``DequantizeLinear -> Conv -> QuantizeLinear`` becomes ``QLinearConv``); one that has none
stays as ``DequantizeLinear -> op -> QuantizeLinear`` and runs in float: a dequantize, the float op and
a quantize per call. Listed in the report so a slow int8 model says where its float work is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

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
