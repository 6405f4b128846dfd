"""Zero Pads folded into the convolutions that read them (slimkit.deploy.cleanup), checked in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimkit.deploy.cleanup import fold_zero_pads


def pad_conv_model(pads, value=None, mode="constant", conv_pads=(1, 0, 1, 0), extra_reader=False):
    """x (1, 3, 8, 8) -> Pad -> Conv 3x3 (4 channels) [-> also Relu of the Pad's output]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.asarray(pads, np.int64), "pads"),
             numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")]
    pad_inputs = ["x", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), "value"))
        pad_inputs.append("value")
    nodes = [helper.make_node("Pad", pad_inputs, ["p"], mode=mode),
             helper.make_node("Conv", ["p", "w"], ["y"], pads=list(conv_pads))]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["p"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [None] * 4))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


X = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("pads, value", [([0, 0, 1, 2, 0, 0, 1, 0], None), ([0, 0, 0, 1, 0, 0, 1, 1], 0.0)])
def test_zero_pad_moves_into_the_conv(pads, value):
    model = pad_conv_model(pads, value)
    before = run(model, X)
    assert fold_zero_pads(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    conv = model.graph.node[0]
    assert conv.input[0] == "x"
    # the conv's own pads (1, 0 | 1, 0) plus the Pad's spatial amounts (begin h, w | end h, w)
    assert list(next(a.ints for a in conv.attribute if a.name == "pads")) == [
        1 + pads[2], 0 + pads[3], 1 + pads[6], 0 + pads[7]]
    np.testing.assert_allclose(run(model, X), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "value": 0.5},  # not zero
    {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "mode": "reflect"},
    {"pads": [0, 1, 1, 1, 0, 0, 1, 1]},  # pads the channel axis
    {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "extra_reader": True},  # a Relu reads the padded tensor too
])
def test_other_pads_stay(kwargs):
    model = pad_conv_model(**kwargs)
    before = model.SerializeToString()
    assert fold_zero_pads(model) == 0
    assert model.SerializeToString() == before
