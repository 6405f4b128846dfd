"""Where a model is quantized: the sites, planned once on the neutral layer graph.

A *quantization plan* names every tensor that is fake-quantized in the framework and quantized
(Q/DQ) in the exported ONNX model, so that the two compute the same thing:

* the kernel of every selected conv / depthwise conv / dense layer, per channel;
* its bias, as int32 with ``scale = input_scale * kernel_scale`` (what QLinearConv uses);
* activation tensors, per tensor: the input of every selected layer and its output. An output is
  taken after a directly following ReLU/ReLU6 (``attrs["quant"] == "relu"``) when the layer's
  output feeds nothing else: quantizing ``[0, max]`` clamps exactly as ReLU does, and onnxruntime
  fuses ``Relu -> QuantizeLinear`` away, which lets it run the layer as one integer kernel. An
  input is taken at its producer, looking back through ops that keep values on the grid
  (``attrs["quant"] == "same"``: max pooling, reshapes, dropout, zero padding), so a tensor is
  quantized once however many layers read it.

Sites are keyed by strings: an activation site by its graph node name (the node whose output is
quantized), a weight site by ``"<layer>/kernel"`` or ``"<layer>/bias"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from slimkit.graph import LayerGraph, Node
from slimkit.quant.params import QuantParams

#: Fake-quant modes an adapter implements.
#:
#: - ``fixed``: scale and zero point set from numpy (:class:`SiteParams`); exact ONNX semantics.
#: - ``ema``: activations in QAT; training updates a moving average of batch min/max (momentum
#:   ``spec.momentum``), and scale/zero point follow it.
#: - ``lsq``: QAT with a trainable scale (learned step size, gradient scaled by
#:   ``1 / sqrt(numel * qmax)``); the zero point stays as calibrated.
#: - ``minmax``: kernels in QAT; scale from the current weights at every call, per channel.
#: - ``dynamic``: activations of dynamic quantization; range of the current batch at every call.
#: - ``dorefa``: QAT's DoReFa-Net quantizers (k-bit weights through tanh, activations clipped to [0, 1]).
#: - ``bnn``: QAT's binarization (sign, hardtanh straight-through gradient; weights scaled by mean|w|).
#:
#: Appended in this order: PyTorch models store a site's mode as its index here.
MODES = ("fixed", "ema", "lsq", "minmax", "dynamic", "dorefa", "bnn")

#: Layer kinds that have integer kernels in onnxruntime.
QUANTIZABLE_KINDS = ("conv", "depthwise_conv", "dense")


@dataclass(frozen=True)
class FakeQuantSpec:
    """How one site is fake-quantized.

    Attributes:
        qmin: smallest integer value (``qrange`` of the bits, sign and reduce-range).
        qmax: largest integer value.
        symmetric: symmetric range (zero point in the middle) when the mode computes ranges itself.
        axis: native axis of the channels for per-channel kernels; None for per-tensor.
        mode: one of :data:`MODES`.
        momentum: weight of the old value in the ``ema`` mode's moving average.
        bits: width of the integer type (for messages and export).
        signed: integer type is signed (int8) rather than unsigned (uint8).
    """

    qmin: int
    qmax: int
    symmetric: bool
    axis: int | None = None
    mode: str = "fixed"
    momentum: float = 0.9
    bits: int = 8
    signed: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"FakeQuantSpec.mode must be one of {MODES}, got {self.mode!r}")
        if not self.qmin < self.qmax:
            raise ValueError(f"FakeQuantSpec: qmin {self.qmin} must be below qmax {self.qmax}")


@dataclass(frozen=True)
class SiteParams:
    """Fixed parameters of one site: ``y = (clip(rint(x / scale) + zero_point, qmin, qmax) - zero_point) * scale``.

    ``scale`` and ``zero_point`` are scalars (per tensor) or 1-D along ``axis`` (per channel). Bias
    sites use the int32 range.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    axis: int | None = None

    @classmethod
    def of(cls, p: QuantParams) -> "SiteParams":
        """The site parameters of numpy :class:`QuantParams`."""
        return cls(p.scale, p.zero_point, p.qmin, p.qmax, p.axis)


@dataclass(frozen=True)
class ActSite:
    """An activation tensor to quantize: the output of graph node ``node``."""

    node: str
    spec: FakeQuantSpec


@dataclass(frozen=True)
class LayerSite:
    """A layer whose kernel (and bias) are quantized.

    Attributes:
        layer: the adapter's layer name.
        node: the layer's graph node.
        kernel: the kernel's fake-quant spec (per channel on the native out-channel axis).
        input: the activation site feeding the layer (its scale sets the bias scale); None when the
            input is not quantized by a fixed site (dynamic quantization).
        output: the activation site of the layer's output, if any.
    """

    layer: str
    node: str
    kernel: FakeQuantSpec
    input: str | None
    output: str | None


