"""Graph clean-up before Q/DQ insertion, as onnxruntime's ``quant_pre_process`` prepares a model.

Zero padding folded into convolutions: Keras ``ZeroPadding2D`` (MobileNetV2's strided blocks) exports as
``Pad -> Conv``. Quantized, the Pad sits between two quantized tensors; onnxruntime has no integer Pad
there and would run ``DQ -> Pad -> Q`` in float between two integer convolutions. The Conv pads with
zeros itself (QLinearConv with the input's zero point, which stands for 0), so the Pad's amounts move
into the Conv's ``pads`` and the Pad goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx


def fold_zero_pads(model: "onnx.ModelProto") -> int:
    """Folds every constant zero ``Pad`` whose only readers are convolutions into them, in place.

    A Pad qualifies when its mode is ``constant`` with value 0, its amounts are constant, non-negative
    and zero on the batch and channel axes, and every reader is a Conv that reads it as its data input
    with explicit (``NOTSET``) padding.

    Returns:
        The number of Pad nodes removed.
    """
    from onnx import helper, numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                consts[node.output[0]] = numpy_helper.to_array(value.t)
    readers: dict[str, list["onnx.NodeProto"]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    removed = []
    for pad in model.graph.node:
        amounts = _zero_pad_amounts(pad, consts)
        if amounts is None or pad.output[0] in outputs:
            continue
        convs = readers.get(pad.output[0], [])
        if not convs or not all(_pads_itself(conv, pad.output[0]) for conv in convs):
            continue
        rank = len(amounts) // 2
        begin, end = amounts[2:rank], amounts[rank + 2:]
        for conv in convs:
            own = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0] * (2 * (rank - 2)))
            total = [a + b for a, b in zip(own, list(begin) + list(end))]
            for attr in [a for a in conv.attribute if a.name == "pads"]:
                conv.attribute.remove(attr)
            conv.attribute.append(helper.make_attribute("pads", total))
            conv.input[0] = pad.input[0]
        removed.append(pad)
    for pad in removed:
        model.graph.node.remove(pad)
    return len(removed)


def _zero_pad_amounts(node: "onnx.NodeProto", consts: dict[str, np.ndarray]) -> list[int] | None:
    """The pad amounts of a constant-zero Pad that pads only spatial axes of an N, C, ... tensor; else None."""
    if node.op_type != "Pad" or len(node.input) < 2:
        return None
    mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
    if mode != "constant" or (len(node.input) > 3 and node.input[3]):  # explicit axes: leave it
        return None
    if len(node.input) > 2 and node.input[2]:
        value = consts.get(node.input[2])
        if value is None or np.any(value != 0):
            return None
    pads = consts.get(node.input[1])
    if pads is None or pads.ndim != 1 or pads.size % 2 or pads.size < 6:
        return None
    amounts = [int(v) for v in pads]
    rank = len(amounts) // 2
    if min(amounts) < 0 or any(amounts[i] or amounts[rank + i] for i in (0, 1)):
        return None
    return amounts


def _pads_itself(node: "onnx.NodeProto", tensor: str) -> bool:
    """``node`` is a Conv reading ``tensor`` as its data input only, with explicit padding."""
    if node.op_type != "Conv" or node.input[0] != tensor or tensor in node.input[1:]:
        return False
    auto = next((a.s.decode() for a in node.attribute if a.name == "auto_pad"), "NOTSET")
    return auto == "NOTSET"
