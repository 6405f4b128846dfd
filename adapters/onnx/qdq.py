"""Quantize an exported float ONNX model with slimkit's own scales: QuantizeLinear / DequantizeLinear.

The framework model is exported to float ONNX by the usual path; :func:`insert_qdq` then finds every
site of the :class:`~slimkit.quant.plan.QuantPlan` in that graph (:mod:`.mapping`) and rewrites it:

Static plans (``static``, ``qat``):

* each quantized layer's weight becomes an int8 initializer + DequantizeLinear (per channel on the
  ONNX weight's output-channel axis: Conv 0, Gemm 0 with ``transB=1`` else 1, MatMul 1); its bias an
  int32 initializer (scale ``input_scale * kernel_scale``, zero point 0) + DequantizeLinear. A Keras
  Dense (MatMul + Add of a constant bias) on a 2-D input becomes one Gemm;
* each activation site's tensor gets QuantizeLinear -> DequantizeLinear, every reader reading the
  DequantizeLinear output;
* where a layer's data input reaches its input site only through ops that keep values on the grid
  (Transpose, Reshape, Flatten, MaxPool, zero Pad, Squeeze, Unsqueeze, Identity, Dropout), every such
  op's output gets another Q/DQ pair with the same parameters, and where a layer's output reaches its
  output site through Relu / Clip / such ops that onnxruntime cannot fold, the layer's own output
  does. These pairs are numerically the identity (the values are on the grid already; a ReLU or clip
  of grid values commutes with fake quantization) and let onnxruntime see ``DQ -> op -> Q`` units.

What onnxruntime 1.32 (CPU) makes of it, measured with ORT_ENABLE_EXTENDED and ORT_ENABLE_ALL:

* ``DQ -> Conv -> Q`` (int8 per-channel weight, int32 bias): QLinearConv (ALL: the NHWC
  com.microsoft QLinearConv, with MaxPool as NhwcMaxPool);
* ``DQ -> Gemm -> Q``, ``transB`` 0 or 1, per-channel weight: com.microsoft QGemm;
* ``DQ -> MatMul -> Q``, per-column weight: QLinearMatMul;
* ``Conv/Gemm/MatMul -> Relu -> Q``: the Relu is removed when the Q's zero point is the type's
  minimum (0 for uint8, -128 for int8), i.e. any range calibrated on a ReLU output with
  ``min = 0``; otherwise a Q/DQ pair is placed before the Relu;
* ``DQ -> MaxPool/Transpose/Reshape/Flatten -> Q`` with equal parameters: the pair is dropped and the
  op runs on 8-bit values;
* ``DQ, DQ -> Add -> Q``: QLinearAdd (residual adds whose inputs and output are quantized);
* int4 weights (``DequantizeLinear`` of INT4, opset 21) run, but as a float Conv/MatMul/Gemm after
  dequantization: no integer kernel. Weight ranges narrower than 7 bits are therefore refused.

Dynamic plans (``dynamic``): weights are int8 as above; each layer's input is quantized at run time
by DynamicQuantizeLinear (uint8, range ``[min(0, min x), max(0, max x)]`` of the whole tensor),
followed by ConvInteger / MatMulInteger -> Cast -> Mul(input_scale * kernel_scale) [-> Add(bias)],
the pattern of ``onnxruntime.quantization.quantize_dynamic``; onnxruntime fuses the MatMul form into
com.microsoft DynamicQuantizeMatMul and runs ConvInteger as is. The bias stays float.
"""

from __future__ import annotations

import collections
import math
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from slimkit.adapters.onnx.mapping import QdqMapping, map_layers, map_sites, probe_values, same_values
from slimkit.errors import ExportError
from slimkit.names import unique_name
from slimkit.quant.params import quantize

if TYPE_CHECKING:
    import onnx

    from slimkit.quant.plan import QuantPlan, SiteParams

__all__ = ["INTEGER_OPS", "QdqMapping", "check_quantized", "fused_ops", "insert_qdq", "optimized_model"]

