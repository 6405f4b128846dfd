"""Static QDQ: int8 weights with int32 biases, Q/DQ pairs on the planned activation tensors and on the
grid-keeping ops between them (see :mod:`slimkit.deploy.qdq` for what onnxruntime makes of it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from slimkit.errors import ExportError
from slimkit.quant.params import quantize

if TYPE_CHECKING:
    import onnx

    from slimkit.quant.moments import Moments
    from slimkit.quant.plan import QuantPlan, SiteParams

from slimkit.deploy.mapping import same_values
from slimkit.deploy.ops import MOVE_OPS
from slimkit.deploy.qdq_edit import (
    Editor, QParams, attr, check_act, dequantize_node, keeps_grid, kernel_qparams, out_channels, params_for,
    quantized_weight,
)

def _absorb_bias(ed: Editor, node: "onnx.NodeProto", values: dict[str, np.ndarray],
                 keep: set[str]) -> "onnx.NodeProto":
    """Moves a separate bias Add into the layer's node, so that the bias quantizes to int32.

    tf2onnx writes a Keras Dense as MatMul [-> Reshape] -> Add(bias) and a Conv1D as Conv -> Squeeze
    -> Add(bias). When the layer's output reaches such an Add only through ops that move values, and
    adding the constant along the output-channel axis reproduces the Add's output on the probe (as a
    multiset), the constant becomes the Conv's bias or the C of a Gemm (a MatMul on a 2-D input turns
    into a Gemm; QGemm takes an int32 bias, QLinearMatMul none) and the Add goes. ``keep``: site
    tensors, which must stay.

    Returns:
        The layer's node (a new Gemm for a converted MatMul).
    """
    import onnx

    if node.op_type != "MatMul" and len(node.input) > 2 and node.input[2]:
        return node
    w = ed.array(node.input[1])
    if w is None or (node.op_type != "Conv" and w.ndim != 2):
        return node
    chain, cur = [], node.output[0]
    while True:
        if cur in keep or cur in ed.outputs:
            return node
        readers = ed.readers(cur)
        if len(readers) != 1 or readers[0].input[0] != cur and readers[0].op_type != "Add":
            return node
        reader = readers[0]
        if reader.op_type == "Add":
            break
        if reader.op_type not in MOVE_OPS or not keeps_grid(ed, reader):
            return node
        chain.append(reader)
        cur = reader.output[0]
    add = reader
    others = [t for t in add.input if t != cur]
    n = out_channels(node, w)
    const = ed.array(others[0]) if len(others) == 1 else None
    y, z = values.get(node.output[0]), values.get(add.output[0])
    if const is None or const.size != n or y is None or z is None or y.size != z.size:
        return node
    if node.op_type == "MatMul" and (values.get(node.input[0]) is None or values[node.input[0]].ndim != 2):
        return node
    shape = [1] * y.ndim
    shape[1 if node.op_type == "Conv" else y.ndim - 1] = n
    if not same_values(np.sort(z, axis=None), np.sort((y + const.reshape(shape)).astype(np.float32), axis=None)):
        return node
    bias = ed.add_init(f"{others[0]}_bias", const.reshape(-1).astype(np.float32))
    if node.op_type == "MatMul":
        gemm = onnx.helper.make_node("Gemm", [node.input[0], node.input[1], bias], [node.output[0]],
                                     name=ed.fresh(f"{node.name}_Gemm"))
        ed.nodes[ed.nodes.index(node)] = gemm
        node = gemm
    else:
        while len(node.input) < 2:
            node.input.append("")
        if len(node.input) == 2:
            node.input.append(bias)
        else:
            node.input[2] = bias
    (chain[-1] if chain else node).output[0] = add.output[0]
    ed.nodes.remove(add)
    return node


def _quantize_layer_static(ed: Editor, layer: str, node: "onnx.NodeProto", kernel: np.ndarray,
                           params: dict[str, "SiteParams"], in_p: QParams) -> str:
    """Weight -> int8 + DQ, bias -> int32 + DQ; returns the int8 weight initializer."""
    w = ed.array(node.input[1]).astype(np.float32)
    kp, dtype = kernel_qparams(layer, node, w, kernel, params_for(params, f"{layer}/kernel", "kernel site"))
    base = f"{layer}.kernel"  # slimkit's layer name: short, and the same in both frameworks
    qname, node.input[1] = quantized_weight(ed, w, kp, dtype, base)
    if len(node.input) > 2 and node.input[2]:
        b = ed.array(node.input[2])
        if b is None:
            raise ExportError(f"layer {layer}: bias {node.input[2]!r} of {node.name!r} is not a constant")
        bp = params_for(params, f"{layer}/bias", "bias site")
        bscale = np.asarray(bp.scale, dtype=np.float32).reshape(-1)
        want = (in_p.scale * kp.scale).astype(np.float32).reshape(-1)
        if (bscale.size not in (1, want.size) or not np.allclose(bscale, want, rtol=1e-5, atol=0)
                or np.any(np.asarray(bp.zero_point) != 0)):
            raise ExportError(
                f"bias site '{layer}/bias': scale must be input scale * kernel scale with zero point 0 "
                "(what the integer kernels use); recompute it from the input and kernel params")
        b = b.astype(np.float32).reshape(-1)
        n = b.size
        bscale = np.broadcast_to(bscale, (n,)) if bscale.size == 1 and want.size == n else bscale
        axis = 0 if bscale.size > 1 else None
        bq = QParams(bscale.reshape(()) if axis is None else bscale, np.zeros(bscale.shape, np.int32).reshape(
            () if axis is None else (-1,)), int(bp.qmin), int(bp.qmax), axis)
        q = ed.add_init(f"{layer}.bias_quantized", quantize(b, bq).astype(np.int32))
        node.input[2] = dequantize_node(ed, q, bq, f"{layer}.bias", np.dtype(np.int32))
    return qname


def _qdq(ed: Editor, tensor: str, p: QParams, base: str, cache: dict[tuple, tuple[str, str]]) -> tuple[str, str]:
    """Q -> DQ on ``tensor`` with params ``p``, every reader reading the DQ output.

    Returns:
        The float tensor QuantizeLinear reads and the DequantizeLinear output. A graph output keeps
        its name: the DQ writes it and the producer's tensor is renamed.
    """
    dtype = np.dtype(np.uint8) if p.qmin >= 0 else np.dtype(np.int8)
    key = (float(p.scale), int(p.zero_point), dtype.str)
    if key not in cache:
        cache[key] = (ed.add_init(f"{base}_scale", p.scale.astype(np.float32)),
                      ed.add_init(f"{base}_zero_point", p.zero_point.astype(dtype)))
    scale, zp = cache[key]
    if tensor in ed.outputs:  # keep the graph output's name: it becomes the DQ output
        src = ed.fresh(f"{base}_float")
        for node in ed.nodes:
            for i, name in enumerate(node.output):
                if name == tensor:
                    node.output[i] = src
            for i, name in enumerate(node.input):
                if name == tensor:
                    node.input[i] = src
        out = tensor
    else:
        src, out = tensor, ed.fresh(f"{base}dequantize_node")
    quant = ed.fresh(f"{base}_q")
    q = ed.node("QuantizeLinear", [src, scale, zp], [quant], f"{base}_Q")
    ed.rewire(src, out, skip=q)
    ed.node("DequantizeLinear", [quant, scale, zp], [out], f"{base}_DQ")
    return src, out


def _clip_bounds(ed: Editor, node: "onnx.NodeProto") -> tuple[float, float] | None:
    """A Clip's constant (min, max); None when a bound is not a constant."""
    if len(node.input) > 1 or not any(a.name in ("min", "max") for a in node.attribute):
        bounds = []
        for i, default in ((1, -np.inf), (2, np.inf)):
            if len(node.input) > i and node.input[i]:
                value = ed.array(node.input[i])
                if value is None:
                    return None
                bounds.append(float(value.reshape(())))
            else:
                bounds.append(default)
        return bounds[0], bounds[1]
    return float(attr(node, "min", -np.inf)), float(attr(node, "max", np.inf))


