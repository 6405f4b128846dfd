"""Measurements of exported ONNX files: onnxruntime latency and multiply-accumulates per sample.

MACs are counted on the ONNX graph after shape inference, so a Keras and a PyTorch export of the
same network are counted the same way (Conv, ConvTranspose-free graphs, Gemm and MatMul).
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

import numpy as np

from slimkit.deploy.runtime import feed as runtime_feed



def latency_ms(path: str, x: Any, repeats: int = 30, warmup: int = 5, threads: int = 0) -> float:
    """Median wall time of one onnxruntime run on ``x``, in milliseconds."""
    return float(np.median(latencies_ms(path, x, repeats, warmup, threads)))


def session(path: str, threads: int = 0) -> Any:
    """An onnxruntime CPU session for ``path`` with ``threads`` intra-op threads (0: onnxruntime's choice)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def latencies_ms(path: str, x: Any, repeats: int = 30, warmup: int = 5, threads: int = 0,
                 sess: Any = None) -> np.ndarray:
    """Wall time of each of ``repeats`` onnxruntime runs on ``x`` (after ``warmup`` runs), in milliseconds."""
    sess = sess if sess is not None else session(path, threads)
    feed = runtime_feed(sess.get_inputs(), x, path)
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1e3


def macs(path: str, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass at ``batch`` (Conv, Gemm and MatMul nodes)."""
    return sum(count for _, _, _, count in node_macs(path, batch))


def node_macs(path: str, batch: int = 1) -> list[tuple[str, str, str | None, int]]:
    """``(node name, op type, name of its second input (the weight), MACs)`` of every Conv, Gemm and MatMul
    node, in graph order, at ``batch`` (the dynamic batch axis of the first input fixed to it)."""
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
    rows = []
    for node in model.graph.node:
        out = _batched(shapes.get(node.output[0]), batch)
        if out is None:
            continue
        count = 0
        if node.op_type == "Conv":
            w = shapes[node.input[1]]  # (out, in/groups, *k)
            count = int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            k = a[-1] if a and a[-1] else None
            if k is None and len(node.input) > 1 and node.input[1] in inits:
                # a reshape before it left the input's width symbolic (tf2onnx): the weight gives it
                w = shapes[node.input[1]]
                transposed = any(att.name == "transB" and att.i for att in node.attribute)
                k = w[-1] if transposed else w[0]
            if k:
                count = int(np.prod(out)) * int(k)
        else:
            continue
        rows.append((node.name or node.output[0], node.op_type, node.input[1] if len(node.input) > 1 else None, count))
    return rows


def _batched(shape: list[int | None] | None, batch: int) -> list[int] | None:
    """``shape`` with an unknown leading axis read as the batch (exporters name it afresh after a reshape);
    None when it is unknown or another axis is."""
    if not shape:
        return None
    dims = [batch if (i == 0 and d is None) else d for i, d in enumerate(shape)]
    return None if any(d is None for d in dims) else [int(d) for d in dims]


def kernel_owners(path: str, kernels: dict[str, np.ndarray]) -> dict[str, str]:
    """Initializer name -> layer, for the initializers of ``path`` holding a layer's kernel values in any
    layout (compared as multisets, :class:`slimkit.deploy.mapping._Signature`); layers whose kernels
    are identical to another's are left out (they cannot be told apart by value)."""
    import onnx
    from onnx import numpy_helper

    from slimkit.deploy.mapping import _Signature

    signatures: dict[Any, list[str]] = {}
    for layer, kernel in kernels.items():
        signatures.setdefault(_Signature.of(kernel), []).append(layer)
    sizes = {sig.size for sig in signatures}
    out = {}
    for init in onnx.load(path).graph.initializer:
        if int(np.prod(init.dims)) not in sizes:
            continue
        sig = _Signature.of(numpy_helper.to_array(init))
        for known, layers in signatures.items():
            if len(layers) == 1 and known.same(sig):
                out[init.name] = layers[0]
                break
    return out


def macs_by_layer(path: str, layers: list[str], kernels: Callable[[], dict[str, np.ndarray]],
                  batch: int = 1) -> tuple[dict[str, int], int]:
    """MACs per sample of each layer in the ONNX file ``path`` and the MACs no layer claims.

    A Conv/Gemm/MatMul node belongs to the layer its weight's name names, else its own name (tf2onnx
    names a conv whose batch norm it folded after the batch norm; both exporters name tensors and nodes
    after layer paths), else to the layer whose kernel its weight holds (``kernels()``: layer -> kernel,
    asked only when some node is named after no layer).
    """
    from slimkit.deploy.mapping import names_layer

    nodes = node_macs(path, batch)
    # the most specific path a name names is its layer
    ordered = sorted(layers, key=lambda n: (len(re.split(r"[./]", n)), len(n)), reverse=True)
    named = {name: _named(weight, ordered, names_layer) or _named(name, ordered, names_layer)
             for name, _op, weight, _count in nodes}
    owners = kernel_owners(path, kernels()) if any(layer is None for layer in named.values()) else {}
    counts: dict[str, int] = {}
    other = 0
    for name, _op, weight, count in nodes:
        layer = named[name] or owners.get(weight or "")
        if layer is None:
            other += count
        else:
            counts[layer] = counts.get(layer, 0) + count
    return counts, other


def _named(onnx_name: str | None, layers: list[str], names_layer: Callable[[str, str], bool]) -> str | None:
    """The layer an ONNX node or tensor name names: its path's parts in a row (``names_layer``), else in
    order with gaps (torch.onnx scopes repeat parents: ``/layer1/layer1.0/downsample/downsample.0/Conv``
    names ``layer1.0.downsample.0``); ``layers`` most specific first."""
    if not onnx_name:
        return None
    found = next((n for n in layers if names_layer(onnx_name, n)), None)
    if found is not None:
        return found
    have = [p for p in re.split(r"[./:]", onnx_name) if p]
    for layer in layers:
        want = [p for p in re.split(r"[./]", layer) if p]
        parts = iter(have)
        if want and all(any(h == w for h in parts) for w in want):
            return layer
    return None