#: Op types of onnxruntime's integer kernels for Conv / Gemm / MatMul (after its graph optimizations).
INTEGER_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "NhwcQLinearConv",
})

#: Ops whose output holds values of their (first) input only: a tensor on the quantization grid stays
#: on it (Pad only with constant 0, MaxPool only without indices; checked by :func:`_keeps_grid`).
GRID_OPS = frozenset({"Transpose", "Reshape", "Flatten", "MaxPool", "Pad", "Squeeze", "Unsqueeze",
                      "Identity", "Dropout"})

#: Ops that only move values (activations such as Relu and Clip commute with them).
MOVE_OPS = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})

_ACT_RANGES = {(0, 255): "uint8", (-128, 127): "int8"}


@dataclass(frozen=True)
class _P:
    """Quantization parameters in the form :func:`slimkit.quant.params.quantize` reads."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    axis: int | None = None


def _as_p(p: "SiteParams", axis: int | None) -> _P:
    return _P(np.asarray(p.scale, dtype=np.float32), np.asarray(p.zero_point).astype(np.int32),
              int(p.qmin), int(p.qmax), axis)


# -- checks -----------------------------------------------------------------------------------------


def _get(params: dict[str, "SiteParams"], key: str, what: str) -> "SiteParams":
    if key not in params:
        raise ExportError(f"{what} {key!r} has no quantization parameters; calibrate it before export")
    return params[key]


def _check_act(site: str, p: "SiteParams", values: np.ndarray | None) -> _P:
    """Activation params: one finite positive scale, the full uint8 or int8 range, calibrated."""
    scale = np.asarray(p.scale, dtype=np.float64)
    zp = np.asarray(p.zero_point)
    if p.axis is not None or scale.size != 1 or zp.size != 1:
        raise ExportError(f"activation site {site!r}: per-channel parameters (axis {p.axis}) cannot be "
                          "exported; activations are quantized per tensor")
    if (int(p.qmin), int(p.qmax)) not in _ACT_RANGES:
        raise ExportError(
            f"activation site {site!r}: integer range [{p.qmin}, {p.qmax}] is not 8-bit; QuantizeLinear "
            "saturates to the full uint8 [0, 255] or int8 [-128, 127] range, so only those export")
    s, z = float(scale.reshape(())), int(zp.reshape(()))
    if not (math.isfinite(s) and s > 0) or not p.qmin <= z <= p.qmax:
        raise ExportError(f"activation site {site!r}: invalid scale {s} / zero point {z} "
                          "(uncalibrated range?); calibrate before export")
    # params_from_range turns an empty range (min == max == 0) into the placeholder scale 1, zero
    # point 0. A calibrated scale of 1 means a range 255 wide; a probe using less than 1/16 of it
    # betrays the placeholder (real data of that range, raw 0..255 pixels say, uses most of it).
    if s == 1.0 and z == 0 and values is not None and values.size and \
            16.0 * float(np.max(np.abs(values))) < s * (p.qmax - p.qmin):
        raise ExportError(
            f"activation site {site!r} has the degenerate scale 1.0 / zero point 0 of an empty range "
            f"(min == max) while its values on the probe stay within {float(np.max(np.abs(values))):.3g}; "
            "it was never calibrated: calibrate before export")
    return _P(np.array(s, dtype=np.float32), np.array(z, dtype=np.int32), int(p.qmin), int(p.qmax))


def _check_weight_range(layer: str, p: "SiteParams") -> np.dtype:
    """The integer type of a kernel: int8 or uint8 for 7- and 8-bit ranges; ExportError otherwise."""
    qmin, qmax = int(p.qmin), int(p.qmax)
    bits = max(1, math.ceil(math.log2(qmax - qmin + 1)))
    if bits < 7:
        # Measured on onnxruntime 1.32 CPU: DequantizeLinear of INT4 runs, but Conv / Gemm / MatMul
        # then run in float; no integer kernel takes 4-bit per-channel weights.
        raise ExportError(f"{bits}-bit weights cannot be exported for {layer}; ORT runs 8-bit "
                          f"(integer range [{qmin}, {qmax}])")
    if -128 <= qmin and qmax <= 127:
        return np.dtype(np.int8)
    if 0 <= qmin and qmax <= 255:
        return np.dtype(np.uint8)
    raise ExportError(f"{bits}-bit weights cannot be exported for {layer}; ORT runs 8-bit "
                      f"(integer range [{qmin}, {qmax}])")


# -- graph editing -------------------------------------------------------------------------------


class _Editor:
    """A mutable view of a graph: nodes in a list, initializers by name, fresh names."""

    def __init__(self, model: "onnx.ModelProto") -> None:
        from onnx import numpy_helper

        self.model = model
        self.graph = model.graph
        self.nodes = list(self.graph.node)
        self.inits = {i.name: i for i in self.graph.initializer}
        self.names: set[str] = set(self.inits) | {i.name for i in self.graph.input}
        for node in self.nodes:
            self.names.update(node.output)
            self.names.add(node.name)
        self.outputs = {o.name for o in self.graph.output}
        self._np = numpy_helper

    def fresh(self, base: str) -> str:
        return unique_name(base, self.names)

    def array(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (initializer or Constant node); None for a computed one."""
        init = self.inits.get(name)
        if init is not None:
            return self._np.to_array(init)
        node = self.producer(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return self._np.to_array(a.t)
        if node is not None and node.op_type == "Identity":
            # torch.onnx shares identical initializers (all-zero biases after folding fresh batch
            # norms, say) through Identity nodes
            return self.array(node.input[0])
        return None

    def add_init(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits[name] = self._np.from_array(np.asarray(value), name)
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], base: str, domain: str = "",
             **attrs: Any) -> "onnx.NodeProto":
        import onnx

        node = onnx.helper.make_node(op, inputs, outputs, name=self.fresh(base), domain=domain, **attrs)
        self.nodes.append(node)
        return node

    def producer(self, tensor: str) -> "onnx.NodeProto | None":
        for node in self.nodes:
            if tensor in node.output:
                return node
        return None

    def readers(self, tensor: str) -> list["onnx.NodeProto"]:
        return [n for n in self.nodes if tensor in n.input]

    def by_name(self, name: str) -> "onnx.NodeProto":
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def rewire(self, old: str, new: str, skip: "onnx.NodeProto | None" = None) -> None:
        """Every reader of ``old`` (but ``skip``) reads ``new``."""
        for node in self.nodes:
            if node is skip:
                continue
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new

    def finish(self) -> None:
        """Writes nodes back in topological order and drops initializers nothing reads."""
        used = {name for n in self.nodes for name in n.input} | self.outputs
        produced = {i.name for i in self.graph.input} | set(self.inits)
        ordered, pending = [], list(self.nodes)
        while pending:
            ready = [n for n in pending if all(not x or x in produced for x in n.input)]
            if not ready:
                names = ", ".join(n.name for n in pending[:5])
                raise ExportError(f"internal error: QDQ graph has a cycle or dangling input near {names}")
            for n in ready:
                produced.update(n.output)
            ordered += ready
            ready_ids = {id(n) for n in ready}
            pending = [n for n in pending if id(n) not in ready_ids]
        del self.graph.node[:]
        self.graph.node.extend(ordered)
        del self.graph.initializer[:]
        self.graph.initializer.extend(i for name, i in self.inits.items() if name in used)
        keep = {i.name for i in self.graph.initializer}
        # Initializers listed as graph inputs (old IR) go with them.
        inputs = [i for i in self.graph.input if i.name not in self.inits or i.name in keep]
        del self.graph.input[:]
        self.graph.input.extend(inputs)
        # Shapes recorded by the exporter may no longer hold (activations moved before reshapes);
        # value_info is optional and onnxruntime infers it again.
        del self.graph.value_info[:]