def _folds(ed: Editor, node: "onnx.NodeProto", p: QParams) -> bool:
    """onnxruntime removes ``node`` (Relu, Clip) right before a QuantizeLinear with params ``p``.

    Its ReluQuantFusion needs the Q's zero point at the type's minimum (the ranges exported are the
    full uint8 / int8 ones); its ClipQuantFusion needs the Q's range inside the clip's (float32
    epsilon of slack). Either way QuantizeLinear's saturation then does the clamping exactly.
    """
    if node.op_type == "Relu":
        return int(p.zero_point) == p.qmin
    if node.op_type == "Clip":
        bounds = _clip_bounds(ed, node)
        if bounds is None:
            return False
        scale = np.float32(p.scale)
        lower = scale * np.float32(p.qmin - int(p.zero_point))
        upper = scale * np.float32(p.qmax - int(p.zero_point))
        eps = np.finfo(np.float32).eps
        return not (eps < bounds[0] - lower or eps < upper - bounds[1])
    return False


def _output_pairs(ed: Editor, node: "onnx.NodeProto", pre: str, p: QParams, base: str,
                  cache: dict[tuple, tuple[str, str]]) -> None:
    """Lets onnxruntime see ``layer -> Q`` where the layer's output reaches its site's Q through
    Relu / Clip and value-moving ops (Reshape, Squeeze, MaxPool, ...).

    The activations are moved first (a monotone elementwise op commutes with moving values and with
    max pooling); a single one that onnxruntime folds into the Q (:func:`_folds`) stays, otherwise the
    layer's own output gets a Q/DQ pair with the site's params; the moving ops get one more pair
    before them so that they run on 8-bit values. Numerically the identity: a Relu or clip of
    fake-quantized values equals the fake-quantized Relu or clip, and grid values re-quantize to
    themselves.
    """
    chain, cur = [], node.output[0]
    while cur != pre:
        readers = ed.readers(cur)
        if len(readers) != 1 or readers[0].input[0] != cur:
            return
        reader = readers[0]
        if not (reader.op_type in ("Relu", "Clip") or (reader.op_type in MOVE_OPS | {"MaxPool"}
                                                       and keeps_grid(ed, reader))):
            return
        chain.append(reader)
        cur = reader.output[0]
    if not chain:
        return
    acts = [c for c in chain if c.op_type in ("Relu", "Clip")]
    moves = [c for c in chain if c.op_type not in ("Relu", "Clip")]
    if acts and moves and chain != acts + moves:
        tensors = [node.output[0]] + [c.output[0] for c in chain]
        for i, op in enumerate(acts + moves):
            op.input[0], op.output[0] = tensors[i], tensors[i + 1]
    if len(acts) == 1 and _folds(ed, acts[0], p):
        if moves:
            _qdq(ed, acts[0].output[0], p, base, cache)
        return
    _qdq(ed, node.output[0], p, base, cache)
    if acts and moves:
        _qdq(ed, acts[-1].output[0], p, base, cache)