@dataclass(frozen=True)
class QuantPlan:
    """Every site of a quantized model, in graph order.

    Attributes:
        acts: activation sites.
        layers: quantized layers.
        method: the quantization method's name (for reports; behaviour follows the sites' modes).
        output_grid: ``(node,)``, the node whose grid the model's only output is on (export bounds its
            check by that site's step), ``()`` when the model has several outputs, or None when the plan
            was made without that knowledge (export then reads the graph again).
    """

    acts: tuple[ActSite, ...]
    layers: tuple[LayerSite, ...]
    method: str = "static"
    # Derived from the graph, not a site: plans read back from a model (without it) still compare equal.
    output_grid: tuple[str, ...] | None = field(default=None, compare=False)

    def act(self, node: str) -> ActSite:
        """The activation site of ``node``."""
        for site in self.acts:
            if site.node == node:
                return site
        raise KeyError(node)

    @property
    def runtime_ranges(self) -> bool:
        """Its activation sites take their range from each tensor at run time (dynamic quantization)."""
        from slimkit.quant.fake_quant import mode_of

        return bool(self.acts) and all(mode_of(a.spec.mode).runtime_range for a in self.acts)

    def act_roles(self, node: str) -> str:
        """What activation site ``node`` is to the plan's layers, for messages: "the input of layer 'b'
        and the output of layer 'a'"."""
        roles = [f"the input of layer {s.layer!r}" for s in self.layers if s.input == node] + \
                [f"the output of layer {s.layer!r}" for s in self.layers if s.output == node]
        return " and ".join(roles) or "read by no quantized layer"

    def site_keys(self) -> list[str]:
        """Every site key: activation nodes, then ``layer/kernel`` and ``layer/bias``."""
        keys = [a.node for a in self.acts]
        for s in self.layers:
            keys += [f"{s.layer}/kernel", f"{s.layer}/bias"]
        return keys


def consumers(graph: LayerGraph) -> dict[str, list[Node]]:
    """Each node's readers, in graph order."""
    out: dict[str, list[Node]] = {n.name: [] for n in graph.nodes}
    for node in graph.nodes:
        for inp in node.inputs:
            out[inp].append(node)
    return out


def grid_source(graph: LayerGraph, name: str) -> str:
    """The node whose output ``name``'s output equals on the quantization grid (through ``same`` ops)."""
    node = graph.by_name[name]
    while node.attrs.get("quant") == "same" and len(node.inputs) == 1:
        node = graph.by_name[node.inputs[0]]
    return node.name


def never_negative(graph: LayerGraph, name: str) -> bool:
    """Whether node ``name``'s output is a ReLU's (ReLU6's): an elementwise ``quant: relu`` node or a
    layer applying one itself (``attrs["fused"] == "relu"``, Keras' ``activation="relu"``)."""
    attrs = graph.by_name[name].attrs
    return attrs.get("quant") == "relu" or attrs.get("fused") == "relu"


def model_boundary(graph: LayerGraph, name: str) -> str | None:
    """``"input"`` or ``"output"`` when node ``name``'s output is the model's input or (on its grid) its
    only output; else None."""
    if graph.by_name[name].op == "input":
        return "input"
    if any(n.op == "output" and grid_source(graph, n.inputs[0]) == name for n in graph.nodes):
        return "output"
    return None


def output_end(graph: LayerGraph, readers: dict[str, list[Node]], name: str) -> str:
    """The tensor a layer's output is quantized at: after the ReLU that is its only reader, looking
    through grid-keeping ops (a folded batch norm's identity) on the way; else the layer's own output."""
    best = cur = graph.by_name[name]
    while True:
        after = readers[cur.name]
        if len(after) != 1 or after[0].attrs.get("quant") not in ("relu", "same"):
            return best.name
        cur = after[0]
        if cur.attrs.get("quant") == "relu":
            best = cur


def plan_sites(
    graph: LayerGraph,
    layers: dict[str, FakeQuantSpec],
    activation: FakeQuantSpec,
    method: str,
    quantize_outputs: bool = True,
) -> QuantPlan:
    """Plans the sites for the given layers.

    Args:
        graph: the float model's graph.
        layers: layer name -> kernel spec, for the layers to quantize.
        activation: the spec of every activation site.
        method: the method's name, kept in the plan.
        quantize_outputs: layer outputs get sites too; else only inputs are quantized (dynamic
            quantization, whose activation sites compute their range at run time).

    Returns:
        The plan.

    Raises:
        ValueError: a layer has no node in the graph.
    """
    readers = consumers(graph)
    by_layer = {n.layer: n for n in graph.nodes if n.layer is not None}
    acts: dict[str, ActSite] = {}
    sites: list[LayerSite] = []
    for layer, spec in layers.items():
        node = by_layer.get(layer)
        if node is None:
            raise ValueError(f"layer {layer!r} has no node in the model's graph")
        source = grid_source(graph, node.inputs[0])
        acts.setdefault(source, ActSite(source, activation))
        output = None
        if quantize_outputs:
            output = output_end(graph, readers, node.name)
            acts.setdefault(output, ActSite(output, activation))
        sites.append(LayerSite(layer, node.name, spec, source if quantize_outputs else None, output))
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    ordered = tuple(sorted(acts.values(), key=lambda a: order[a.node]))
    sites.sort(key=lambda s: order[s.node])
    outputs = [n for n in graph.nodes if n.op == "output"]
    grid = (grid_source(graph, outputs[0].inputs[0]),) if len(outputs) == 1 else ()
    return QuantPlan(ordered, tuple(sites), method, grid)


def float_between_sites(graph: LayerGraph, plan: QuantPlan) -> list[str]:
    """Float conv/dense layers whose input and (through ReLU / grid-keeping ops) output are quantized.

    onnxruntime (1.20+, ``WeightBiasQuantization``) quantizes the float weights of such a layer itself
    when it sees ``DequantizeLinear -> layer -> QuantizeLinear``, with parameters slimkit does not choose.
    """
    sites = {a.node for a in plan.acts}
    quantized = {s.layer for s in plan.layers}
    readers = consumers(graph)
    found = []
    for node in graph.nodes:
        if node.op not in QUANTIZABLE_KINDS or node.layer is None or node.layer in quantized:
            continue
        if grid_source(graph, node.inputs[0]) not in sites:
            continue
        cur = node
        while cur.name not in sites and len(readers[cur.name]) == 1 and \
                readers[cur.name][0].attrs.get("quant") in ("relu", "same"):
            cur = readers[cur.name][0]
        if cur.name in sites:
            found.append(node.layer)
    return found
