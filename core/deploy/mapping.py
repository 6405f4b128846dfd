"""Where a quantization plan's sites are in an exported float ONNX graph.

The exporters (torch.onnx, tf2onnx) rename tensors and transpose layouts, so sites are found by
value, not by name:

* a layer's kernel is the Conv / Gemm / MatMul weight initializer holding the same multiset of values
  (a transpose keeps it), recognised by its size, extremes and sums; identical kernels by node names;
* an activation site is the tensor whose values on a probe batch equal the framework's values at the
  site as a multiset, within float tolerance (compared by extremes, mean and RMS: see
  :class:`slimkit.quant.moments.Moments`; the framework side may come as those summaries already).
  Copies (Transpose, Reshape, Flatten, Identity) match
  too: the earliest in topological order is taken, except that a match feeding a Relu / Clip whose
  output also matches yields to that output (a pre-ReLU tensor with no negatives on the probe equals
  its ReLU output, and the plan quantizes after the ReLU).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from slimkit.deploy.runtime import feed
from slimkit.deploy.skeleton import skeleton
from slimkit.errors import ExportError
from slimkit.quant.moments import Moments, summaries

if TYPE_CHECKING:  # onnx is imported lazily: it is an optional extra
    import onnx

    from slimkit.quant.plan import QuantPlan

#: ONNX ops whose weight (input 1) is a quantizable kernel.
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")

#: Relative tolerance of activation matching (framework vs onnxruntime float round-off).
MATCH_TOLERANCE = 1e-3  # float32 round-off of deep networks reaches a few 1e-4 (see OnnxExport.tolerance)


@dataclass(frozen=True)
class QdqMapping:
    """Where each site of a plan lives in the ONNX graph.

    Attributes:
        sites: ``(site node, ONNX tensor)`` pairs, in plan order; the tensor is named as in the float
            model (in the QDQ model it is the tensor that QuantizeLinear reads).
        layers: ``(layer, ONNX node)`` pairs, in plan order; the node is named as in the QDQ model
            (a Keras Dense's MatMul + Add becomes one Gemm node there).
        weights: ``(layer, initializer)`` pairs: the integer kernel initializer of each layer in the
            QDQ model; empty for a mapping of the float model only.
    """

    sites: tuple[tuple[str, str], ...]
    layers: tuple[tuple[str, str], ...]
    weights: tuple[tuple[str, str], ...] = ()

    def tensor(self, site: str) -> str:
        """The ONNX tensor of activation site ``site``."""
        return dict(self.sites)[site]

    def node(self, layer: str) -> str:
        """The ONNX node of layer ``layer``."""
        return dict(self.layers)[layer]

    def weight(self, layer: str) -> str:
        """The integer kernel initializer of layer ``layer`` in the QDQ model."""
        return dict(self.weights)[layer]

    def rows(self) -> list[tuple[str, str, str]]:
        """``(kind, slimkit name, ONNX name)`` rows for a report: ``site`` rows, then ``layer`` rows."""
        return [("site", s, t) for s, t in self.sites] + [("layer", l, n) for l, n in self.layers]

    def __str__(self) -> str:
        rows = self.rows()
        if not rows:
            return "(no sites)"
        width = max(len(name) for _, name, _ in rows)
        return "\n".join(f"{kind:<5} {name:<{width}} -> {onnx_name}" for kind, name, onnx_name in rows)


def _initializers(model: "onnx.ModelProto") -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def own_weights(model: "onnx.ModelProto") -> None:
    """Gives every Conv/Gemm/MatMul whose weight reaches it through Identity nodes or a Constant node
    a plain initializer of its own, in place.

    torch.onnx deduplicates equal initializers (copies of one block, as ``nn.TransformerEncoder``
    makes) and feeds the duplicates through Identity nodes; quantizing a layer replaces its weight, so
    each layer needs its own. A weight two nodes read from one initializer (tied weights) is left shared.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def source(name: str) -> Any:
        seen = 0
        while name not in inits and name in producer and seen < 16:
            node = producer[name]
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                return numpy_helper.to_array(value.t) if value is not None else None
            if node.op_type != "Identity":
                return None
            name, seen = node.input[0], seen + 1
        return numpy_helper.to_array(inits[name]) if name in inits else None

    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or node.input[1] in inits:
            continue
        value = source(node.input[1])
        if value is None or value.dtype.kind != "f":
            continue
        name = f"{node.name or node.output[0]}/weight"
        while name in inits:
            name += "_"
        init = numpy_helper.from_array(value, name)
        model.graph.initializer.append(init)
        inits[name] = init
        node.input[1] = name


def map_layers(model: "onnx.ModelProto", plan: "QuantPlan", kernels: dict[str, np.ndarray]) -> dict[str, str]:
    """Each planned layer -> the name of the ONNX node whose weight has the kernel's values.

    Raises:
        ExportError: a layer's kernel is missing from ``kernels``, matches no node or several, or two
            layers match the same node.
    """
    inits = _initializers(model)
    candidates = [n for n in model.graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1
                  and n.input[1] in inits]
    signatures: dict[str, _Signature] = {}  # taken when first needed

    def signature(name: str) -> _Signature:
        if name not in signatures:
            signatures[name] = _Signature.of(inits[name])
        return signatures[name]

    out: dict[str, str] = {}
    taken: dict[str, str] = {}
    for site in plan.layers:
        if site.layer not in kernels:
            raise ExportError(f"no kernel given for quantized layer {site.layer!r}")
        node = _named_and_identical(site.layer, kernels[site.layer], candidates, inits)
        if node is not None:  # what the values-then-names search below finds, without summing every weight
            if node.name in taken:
                raise ExportError(
                    f"layers {taken[node.name]!r} and {site.layer!r} both match ONNX node {node.name!r}")
            taken[node.name] = site.layer
            out[site.layer] = node.name
            continue
        kernel = _Signature.of(kernels[site.layer])
        hits = [n for n in candidates if signature(n.input[1]).same(kernel)]
        if not hits:
            same_size = [n.name or n.output[0] for n in candidates if signature(n.input[1]).size == kernel.size]
            raise ExportError(
                f"layer {site.layer!r}: no Conv/Gemm/MatMul node of the ONNX graph has its kernel "
                f"({kernel.size} values) as weight; {unmapped_cause(same_size)}"
            )
        if len(hits) > 1:
            # Identical kernels (copies of one block, zero kernels of folded zero-gamma batch norms):
            # the exporters name nodes after module paths and layer names, which tells them apart.
            named = [n for n in hits if names_layer(n.name, site.layer)]
            if len(named) != 1:
                raise ExportError(
                    f"layer {site.layer!r}: its kernel matches several ONNX nodes "
                    f"({', '.join(n.name for n in hits)}) and {'none' if not named else 'several'} of their "
                    "names point to the layer; shared or identical kernels cannot be told apart"
                )
            hits = named
        node = hits[0]
        if node.name in taken:
            raise ExportError(
                f"layers {taken[node.name]!r} and {site.layer!r} both match ONNX node {node.name!r}"
            )
        taken[node.name] = site.layer
        out[site.layer] = node.name
    return out


def _named_and_identical(layer: str, kernel: np.ndarray, candidates: list[Any],
                         inits: dict[str, np.ndarray]) -> Any:
    """The one candidate node whose name points to ``layer`` when its weight is the kernel itself (same
    layout, same values: PyTorch's exports), else None. Among the nodes whose weights hold the kernel's
    values, that node is the one :func:`map_layers` picks by name anyway."""
    named = [n for n in candidates if names_layer(n.name, layer)]
    if len(named) != 1:
        return None
    weight = inits[named[0].input[1]]
    kernel = np.asarray(kernel)
    return named[0] if weight.shape == kernel.shape and np.array_equal(weight, kernel) else None


def unmapped_cause(same_size: list[str]) -> str:
    """The likely reason a layer's kernel is in no node of the exported graph, for messages.

    ``same_size``: the nodes whose weight has as many values as the kernel (other values)."""
    if same_size:
        shown = ", ".join(same_size[:3]) + (", ..." if len(same_size) > 3 else "")
        return (f"node(s) {shown} hold a weight of that size with other values, so the exporter most likely "
                "folded an op that follows the layer into its weight: a batch norm, which slimkit folds itself "
                "first unless the quantize stage sets fold_batchnorm: false (remove it), or a batch norm or "
                "constant scale (Mul/Add) that slimkit does not fold (one past a reshape or transpose between the "
                "layer and its scale); exclude that layer from the stage's layers")
    return ("the exporter removed or rewrote the layer (constant-folded, fused or split it); exclude it from the "
            "quantize stage's layers")


#: Values per chunk of :meth:`_Signature.of`'s float64 sums (512 KB).
_CHUNK = 1 << 16


@dataclass(frozen=True)
class _Signature:
    """What identifies a kernel's multiset of values whatever the exporter's layout: its size, extremes,
    and sums of values and squares (float64). Linear in the kernel's size, where comparing sorted copies
    costs a sort per kernel and candidate; kernels with equal signatures are told apart by node names."""

    size: int
    low: float
    high: float
    total: float
    squares: float
    scale: float

    @classmethod
    def of(cls, values: np.ndarray) -> "_Signature":
        a = np.asarray(values, dtype=np.float32).ravel()
        if not a.size:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        total = squares = scale = 0.0
        # float64 sums over cache-sized chunks: no float64 copy of the kernel (a ResNet50's 25M weights
        # are 200 MB of fresh pages as one copy, twice per export)
        for start in range(0, a.size, _CHUNK):
            part = a[start:start + _CHUNK].astype(np.float64)
            total += float(part.sum())
            squares += float(part @ part)
            scale += float(np.abs(part).sum())
        return cls(int(a.size), float(a.min()), float(a.max()), total, squares, scale)

    def same(self, other: "_Signature") -> bool:
        """Equal sizes and extremes; sums equal up to float64 summation order."""
        return (self.size == other.size and self.low == other.low and self.high == other.high
                and abs(self.total - other.total) <= 1e-9 * self.scale + 1e-30
                and abs(self.squares - other.squares) <= 1e-9 * self.squares + 1e-30)


def names_layer(node_name: str, layer: str) -> bool:
    """True if an ONNX node name contains the layer's path: its ``.``/``/``-separated parts in a row,
    each part equal to a part of the node name or to it less a ``_<n>`` suffix (tf2onnx's scopes).

    torch.onnx names ``enc.layers.0.linear1``'s node ``/model/enc/layers.0/linear1/MatMul``; tf2onnx
    names Keras layer ``dense``'s ``model_1/dense_1/MatMul``.
    """
    want = [p for p in re.split(r"[./]", layer) if p]
    have = [p for p in re.split(r"[./]", node_name) if p]
    if not want:
        return False

    def same(part: str, wanted: str) -> bool:
        return part == wanted or re.fullmatch(re.escape(wanted) + r"_\d+", part) is not None

    return any(all(same(have[i + j], w) for j, w in enumerate(want)) for i in range(len(have) - len(want) + 1))


def float_tensors(model: "onnx.ModelProto", light: "onnx.ModelProto | None" = None) -> list[str]:
    """Every float32 tensor of the graph (inputs, then node outputs) in topological order; ``light``:
    ``model``'s :func:`~slimkit.deploy.skeleton.skeleton`, whose shape inference is the same without
    copying the weights."""
    import onnx
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(light if light is not None else model)
    except Exception:  # shape inference is best effort; fall back to the declared types
        inferred = model
    types = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        types[value.name] = value.type.tensor_type.elem_type
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    for node in model.graph.node:
        names += [o for o in node.output if o]
    return [n for n in names if types.get(n) == onnx.TensorProto.FLOAT]


def probe_values(model: "onnx.ModelProto", probe: Any) -> tuple[list[str], dict[str, np.ndarray]]:
    """The values of every float tensor on ``probe``, run in onnxruntime with optimizations off (on the
    model's skeleton, fed its weights: see :mod:`slimkit.deploy.skeleton`).

    Returns:
        The tensor names in topological order, and name -> values.
    """
    import onnx
    import onnxruntime as ort

    try:
        light, weights = skeleton(model)
    except Exception as exc:  # an initializer numpy cannot read
        raise ExportError(f"quantized export: cannot read the float ONNX model's weights to find its tensors: {exc}") from exc
    names = float_tensors(model, light)
    outputs = {o.name for o in light.graph.output}
    graph_inputs = {i.name for i in light.graph.input}
    for name in names:
        if name not in outputs and name not in graph_inputs:
            light.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        sess = ort.InferenceSession(light.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feeds = feed([i for i in sess.get_inputs() if i.name not in weights], probe, "the float model")
        fetch = [o.name for o in sess.get_outputs()]
        results = sess.run(fetch, {**feeds, **weights})
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot run the float model on the probe: {exc}") from exc
    values = dict(zip(fetch, (np.asarray(r) for r in results)))
    values.update({name: array for name, array in feeds.items() if array.dtype.kind == "f"})
    return [n for n in names if n in values], values


def same_values(target: np.ndarray, ordered: np.ndarray) -> bool:
    """``ordered`` (sorted, flattened) equals the sorted ``target`` up to :data:`MATCH_TOLERANCE`."""
    if ordered.size != target.size:
        return False
    bound = MATCH_TOLERANCE * max(1.0, float(np.max(np.abs(target))) if target.size else 1.0)
    # Sorting is 1-Lipschitz in the max norm: equal multisets up to round-off sort to close arrays.
    return bool(np.max(np.abs(ordered - target), initial=0.0) <= bound)


#: Ops a layer's output passes through to its output site, or its input comes through from its input
#: site, in exported graphs (bias adds, activations, layout and shape changes, pooling).
_NEAR_OPS = ("Relu", "Clip", "Add", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity",
             "MaxPool", "Pad", "Cast")


def _anchored(model: "onnx.ModelProto", plan: "QuantPlan", layers: dict[str, str]) -> dict[str, list[str]]:
    """Candidate tensors of each site near its layer's node (found by weights, so unambiguous).

    When probe values cannot tell two sites apart (dead or saturated activations of untrained
    weights, say), the tensors next to the layer that reads or writes the site decide.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list["onnx.NodeProto"]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    by_name = {n.name: n for n in model.graph.node}
    inits = {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    near: dict[str, list[str]] = {}
    for s in plan.layers:
        node = by_name.get(layers.get(s.layer, ""))
        if node is None:
            continue
        if s.output is not None:
            chain, cur = [], node.output[0]
            while True:
                chain.append(cur)
                nxt = readers.get(cur, [])
                if len(nxt) != 1 or nxt[0].op_type not in _NEAR_OPS or not _unary(nxt[0], inits):
                    break
                cur = nxt[0].output[0]
            near.setdefault(s.output, []).extend(chain)
        if s.input is not None:
            chain, cur = [], node.input[0]
            while True:
                chain.append(cur)
                prev = producer.get(cur)
                if prev is None or prev.op_type not in _NEAR_OPS or not prev.input or not _unary(prev, inits):
                    break
                cur = prev.input[0]
            # farthest back first: a tensor several layers read is quantized once, at its producer
            near.setdefault(s.input, []).extend(reversed(chain))
    return near


def _unary(node: "onnx.NodeProto", inits: set[str]) -> bool:
    """True if every input but the first is a constant (a bias Add, a Reshape's shape), not a branch."""
    return all(not name or name in inits for name in node.input[1:])


def map_sites(
    model: "onnx.ModelProto",
    plan: "QuantPlan",
    act_values: "dict[str, np.ndarray | Moments]",
    order: list[str],
    values: dict[str, np.ndarray],
    layers: dict[str, str] | None = None,
) -> dict[str, str]:
    """Each activation site -> the ONNX tensor holding its values (see the module docstring).

    Args:
        act_values: activation site -> the framework's values of that tensor on the probe, or their
            :class:`~slimkit.quant.moments.Moments` (all the comparison reads).
        layers: layer -> ONNX node (from :func:`map_layers`); anchors sites to their layers' nodes
            when several tensors hold a site's values.

    Raises:
        ExportError: a site has no values in ``act_values`` or matches no tensor.
    """
    relu_of: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in ("Relu", "Clip") and node.input and node.output:
            relu_of.setdefault(node.input[0], node.output[0])
    near = _anchored(model, plan, layers or {})
    by_size: dict[int, list[str]] = {}
    for name in order:
        by_size.setdefault(values[name].size, []).append(name)
    moments: dict[str, Moments] = {}  # each tensor summarised once, when a site of its size first asks
    targets = summaries(act_values)

    def holds(name: str, target: Moments) -> bool:
        value = values.get(name)
        if value is None or value.size != target.size or value.dtype != np.float32:
            return False
        if name not in moments:
            moments[name] = Moments.of(value)
        return moments[name].close_to(target, MATCH_TOLERANCE)

    out: dict[str, str] = {}
    taken: set[str] = set()
    for site in plan.acts:
        if site.node not in targets:
            raise ExportError(f"no framework values given for activation site {site.node!r}")
        target = targets[site.node]
        # The tensors next to the site's layer first: when one holds the values, no other needs checking.
        anchored = [t for t in near.get(site.node, ()) if holds(t, target)]
        if anchored:
            chosen = anchored[0]
        else:
            hits = [name for name in by_size.get(target.size, ()) if holds(name, target)]
            if not hits:
                raise ExportError(
                    f"activation site {site.node!r}: no tensor of the ONNX graph has its values on the probe "
                    f"({target.size} values); the exported graph computes something else"
                )
            # Two sites can hold equal values on the probe (a residual add whose branch outputs zeros,
            # say): sites come in graph order, so a later one takes the first tensor not yet taken.
            chosen = ([h for h in hits if h not in taken] or hits)[0]
        while chosen in relu_of and holds(relu_of[chosen], target):
            chosen = relu_of[chosen]
        out[site.node] = chosen
        taken.add(chosen)
    return out


def map_model(
    model: "onnx.ModelProto",
    plan: "QuantPlan",
    kernels: dict[str, np.ndarray],
    act_values: "dict[str, np.ndarray | Moments]",
    probe: np.ndarray,
) -> QdqMapping:
    """The mapping of ``plan`` onto the float ``model`` (no ``weights``: nothing is quantized yet)."""
    import onnx

    model, original = onnx.ModelProto(), model
    model.CopyFrom(original)
    own_weights(model)
    layers = map_layers(model, plan, kernels)
    order, values = probe_values(model, probe)
    sites = map_sites(model, plan, act_values, order, values, layers)
    return QdqMapping(tuple((a.node, sites[a.node]) for a in plan.acts),
                      tuple((s.layer, layers[s.layer]) for s in plan.layers))
