"""Ops left float between quantized tensors, found in onnxruntime's optimized graph."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from slimkit.deploy.inspect import float_between_quantized, optimized_model


def qdq_model():
    """x -> Q -> DQ -> Pad (reflect) -> Q -> DQ -> Conv (int8 weight) -> Q -> DQ -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.asarray(0.05, np.float32), "s"),
             numpy_helper.from_array(np.asarray(128, np.uint8), "zp"),
             numpy_helper.from_array(np.asarray(0.01, np.float32), "ws"),
             numpy_helper.from_array(np.asarray(0, np.int8), "wzp"),
             numpy_helper.from_array(rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8), "wq"),
             numpy_helper.from_array(np.asarray([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("Pad", ["xd", "pads"], ["p"], mode="reflect", name="the_pad"),
             helper.make_node("QuantizeLinear", ["p", "s", "zp"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "s", "zp"], ["pd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["w"]),
             helper.make_node("Conv", ["pd", "w"], ["c"], name="the_conv"),
             helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_float_op_is_named_with_why_and_the_fused_conv_is_not():
    model = qdq_model()
    raw = float_between_quantized(model.graph)  # in the QDQ file itself every op sits between Q/DQ pairs
    assert [r.split(" ")[:2] for r in raw] == [["Pad", "(the_pad):"], ["Conv", "(the_conv):"]]
    assert "runs Pad in float" in raw[0]
    optimized = optimized_model(model).graph
    assert "QLinearConv" in {n.op_type for n in optimized.node}  # onnxruntime fused the conv ...
    (left,) = float_between_quantized(optimized)  # ... and has no integer reflect Pad
    assert left.startswith("Pad (the_pad): ")
