"""Building blocks of QDQ insertion: parameter checks, a mutable graph editor, weight quantization."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from slimkit.errors import ExportError
from slimkit.names import unique_name
from slimkit.quant.moments import Moments
from slimkit.quant.params import quantize

if TYPE_CHECKING:
    import onnx

    from slimkit.quant.plan import SiteParams

from slimkit.deploy.ops import ACT_RANGES, GRID_OPS

@dataclass(frozen=True)
class QParams:
    """Quantization parameters in the form :func:`slimkit.quant.params.quantize` reads."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    axis: int | None = None


def as_qparams(p: "SiteParams", axis: int | None) -> QParams:
    return QParams(np.asarray(p.scale, dtype=np.float32), np.asarray(p.zero_point).astype(np.int32),
              int(p.qmin), int(p.qmax), axis)




def params_for(params: dict[str, "SiteParams"], key: str, what: str) -> "SiteParams":
    if key not in params:
        raise ExportError(f"{what} {key!r} has no quantization parameters; calibrate it before export")
    return params[key]


def check_act(site: str, p: "SiteParams", values: "np.ndarray | Moments | None") -> QParams:
    """Activation params: one finite positive scale, the full uint8 or int8 range, calibrated."""
    scale = np.asarray(p.scale, dtype=np.float64)
    zp = np.asarray(p.zero_point)
    if p.axis is not None or scale.size != 1 or zp.size != 1:
        raise ExportError(f"activation site {site!r}: per-channel parameters (axis {p.axis}) cannot be "
                          "exported; activations are quantized per tensor")
    if (int(p.qmin), int(p.qmax)) not in ACT_RANGES:
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
    seen = None if values is None else values if isinstance(values, Moments) else Moments.of(values)
    if s == 1.0 and z == 0 and seen is not None and seen.size and 16.0 * seen.max_abs < s * (p.qmax - p.qmin):
        raise ExportError(
            f"activation site {site!r} has the degenerate scale 1.0 / zero point 0 of an empty range "
            f"(min == max) while its values on the probe stay within {seen.max_abs:.3g}; "
            "it was never calibrated: calibrate before export")
    return QParams(np.array(s, dtype=np.float32), np.array(z, dtype=np.int32), int(p.qmin), int(p.qmax))


def weight_dtype(layer: str, p: "SiteParams") -> np.dtype:
    """The integer type of a kernel: int8 or uint8 for ranges within them; ExportError otherwise.

    Narrower ranges (k-bit QAT weights, DoReFa's odd levels, BNN's +-1) are stored in int8 too: measured
    on onnxruntime 1.32 CPU, DequantizeLinear of INT4 runs but Conv / Gemm / MatMul then run in float,
    while a k-bit grid in an 8-bit container runs the same integer kernels as 8-bit weights.
    """
    qmin, qmax = int(p.qmin), int(p.qmax)
    bits = max(1, math.ceil(math.log2(qmax - qmin + 1)))
    if -128 <= qmin and qmax <= 127:
        return np.dtype(np.int8)
    if 0 <= qmin and qmax <= 255:
        return np.dtype(np.uint8)
    raise ExportError(f"{bits}-bit weights cannot be exported for {layer}; ORT runs 8-bit "
                      f"(integer range [{qmin}, {qmax}])")




class Editor:
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
        """Writes nodes back in topological order and drops nodes and initializers nothing reads
        (names read inside control-flow bodies count as read)."""
        while True:  # nodes left without readers (an Identity that fed a weight now copied) go too
            read = {name for n in self.nodes for name in n.input} | self.outputs | \
                {name for n in self.nodes for name in _body_inputs(n)}
            alive = [n for n in self.nodes if any(o in read for o in n.output)]
            if len(alive) == len(self.nodes):
                break
            self.nodes = alive
        used = {name for n in self.nodes for name in n.input} | self.outputs | \
            {name for n in self.nodes for name in _body_inputs(n)}
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


def _body_inputs(node: "onnx.NodeProto") -> set[str]:
    """Every name read inside the node's control-flow bodies (Loop, Scan, If), nested ones included."""
    names: set[str] = set()
    for a in node.attribute:
        for graph in [a.g] + list(a.graphs):
            for inner in graph.node:
                names.update(inner.input)
                names |= _body_inputs(inner)
    return names


