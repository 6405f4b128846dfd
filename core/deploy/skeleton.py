"""An ONNX model without its weights, for the work that only needs the graph.

Probing every tensor of a float model (export's mapping) needs the tensors' types (shape inference)
and one onnxruntime session with every tensor exposed as an output. Done on the whole model, both copy
the weights: shape inference serializes and parses the model, the session is built from its serialized
bytes and copies the initializers again (on a ResNet50, 100 MB each time: 0.5 s of the export, and as
many bytes of memory). A skeleton keeps the graph and the small initializers (shapes, indices, scalars)
and turns each large one into a graph input of the same type and shape, which the session is fed from
the arrays at run time without a copy.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

#: Initializers of at least this many bytes leave the skeleton (weights); smaller ones (shape and index
#: constants, which shape inference and some kernels read as constants) stay in it.
FED_BYTES = 4096


def skeleton(model: "onnx.ModelProto") -> tuple["onnx.ModelProto", dict[str, np.ndarray]]:
    """``model`` without its large initializers, which become graph inputs, and those arrays by name.

    ``model`` is not modified. Initializers stored outside the model (external data not loaded) stay as
    they are.
    """
    from onnx import helper, numpy_helper

    import onnx

    graph = model.graph
    declared = {i.name for i in graph.input}
    fed: dict[str, np.ndarray] = {}
    kept, inputs = [], []
    for init in graph.initializer:
        # the size from the dims: reading raw_data copies it
        if init.data_location == onnx.TensorProto.DEFAULT and \
                math.prod(init.dims) * _itemsize(init.data_type) >= FED_BYTES:
            fed[init.name] = numpy_helper.to_array(init)
            if init.name not in declared:  # IR < 4 lists initializers among the inputs already
                inputs.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            kept.append(init)
    light = onnx.ModelProto()
    _copy_fields(model, light, skip=("graph",))
    _copy_fields(graph, light.graph, skip=("initializer",))
    light.graph.initializer.extend(kept)
    light.graph.input.extend(inputs)
    return light, fed


def _itemsize(data_type: int) -> int:
    """Bytes per element of an ONNX tensor type (1 where numpy has no such type: such tensors stay)."""
    from onnx import helper

    try:
        return int(np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize)
    except (KeyError, TypeError, ValueError):
        return 1


def _copy_fields(source: Any, dest: Any, skip: tuple[str, ...]) -> None:
    """Copies every set field of protobuf message ``source`` into ``dest`` except those named in ``skip``."""
    for field, value in source.ListFields():
        if field.name in skip:
            continue
        target = getattr(dest, field.name)
        if hasattr(value, "extend") and hasattr(target, "extend"):  # repeated
            target.extend(value)
        elif hasattr(value, "CopyFrom"):  # a message
            target.CopyFrom(value)
        else:
            setattr(dest, field.name, value)