def quantize_static_graph(ed: Editor, plan: "QuantPlan", params: dict[str, "SiteParams"], kernels: dict[str, np.ndarray],
            layers: dict[str, str], sites: dict[str, str], values: dict[str, np.ndarray],
            act_values: "dict[str, np.ndarray | Moments]") -> tuple[dict[str, str], dict[str, str]]:
    act_p = {a.node: check_act(a.node, params_for(params, a.node, "activation site"), act_values[a.node])
             for a in plan.acts}
    by_tensor: dict[str, str] = {}
    for site, tensor in sites.items():
        other = by_tensor.setdefault(tensor, site)
        if other != site and (float(act_p[other].scale), int(act_p[other].zero_point), act_p[other].qmin) != (
                float(act_p[site].scale), int(act_p[site].zero_point), act_p[site].qmin):
            raise ExportError(f"activation sites {other!r} and {site!r} are the same ONNX tensor {tensor!r} "
                              "but have different quantization parameters")
    # Layers first: a separate bias Add moves into the node (a Keras Dense becomes a Gemm).
    nodes: dict[str, "onnx.NodeProto"] = {}
    for s in plan.layers:
        nodes[s.layer] = _absorb_bias(ed, ed.by_name(layers[s.layer]), values, set(sites.values()))
    weights = {}
    for s in plan.layers:
        if s.input is None:
            raise ExportError(f"layer {s.layer}: a {plan.method} plan needs the layer's input site")
        weights[s.layer] = _quantize_layer_static(ed, s.layer, nodes[s.layer], kernels[s.layer], params,
                                                  act_p[s.input])
    # Activation sites.
    cache: dict[tuple, tuple[str, str]] = {}
    dq_of: dict[str, str] = {}  # site tensor -> DQ output
    pre_of: dict[str, str] = {}  # site tensor -> the float tensor its QuantizeLinear reads
    for a in plan.acts:
        tensor = sites[a.node]
        if tensor not in dq_of:
            # slimkit's node names (short, framework-neutral) name the new tensors and nodes
            pre_of[tensor], dq_of[tensor] = _qdq(ed, tensor, act_p[a.node], a.node, cache)
    # Inputs: Q/DQ after each grid-keeping op between a layer and its input site.
    for s in plan.layers:
        node, p = nodes[s.layer], act_p[s.input]
        target = dq_of[sites[s.input]]
        chain, cur = [], node.input[0]
        while cur != target:
            prod = ed.producer(cur)
            if prod is None or not keeps_grid(ed, prod) or prod.op_type == "DequantizeLinear":
                chain = None
                break
            chain.append(prod)
            cur = prod.input[0]
        for prod in reversed(chain or []):
            out = prod.output[0]
            if any(r.op_type == "QuantizeLinear" for r in ed.readers(out)):
                continue
            _qdq(ed, out, p, s.input, cache)
    # Outputs: Q/DQ pairs between the layer and its output site where onnxruntime cannot fold.
    for s in plan.layers:
        if s.output is not None:
            _output_pairs(ed, nodes[s.layer], pre_of[sites[s.output]], act_p[s.output], s.output, cache)
    return weights, {s.layer: nodes[s.layer].name for s in plan.layers}


# -- dynamic ---------------------------------------------------------------------------------------