def attr(node: "onnx.NodeProto", name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def keeps_grid(ed: Editor, node: "onnx.NodeProto") -> bool:
    """``node`` copies values of its first input (so a grid tensor stays on the grid)."""
    if node.op_type not in GRID_OPS:
        return False
    if node.op_type == "MaxPool":
        return len([o for o in node.output if o]) == 1
    if node.op_type == "Dropout":
        return len([o for o in node.output if o]) == 1
    if node.op_type == "Pad":
        mode = attr(node, "mode", b"constant")
        if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
            return False
        if len(node.input) > 2 and node.input[2]:
            value = ed.array(node.input[2])
            return value is not None and bool(np.all(value == 0))
        return float(attr(node, "value", 0.0)) == 0.0
    return True


# -- weights ---------------------------------------------------------------------------------------


def weight_axis(node: "onnx.NodeProto", layer: str, w: np.ndarray) -> int:
    if node.op_type == "Conv":
        return 0
    if w.ndim != 2:
        raise ExportError(f"layer {layer}: {node.op_type} weight of rank {w.ndim} is not supported")
    if node.op_type == "Gemm":
        if attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0:
            raise ExportError(f"layer {layer}: Gemm {node.name!r} with transA / alpha / beta is not supported")
        return 0 if attr(node, "transB", 0) else 1
    return 1


def kernel_qparams(layer: str, node: "onnx.NodeProto", w: np.ndarray, kernel: np.ndarray,
                   p: "SiteParams") -> tuple[QParams, np.dtype]:
    """The kernel params on the ONNX weight's axis, after checking that channels correspond."""
    dtype = weight_dtype(layer, p)
    axis = weight_axis(node, layer, w)
    if p.axis is None:
        if np.asarray(p.scale).size != 1:
            raise ExportError(f"layer {layer}: per-tensor kernel params need one scale")
        return as_qparams(p, None), dtype
    n = np.asarray(p.scale).size
    kernel = np.asarray(kernel, dtype=np.float32)
    native = p.axis % kernel.ndim if -kernel.ndim <= p.axis < kernel.ndim else None
    if native is None or kernel.shape[native] != n or w.shape[axis] != n:
        raise ExportError(
            f"layer {layer}: {n} per-channel kernel scales on native axis {p.axis} of a {kernel.shape} "
            f"kernel do not fit the ONNX weight {w.shape} (axis {axis}); cannot translate the axis")
    w = np.asarray(w, dtype=np.float32)
    if native == axis and kernel.shape == w.shape and np.array_equal(kernel, w):
        # the exporter wrote the kernel as it is (PyTorch's layout is ONNX's): channel c is channel c, and
        # one comparison costs a fifth of summarising both per channel (0.1 s on a ResNet50's kernels)
        return as_qparams(p, axis), dtype
    # Each channel holds the same values in both, in any order (layouts differ): see _channel_summary.
    ours = _channel_summary(np.moveaxis(kernel, native, 0).reshape(n, -1))
    theirs = _channel_summary(np.moveaxis(w, axis, 0).reshape(n, -1))
    if ours.shape != theirs.shape:
        differ = np.arange(n)
    else:
        # min, max and the count are exact; float64 sums of the same values in another order agree to
        # rounding far below this bound
        differ = np.flatnonzero(np.any(ours[:, [0, 1, 5]] != theirs[:, [0, 1, 5]], axis=1)
                                | (np.abs(ours[:, 2] - theirs[:, 2]) > 1e-9 * ours[:, 4])
                                | (np.abs(ours[:, 3] - theirs[:, 3]) > 1e-9 * ours[:, 3]))
    if differ.size:
        c = int(differ[0])
        raise ExportError(
            f"layer {layer}: channel {c} of the kernel (native axis {p.axis}) is not channel {c} of "
            f"the ONNX weight (axis {axis}); cannot translate the per-channel axis")
    return as_qparams(p, axis), dtype


def _channel_summary(rows: np.ndarray) -> np.ndarray:
    """Per row: min, max, sum, sum of squares, sum of magnitudes, count (float64).

    Two rows holding the same values in another order agree on all six (the sums up to rounding); rows
    that agree on all six but differ are not told apart (nor values moved by less than a billionth of
    the channel's magnitude), and swapping such channels would change the scales of two channels of
    equal extremes, which the export's verification in onnxruntime checks.
    Sorting every channel instead cost a ResNet50's export 0.4 s."""
    if not rows.shape[1]:
        return np.zeros((len(rows), 6))
    # float64 accumulation without a float64 copy of the kernel
    return np.stack([rows.min(axis=1), rows.max(axis=1), rows.sum(axis=1, dtype=np.float64),
                     np.einsum("ij,ij->i", rows, rows, dtype=np.float64, casting="safe"),
                     np.abs(rows).sum(axis=1, dtype=np.float64), np.full(len(rows), rows.shape[1], dtype=np.float64)],
                    axis=1)


def dequantize_node(ed: Editor, q_name: str, p: QParams, base: str, zp_dtype: np.dtype) -> str:
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


def quantized_weight(ed: Editor, w: np.ndarray, p: QParams, dtype: np.dtype, base: str) -> tuple[str, str]:
    """Int8 initializer of ``w`` + DequantizeLinear; returns the initializer and the float output."""
    q = ed.add_init(f"{base}_quantized", quantize(w, p).astype(dtype))
    return q, dequantize_node(ed, q, p, base, dtype)


# -- static ----------------------------------------------------------------------------------------


def out_channels(node: "onnx.NodeProto", w: np.ndarray) -> int:
    if node.op_type == "Conv":
        return int(w.shape[0])
    if node.op_type == "Gemm" and attr(node, "transB", 0):
        return int(w.shape[0])
    return int(w.shape[-1])