def _attr(node: "onnx.NodeProto", name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _keeps_grid(ed: _Editor, node: "onnx.NodeProto") -> bool:
    """``node`` copies values of its first input (so a grid tensor stays on the grid)."""
    if node.op_type not in GRID_OPS:
        return False
    if node.op_type == "MaxPool":
        return len([o for o in node.output if o]) == 1
    if node.op_type == "Dropout":
        return len([o for o in node.output if o]) == 1
    if node.op_type == "Pad":
        mode = _attr(node, "mode", b"constant")
        if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
            return False
        if len(node.input) > 2 and node.input[2]:
            value = ed.array(node.input[2])
            return value is not None and bool(np.all(value == 0))
        return float(_attr(node, "value", 0.0)) == 0.0
    return True


# -- weights ---------------------------------------------------------------------------------------


def _weight_axis(node: "onnx.NodeProto", layer: str, w: np.ndarray) -> int:
    if node.op_type == "Conv":
        return 0
    if w.ndim != 2:
        raise ExportError(f"layer {layer}: {node.op_type} weight of rank {w.ndim} is not supported")
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
            raise ExportError(f"layer {layer}: Gemm {node.name!r} with transA / alpha / beta is not supported")
        return 0 if _attr(node, "transB", 0) else 1
    return 1


def _kernel_params(layer: str, node: "onnx.NodeProto", w: np.ndarray, kernel: np.ndarray,
                   p: "SiteParams") -> tuple[_P, np.dtype]:
    """The kernel params on the ONNX weight's axis, after checking that channels correspond."""
    dtype = _check_weight_range(layer, p)
    axis = _weight_axis(node, layer, w)
    if p.axis is None:
        if np.asarray(p.scale).size != 1:
            raise ExportError(f"layer {layer}: per-tensor kernel params need one scale")
        return _as_p(p, None), dtype
    n = np.asarray(p.scale).size
    kernel = np.asarray(kernel, dtype=np.float32)
    native = p.axis % kernel.ndim if -kernel.ndim <= p.axis < kernel.ndim else None
    if native is None or kernel.shape[native] != n or w.shape[axis] != n:
        raise ExportError(
            f"layer {layer}: {n} per-channel kernel scales on native axis {p.axis} of a {kernel.shape} "
            f"kernel do not fit the ONNX weight {w.shape} (axis {axis}); cannot translate the axis")
    for c in range(n):
        if not np.array_equal(np.sort(np.take(kernel, c, axis=native), axis=None),
                              np.sort(np.take(w, c, axis=axis), axis=None)):
            raise ExportError(
                f"layer {layer}: channel {c} of the kernel (native axis {p.axis}) is not channel {c} of "
                f"the ONNX weight (axis {axis}); cannot translate the per-channel axis")
    return _as_p(p, axis), dtype


def _dq(ed: _Editor, q_name: str, p: _P, base: str, zp_dtype: np.dtype) -> str:
    """DequantizeLinear of initializer ``q_name`` with params ``p``; returns its output."""
    scale = ed.add_init(f"{base}_scale", p.scale.astype(np.float32))
    inputs = [q_name, scale]
    if np.any(p.zero_point != 0) or zp_dtype != np.dtype(np.int32):
        # An int32 bias' zero point of 0 is DequantizeLinear's default: leaving it out keeps small
        # models' files small. Kernels keep theirs: onnxruntime fuses Gemm into QGemm only with it.
        inputs.append(ed.add_init(f"{base}_zero_point", p.zero_point.astype(zp_dtype)))
    out = ed.fresh(f"{base}_dequantized")
    attrs = {"axis": p.axis} if p.axis is not None else {}
    ed.node("DequantizeLinear", inputs, [out], f"{base}_DequantizeLinear", **attrs)
    return out


def _quantized_weight(ed: _Editor, w: np.ndarray, p: _P, dtype: np.dtype, base: str) -> tuple[str, str]:
    """Int8 initializer of ``w`` + DequantizeLinear; returns the initializer and the float output."""
    q = ed.add_init(f"{base}_quantized", quantize(w, p).astype(dtype))
    return q, _dq(ed, q, p, base, dtype)


# -- static ----------------------------------------------------------------------------------------


def _out_channels(node: "onnx.NodeProto", w: np.ndarray) -> int:
    if node.op_type == "Conv":
        return int(w.shape[0])
    if node.op_type == "Gemm" and _attr(node, "transB", 0):
        return int(w.shape[0])
    return int(w.shape[-1])


def _absorb_bias(ed: _Editor, node: "onnx.NodeProto", values: dict[str, np.ndarray],
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
        if reader.op_type not in MOVE_OPS or not _keeps_grid(ed, reader):
            return node
        chain.append(reader)
        cur = reader.output[0]
    add = reader
    others = [t for t in add.input if t != cur]
    n = _out_channels(node, w)
    const = ed.array(others[0]) if len(others) == 1 else None
    y, z = values.get(node.output[0]), values.get(add.output[0])
    if const is None or const.size != n or y is None or z is None or y.size != z.size:
        return node
    if node.op_type == "MatMul" and (values.get(node.input[0]) is None or values[node.input[0]].ndim != 2):
        return node
    shape = [1] * y.ndim
    shape[1 if node.op_type == "Conv" else y.ndim - 1] = n
    if not same_values(np.sort(z, axis=None), (y + const.reshape(shape)).astype(np.float32)):
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


def _quantize_layer_static(ed: _Editor, layer: str, node: "onnx.NodeProto", kernel: np.ndarray,
                           params: dict[str, "SiteParams"], in_p: _P) -> str:
    """Weight -> int8 + DQ, bias -> int32 + DQ; returns the int8 weight initializer."""
    w = ed.array(node.input[1]).astype(np.float32)
    kp, dtype = _kernel_params(layer, node, w, kernel, _get(params, f"{layer}/kernel", "kernel site"))
    base = f"{layer}.kernel"  # slimkit's layer name: short, and the same in both frameworks
    qname, node.input[1] = _quantized_weight(ed, w, kp, dtype, base)
    if len(node.input) > 2 and node.input[2]:
        b = ed.array(node.input[2])
        if b is None:
            raise ExportError(f"layer {layer}: bias {node.input[2]!r} of {node.name!r} is not a constant")
        bp = _get(params, f"{layer}/bias", "bias site")
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
        bq = _P(bscale.reshape(()) if axis is None else bscale, np.zeros(bscale.shape, np.int32).reshape(
            () if axis is None else (-1,)), int(bp.qmin), int(bp.qmax), axis)
        q = ed.add_init(f"{layer}.bias_quantized", quantize(b, bq).astype(np.int32))
        node.input[2] = _dq(ed, q, bq, f"{layer}.bias", np.dtype(np.int32))
    return qname


def _qdq(ed: _Editor, tensor: str, p: _P, base: str, cache: dict[tuple, tuple[str, str]]) -> tuple[str, str]:
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
        src, out = tensor, ed.fresh(f"{base}_dq")
    quant = ed.fresh(f"{base}_q")
    q = ed.node("QuantizeLinear", [src, scale, zp], [quant], f"{base}_Q")
    ed.rewire(src, out, skip=q)
    ed.node("DequantizeLinear", [quant, scale, zp], [out], f"{base}_DQ")
    return src, out


def _clip_bounds(ed: _Editor, node: "onnx.NodeProto") -> tuple[float, float] | None:
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
    return float(_attr(node, "min", -np.inf)), float(_attr(node, "max", np.inf))


def _folds(ed: _Editor, node: "onnx.NodeProto", p: _P) -> bool:
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


def _output_pairs(ed: _Editor, node: "onnx.NodeProto", pre: str, p: _P, base: str,
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
                                                       and _keeps_grid(ed, reader))):
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


def _static(ed: _Editor, plan: "QuantPlan", params: dict[str, "SiteParams"], kernels: dict[str, np.ndarray],
            layers: dict[str, str], sites: dict[str, str], values: dict[str, np.ndarray],
            act_values: dict[str, np.ndarray]) -> tuple[dict[str, str], dict[str, str]]:
    act_p = {a.node: _check_act(a.node, _get(params, a.node, "activation site"),
                                 np.asarray(act_values[a.node])) for a in plan.acts}
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
            if prod is None or not _keeps_grid(ed, prod) or prod.op_type == "DequantizeLinear":
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


def _dynamic(ed: _Editor, plan: "QuantPlan", params: dict[str, "SiteParams"], kernels: dict[str, np.ndarray],
             layers: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    import onnx

    weights, names = {}, {}
    for s in plan.layers:
        node = ed.by_name(layers[s.layer])
        w = ed.array(node.input[1]).astype(np.float32)
        kp, dtype = _kernel_params(s.layer, node, w, kernels[s.layer],
                                   _get(params, f"{s.layer}/kernel", "kernel site"))
        base = node.input[1]
        x = node.input[0]
        xq, xs, xz = (ed.fresh(f"{x}_quantized"), ed.fresh(f"{x}_scale"), ed.fresh(f"{x}_zero_point"))
        ed.node("DynamicQuantizeLinear", [x], [xq, xs, xz], f"{node.name}_DynamicQuantizeLinear")
        acc = ed.fresh(f"{node.output[0]}_int32")
        if node.op_type == "Conv":
            wq = quantize(w, kp).astype(dtype)
            out_ch = w.shape[0]
            shape = (out_ch,) + (1,) * (w.ndim - 2)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for key in ("auto_pad",):
                if key in attrs and isinstance(attrs[key], bytes):
                    attrs[key] = attrs[key].decode()
            zps = np.unique(kp.zero_point)
            if zps.size != 1:
                raise ExportError(
                    f"layer {s.layer}: dynamic quantization of a Conv needs one kernel zero point for all "
                    f"channels (onnxruntime's ConvInteger); got {zps.size} different ones: use a symmetric "
                    "kernel range")
            wname = ed.add_init(f"{base}_quantized", wq)
            wzp = ed.add_init(f"{base}_zero_point", zps.reshape(()).astype(dtype))
            integer = ed.node("ConvInteger", [xq, wname, xz, wzp], [acc], f"{node.name}_ConvInteger", **attrs)
        else:
            axis = _weight_axis(node, s.layer, w)
            wq = quantize(w, kp).astype(dtype)
            if axis == 0:  # Gemm transB=1: [N, K] -> [K, N] for MatMulInteger
                wq = wq.T
            out_ch = wq.shape[1]
            shape = (out_ch,)
            wname = ed.add_init(f"{base}_quantized", np.ascontiguousarray(wq))
            wzp = ed.add_init(f"{base}_zero_point", kp.zero_point.astype(dtype))
            integer = ed.node("MatMulInteger", [xq, wname, xz, wzp], [acc], f"{node.name}_MatMulInteger")
        cast = ed.fresh(f"{node.output[0]}_int32_cast")
        ed.node("Cast", [acc], [cast], f"{node.name}_Cast", to=onnx.TensorProto.FLOAT)
        wscale = kp.scale.reshape(shape) if kp.axis is not None else kp.scale
        ws = ed.add_init(f"{base}_scale", wscale.astype(np.float32))
        both = ed.fresh(f"{node.name}_scales")
        ed.node("Mul", [xs, ws], [both], f"{node.name}_scales_Mul")
        has_bias = node.op_type != "MatMul" and len(node.input) > 2 and node.input[2]
        scaled = ed.fresh(f"{node.output[0]}_scaled") if has_bias else node.output[0]
        ed.node("Mul", [cast, both], [scaled], f"{node.name}_Mul")
        if has_bias:
            b = ed.array(node.input[2])
            if b is None:
                raise ExportError(f"layer {s.layer}: bias {node.input[2]!r} is not a constant")
            if node.op_type == "Conv":
                b = b.reshape((-1,) + (1,) * (w.ndim - 2))
            bias = ed.add_init(f"{node.input[2]}_bias", b.astype(np.float32))
            ed.node("Add", [scaled, bias], [node.output[0]], f"{node.name}_Add")
        ed.nodes.remove(node)
        weights[s.layer] = wname
        names[s.layer] = integer.name
    return weights, names


# -- public ----------------------------------------------------------------------------------------


def insert_qdq(
    float_model: "onnx.ModelProto",
    plan: "QuantPlan",
    params: dict[str, "SiteParams"],
    kernels: dict[str, np.ndarray],
    act_values: dict[str, np.ndarray],
    probe: np.ndarray,
) -> tuple["onnx.ModelProto", QdqMapping]:
    """Quantizes the float ONNX export of a model at the sites of ``plan`` with slimkit's params.

    Args:
        float_model: the verified float export (not modified).
        plan: the sites; a plan whose activation sites take their range at run time (dynamic) gets
            DynamicQuantizeLinear, any other Q/DQ pairs with fixed parameters.
        params: site key -> :class:`SiteParams` (activation nodes, ``<layer>/kernel``,
            ``<layer>/bias``; dynamic plans need the kernels only).
        kernels: layer -> float32 kernel as the framework holds it (any layout).
        act_values: activation site -> the framework's float32 values of that tensor on ``probe``.
        probe: a small input batch in the framework's layout (= the ONNX input's layout).

    Returns:
        The quantized model and where each site went.

    Raises:
        ExportError: a site cannot be found, lacks parameters, has an uncalibrated range, or a range
            that is not 8-bit; the message names it.
    """
    import onnx

    opset = max((o.version for o in float_model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise ExportError(f"QDQ export needs opset 13 or later (per-channel DequantizeLinear), the model has {opset}")
    model = onnx.ModelProto()
    model.CopyFrom(float_model)
    layers = map_layers(model, plan, kernels)
    order, values = probe_values(model, probe)
    sites = map_sites(model, plan, act_values, order, values, layers)
    ed = _Editor(model)
    if plan.runtime_ranges:
        weights, nodes = _dynamic(ed, plan, params, kernels, layers)
    else:
        weights, nodes = _static(ed, plan, params, kernels, layers, sites, values, act_values)
    ed.finish()
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError(f"internal error: the QDQ model is invalid: {exc}") from exc
    mapping = QdqMapping(tuple((a.node, sites[a.node]) for a in plan.acts),
                         tuple((s.layer, nodes[s.layer]) for s in plan.layers),
                         tuple((s.layer, weights[s.layer]) for s in plan.layers))
    return model, mapping


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
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        options.log_severity_level = 3  # the NCHWc serialization notice
        try:
            ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load the model: {exc}") from exc
        return onnx.load(options.optimized_model_filepath)


def fused_ops(model: "str | os.PathLike[str] | onnx.ModelProto", level: str = "all") -> collections.Counter:
    """Op types of onnxruntime's optimized graph (``level`` as in :func:`optimized_model`) and their counts."""
    return collections.Counter(n.op_type for n in optimized_model(model, level).graph.node)


def check_quantized(model: "str | os.PathLike[str] | onnx.ModelProto", mapping: QdqMapping,
                    level: str = "all") -> None:
    """Raises unless onnxruntime runs every quantized layer of ``mapping`` with an integer kernel.

    A layer counts as run in integer arithmetic when a node of :data:`INTEGER_OPS` reads its integer
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
        if not any(op in INTEGER_OPS for op in ops):
            bad.append(f"{layer} (ONNX node {mapping.node(layer)!r}; its weight is read by "
                       f"{', '.join(sorted(set(ops))) or 'nothing'})")
    if bad:
        raise ExportError("onnxruntime did not turn these quantized layers into integer kernels: " + "; ".join(bad))
