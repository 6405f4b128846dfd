"""Measurements of exported ONNX files: onnxruntime latency and multiply-accumulates per sample.

MACs are counted on the ONNX graph after shape inference, so a Keras and a PyTorch export of the
same network are counted the same way (Conv, ConvTranspose-free graphs, Gemm and MatMul).
"""

from __future__ import annotations

import time

from typing import Any

import numpy as np

from slimkit.deploy.runtime import feed as runtime_feed



def latency_ms(path: str, x: Any, repeats: int = 30, warmup: int = 5, threads: int = 0) -> float:
    """Median wall time of one onnxruntime run on ``x``, in milliseconds."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = runtime_feed(sess.get_inputs(), x, path)
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def macs(path: str, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass at ``batch`` (Conv, Gemm and MatMul nodes)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(path)
    graph_input = model.graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    if dims and not dims[0].HasField("dim_value"):
        dims[0].dim_value = batch  # fix the dynamic batch so shapes infer to numbers
    model = shape_inference.infer_shapes(model)
    inits = {init.name for init in model.graph.initializer}
    shapes: dict[str, list[int | None]] = {}
    for value in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None
                              for d in value.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in model.graph.node:
        out = _batched(shapes.get(node.output[0]), batch)
        if out is None:
            continue
        if node.op_type == "Conv":
            w = shapes[node.input[1]]  # (out, in/groups, *k)
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            k = a[-1] if a and a[-1] else None
            if k is None and len(node.input) > 1 and node.input[1] in inits:
                # a reshape before it left the input's width symbolic (tf2onnx): the weight gives it
                w = shapes[node.input[1]]
                transposed = any(att.name == "transB" and att.i for att in node.attribute)
                k = w[-1] if transposed else w[0]
            if k:
                total += int(np.prod(out)) * int(k)
    return total


def _batched(shape: list[int | None] | None, batch: int) -> list[int] | None:
    """``shape`` with an unknown leading axis read as the batch (exporters name it afresh after a reshape);
    None when it is unknown or another axis is."""
    if not shape:
        return None
    dims = [batch if (i == 0 and d is None) else d for i, d in enumerate(shape)]
    return None if any(d is None for d in dims) else [int(d) for d in dims]

