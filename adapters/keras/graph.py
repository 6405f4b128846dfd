"""The call graph of a Keras 3 Sequential or Functional model, as slimkit's neutral LayerGraph.

One walk (:class:`Trace`) visits every layer call in topological order. Nested Sequential and
Functional models that are called once are inlined: their layers become nodes named
``outer/inner``, the same paths :func:`layers.walk` gives them. The walk either reads the recorded
symbolic tensors (to describe the graph) or runs each call on real tensors (to read inner layers'
outputs without building a feature-extractor model, which would add call nodes to the layers).

Keras 3 internals used: ``Functional._nodes_by_depth`` (what ``Functional._run_through_graph``
executes), ``Node.operation`` / ``.arguments`` / ``.outputs`` / ``.is_input``, and
``Sequential._functional``. tf_keras keeps a different graph structure and is not supported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

from slimkit.errors import UnsupportedModelError
from slimkit.graph import LayerGraph, Node
from slimkit.names import unique_name

from .layers import LayerEntry

OUTPUT = "__output__"

#: Activations that act on each value alone (f(x) per element); anything else (softmax over the
#: channel axis, glu, custom callables) is channel-mixing and gets an opaque node after the layer.
_ELEMENTWISE_ACTIVATIONS = (
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "swish",
    "hard_silu", "hard_swish", "sigmoid", "hard_sigmoid", "log_sigmoid", "sparse_sigmoid", "tanh",
    "hard_tanh", "tanh_shrink", "softplus", "softsign", "sparse_plus", "squareplus", "exponential",
    "mish", "soft_shrink", "hard_shrink",
)

#: Layers that act on each channel separately and keep the channel count (names in keras.layers).
_ELEMENTWISE_LAYERS = (
    "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianDropout", "GaussianNoise", "AlphaDropout", "ActivityRegularization", "Identity",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D",
    "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D",
    "UpSampling2D", "UpSampling3D",
)

#: n-ary merges computed per element: channel c of the output reads channel c of every input.
#: ``Subtract``, ``Average``, ``Maximum`` and ``Minimum`` tie channels exactly as ``Add`` does.
_MERGES = {"Add": "add", "Subtract": "add", "Average": "add", "Maximum": "add", "Minimum": "add",
           "Multiply": "multiply"}

#: Keras ops called on tensors (``x + y``, ``keras.ops.relu(x)``) whose effect is per element:
#: binary ones merge like the layers above; unary ones (or a binary one with a Python number) keep
#: channels. Any other op, or one given an array constant, is opaque.
_OPS_MODULES = ("keras.src.ops.numpy", "keras.src.ops.nn")
_BINARY_OPS = {"Add": "add", "Subtract": "add", "Maximum": "add", "Minimum": "add", "Multiply": "multiply"}
_UNARY_OPS = (
    "Abs", "Exp", "Tanh", "Negative", "Square", "Sqrt", "Relu", "Relu6", "Sigmoid", "Softplus",
    "Softsign", "Silu", "LeakyRelu", "HardSigmoid", "HardSilu", "Elu", "Selu", "Gelu", "Celu",
)

#: Layers whose output values are a subset or rearrangement of their input's (or zeros, which every
#: quantization grid holds): a quantized input stays on its grid, so quantization plans look back
#: through them (``attrs["quant"] == "same"``). GaussianDropout/GaussianNoise/AlphaDropout change
#: values and are not here.
_SAME_GRID_LAYERS = (
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "Identity", "Reshape", "Flatten", "ZeroPadding1D", "ZeroPadding2D",
    "ZeroPadding3D", "Permute", "Cropping1D", "Cropping2D", "Cropping3D",
)

#: Class attribute by which slimkit's fake-quant layers (``quant.py``) identify themselves, so that
#: this module can describe them without importing Keras: ``"activation"`` for a fake-quant op on
#: a tensor, ``"layer"`` for a conv/dense layer computing with fake-quantized weights.
FAKE_QUANT_ROLE = "slimkit_fake_quant"


def fake_quant_role(op: Any) -> str | None:
    """``"activation"``, ``"layer"`` or None: what kind of slimkit fake-quant layer ``op`` is."""
    return getattr(type(op), FAKE_QUANT_ROLE, None)


@dataclass
class Call:
    """One layer (or op) call met by the walk.

    Attributes:
        name: the node name (the layer path; ``path#i`` for the i-th call of a shared layer).
        path: the layer's path (``outer/inner``).
        op: the Keras layer or operation.
        node: the Keras call node (its recorded symbolic inputs and outputs).
        inputs: names of the calls (or the model input) whose outputs this call reads.
        shared: the op is called more than once in the whole model.
    """

    name: str
    path: str
    op: Any
    node: Any
    inputs: tuple[str, ...]
    shared: bool


@dataclass
class Trace:
    """The walk's result: the model input, every call in order, and the final output's producer."""

    input_name: str
    input_tensor: Any
    calls: list[Call]
    output: str
    # nested model path -> names of the calls feeding its inputs (for inlined models)
    model_inputs: dict[str, list[str]] = field(default_factory=dict)


def is_graph_model(model: Any, k: ModuleType) -> bool:
    """Plain Sequential or Functional (not a subclass of either: those may override ``call``)."""
    cls = type(model)
    if cls is k.Sequential:
        return True
    return cls.__name__ == "Functional" and cls.__module__.startswith(k.__name__ + ".")


def _functional_of(model: Any, k: ModuleType) -> Any:
    """The Functional whose graph runs ``model``: itself, or a Sequential's inner one (None if absent)."""
    if type(model) is k.Sequential:
        return getattr(model, "_functional", None)
    return model


def _ordered_nodes(fn: Any) -> list[Any]:
    """A Functional's call nodes in topological order (deepest first, as Keras runs them)."""
    by_depth = fn._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _flat_inputs_ok(fn: Any, node: Any, k: ModuleType) -> bool:
    """True if a nested model's call passes its inputs positionally, one tensor per model input."""
    fn_inputs = list(getattr(fn, "inputs", None) or [])
    kwargs_tensors = [v for v in k.tree.flatten(node.arguments.kwargs) if isinstance(v, k.KerasTensor)]
    return bool(fn_inputs) and len(node.arguments.keras_tensors) == len(fn_inputs) and not kwargs_tensors


class Walker:
    """Walks a Keras 3 graph model call by call, inlining nested graph models called once.

    Args:
        model: a built Sequential or Functional model with one input and one output.
        k: the keras module.

    Raises:
        UnsupportedModelError: the model has no functional graph (subclassed, tf_keras, a Sequential
            Keras could not trace), or several inputs or outputs.
    """

    def __init__(self, model: Any, k: ModuleType) -> None:
        self.model, self.k = model, k
        name = f"{getattr(model, 'name', '?')!r} ({type(model).__qualname__})"
        if k.__name__ != "keras":
            raise UnsupportedModelError(
                f"structured pruning supports Keras 3 models; the tf_keras model {name} has a graph "
                "structure slimkit does not read (rebuild it with Keras 3)"
            )
        if not is_graph_model(model, k) and hasattr(model, "_nodes_by_depth"):
            raise UnsupportedModelError(
                f"the Keras model {name} subclasses a Functional/Sequential model; structured pruning "
                "needs a plain Sequential or Functional model (its call() may not follow the graph, "
                "and Keras rebuilds subclasses as the base class): build it with keras.Model(inputs, outputs)"
            )
        if not is_graph_model(model, k):
            raise UnsupportedModelError(
                f"the subclassed Keras model {name} has no functional graph; structured pruning needs "
                "a Sequential or Functional model"
            )
        fn = _functional_of(model, k)
        if fn is None:
            raise UnsupportedModelError(
                f"the Sequential model {name} has no functional graph (Keras could not trace its "
                "layers symbolically); structured pruning needs one"
            )
        if len(fn.inputs) != 1 or len(fn.outputs) != 1:
            raise UnsupportedModelError(
                f"Keras model {name} has {len(fn.inputs)} inputs and {len(fn.outputs)} outputs; "
                "slimkit supports models with one input and one output"
            )
        self.fn = fn
        self.counts: dict[int, int] = {}
        self._count(model, set())

    def _count(self, model: Any, seen: set[int]) -> None:
        """Counts calls of every op over the whole model (each nested model's graph once)."""
        if id(model) in seen:
            return
        seen.add(id(model))
        fn = _functional_of(model, self.k)
        if fn is None:
            return
        for node in _ordered_nodes(fn):
            if node.is_input:
                continue
            op = node.operation
            self.counts[id(op)] = self.counts.get(id(op), 0) + 1
            if is_graph_model(op, self.k):
                self._count(op, seen)

    def inlined(self, op: Any, node: Any) -> bool:
        """True if the nested model ``op`` is walked into rather than kept as one opaque call."""
        return (
            is_graph_model(op, self.k)
            and self.counts.get(id(op), 0) == 1
            and _functional_of(op, self.k) is not None
            and _flat_inputs_ok(_functional_of(op, self.k), node, self.k)
        )

    def walk(self, run: Callable[[Any, tuple, dict], Any] | None = None, x: Any = None,
             visit: Callable[[Call, list[Any]], None] | None = None) -> Trace:
        """Visits every call in topological order.

        Args:
            run: None to read the recorded symbolic tensors; else ``run(op, args, kwargs)`` computes
                a call's outputs from real inputs (starting from ``x``).
            x: the input value when ``run`` is given.
            visit: called as ``visit(call, outputs)`` after each call, outputs flattened.
        """
        self._calls: list[Call] = []
        self._used: set[str] = set()
        self._call_index: dict[int, int] = {}
        self._model_inputs: dict[str, list[str]] = {}
        self._run, self._visit = run, visit
        input_tensor = self.fn.inputs[0]
        input_name = input_tensor._keras_history.operation.name
        self._used.add(input_name)
        names, values = self._model(self.fn, "", [input_name], [input_tensor if run is None else x])
        return Trace(input_name, input_tensor, self._calls, names[0], self._model_inputs)

    def _model(self, fn: Any, prefix: str, in_names: list[str], in_values: list[Any]) -> tuple[list[str], list[Any]]:
        names: dict[int, str] = {}
        values: dict[int, Any] = {}
        for t, n, v in zip(fn.inputs, in_names, in_values):
            names[id(t)], values[id(t)] = n, v
        for node in _ordered_nodes(fn):
            if node.is_input:
                continue
            tensors = node.arguments.keras_tensors
            if any(id(t) not in names for t in tensors):
                continue  # not computable from the inputs (Keras skips these too)
            op = node.operation
            path = prefix + op.name
            ins = [names[id(t)] for t in tensors]
            if self.inlined(op, node):
                self._model_inputs[path] = ins
                out_names, out_values = self._model(
                    _functional_of(op, self.k), path + "/", ins, [values[id(t)] for t in tensors]
                )
            else:
                shared = self.counts.get(id(op), 0) > 1
                name = self._unique(path, op, shared)
                call = Call(name, path, op, node, tuple(ins), shared)
                if self._run is None:
                    outs = list(node.outputs)
                else:
                    args, kwargs = node.arguments.fill_in(values)
                    outs = self.k.tree.flatten(self._run(op, args, kwargs))
                self._calls.append(call)
                if self._visit is not None:
                    self._visit(call, outs)
                out_names, out_values = [name] * len(node.outputs), outs
            for t, n, v in zip(node.outputs, out_names, out_values):
                names[id(t)], values[id(t)] = n, v
        return [names[id(t)] for t in fn.outputs], [values[id(t)] for t in fn.outputs]

    def _unique(self, path: str, op: Any, shared: bool) -> str:
        if shared:
            index = self._call_index.get(id(op), 0)
            self._call_index[id(op)] = index + 1
            name = f"{path}#{index}"
        else:
            name = path
        return unique_name(name, self._used, sep="#")


# ------------------------------------------------------------------------------------ the graph
def build_graph(walker: Walker, entries: dict[str, LayerEntry]) -> tuple[LayerGraph, Trace, dict[str, str]]:
    """The neutral graph of the walked model.

    Returns:
        The graph, the walk, and a map from each node name to the call whose output it is (extra
        nodes for channel-mixing activations map to their layer's call).
    """
    k = walker.k
    trace = walker.walk()
    nodes = [Node(trace.input_name, "input", (), _last(trace.input_tensor), attrs={"type_name": "InputLayer"})]
    final: dict[str, str] = {trace.input_name: trace.input_name}  # call name -> node holding its output
    source: dict[str, str] = {trace.input_name: trace.input_name}
    channels_of = {trace.input_name: _last(trace.input_tensor)}
    for call in trace.calls:
        inputs = tuple(final[n] for n in call.inputs)
        out_spec = call.node.outputs[0] if call.node.outputs else None
        in_specs = list(call.node.arguments.keras_tensors)
        channels = _last(out_spec)
        if any(_last(spec) != channels_of[n] for spec, n in zip(in_specs, inputs)):
            # It reads a tensor its input node does not describe (the 2nd output of a multi-output
            # op, a nested model's input declared without its channel count): describe nothing.
            note = f"{type(call.op).__name__} (an input the graph does not describe)"
            op, attrs, extra = "opaque", {"type_name": note}, None
        else:
            op, attrs, extra = describe(call, in_specs, out_spec, entries, k)
            if op in ("elementwise", "flatten"):
                grid = quant_grid(call.op, k)
                if grid is not None:
                    attrs = dict(attrs, quant=grid)
        layer = call.path if op in ("conv", "dense", "depthwise_conv", "batchnorm") else None
        nodes.append(Node(call.name, op, inputs, channels, layer, attrs))
        channels_of[call.name] = channels
        final[call.name] = source[call.name] = call.name
        if extra is not None:
            name = f"{call.name}:{extra}"
            nodes.append(Node(name, "opaque", (call.name,), channels,
                              attrs={"type_name": f"activation {extra!r} of {type(call.op).__name__}"}))
            final[call.name] = name
            source[name] = call.name
            channels_of[name] = channels
    last = final[trace.output]
    nodes.append(Node(OUTPUT, "output", (last,), channels_of[last]))
    source[OUTPUT] = trace.output
    return LayerGraph(nodes), trace, source


def _last(spec: Any) -> int | None:
    """The size of a tensor spec's last axis, or None (unknown, or no axis past the batch)."""
    shape = getattr(spec, "shape", None)
    if shape is None or len(shape) < 2 or shape[-1] is None:
        return None
    return int(shape[-1])


def _activation_name(fn: Any, k: ModuleType) -> str | None:
    """The name of a built-in element-wise activation ``fn`` is, or None."""
    for name in _ELEMENTWISE_ACTIVATIONS:
        if getattr(k.activations, name, None) is fn:
            return name
    return None


def quant_grid(op: Any, k: ModuleType) -> str | None:
    """How a one-input op treats a quantization grid: ``"relu"``, ``"same"`` or None.

    ``"relu"``: ReLU or ReLU6 (quantizing ``[0, max]`` after the layer before it clamps as they do).
    ``"same"``: the output's values are input values (or zeros), so they stay on the input's grid.
    """
    lay = k.layers
    cls = type(op)
    if cls is lay.Activation:
        relus = tuple(getattr(k.activations, n, None) for n in ("relu", "relu6"))
        return "relu" if op.activation in relus else None
    if cls is lay.ReLU:
        plain = not op.negative_slope and not op.threshold
        return "relu" if plain and op.max_value in (None, 6, 6.0) else None
    if not isinstance(op, lay.Layer):
        if cls.__module__ in _OPS_MODULES and cls.__name__ in ("Relu", "Relu6"):
            return "relu"
        return None
    if any(cls is getattr(lay, n, None) for n in _SAME_GRID_LAYERS):
        return "same"
    return None


def _activation_extra(op: Any, k: ModuleType) -> str | None:
    """None if the layer's fused activation is element-wise; else a label for an opaque node after it."""
    fn = getattr(op, "activation", None)
    if fn is None or _activation_name(fn, k) is not None:
        return None
    return getattr(fn, "__name__", None) or type(fn).__name__


def _channels_last(op: Any) -> bool:
    fmt = getattr(op, "data_format", None)
    return fmt is None or fmt == "channels_last"


def _axis_is_last(axis: Any, rank: int | None) -> bool:
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    if not isinstance(axis, int) or rank is None:
        return False
    return axis == -1 or axis == rank - 1


def _shape(spec: Any) -> tuple[int | None, ...] | None:
    shape = getattr(spec, "shape", None)
    return None if shape is None else tuple(None if d is None else int(d) for d in shape)


def _mergeable(in_specs: list[Any]) -> bool:
    """Merge inputs all have a known channel axis (a rank-1 operand would not tie channels)."""
    return bool(in_specs) and all(_last(spec) is not None for spec in in_specs)


def _describe_op(call: Call, in_specs: list[Any], attrs: dict[str, Any],
                 k: ModuleType) -> tuple[str, dict[str, Any], str | None]:
    """A Keras op called on tensors: element-wise ones as their layer twins, else opaque."""
    cls = type(call.op)
    attrs = dict(attrs, type_name=f"keras op {cls.__name__}")
    arguments = call.node.arguments
    others = [v for v in k.tree.flatten((arguments.args, arguments.kwargs)) if not isinstance(v, k.KerasTensor)]
    if cls.__module__ not in _OPS_MODULES or not all(v is None or isinstance(v, (bool, int, float)) for v in others):
        return "opaque", attrs, None
    tensors = len(in_specs)
    if cls.__name__ in _BINARY_OPS and tensors == 2:
        return (_BINARY_OPS[cls.__name__], attrs, None) if _mergeable(in_specs) else ("opaque", attrs, None)
    if (cls.__name__ in _BINARY_OPS or cls.__name__ in _UNARY_OPS) and tensors == 1:
        return "elementwise", attrs, None
    return "opaque", attrs, None


def describe(call: Call, in_specs: list[Any], out_spec: Any, entries: dict[str, LayerEntry],
             k: ModuleType) -> tuple[str, dict[str, Any], str | None]:
    """(neutral op, attrs, label of a channel-mixing fused activation or None) for one call.

    slimkit's fake-quant layers are described as what they compute: a fake-quant op on a tensor as
    ``elementwise``, a layer with fake-quantized weights as the layer it wraps.
    """
    op = call.op
    role = fake_quant_role(op)
    if role == "activation" and not call.shared and len(call.node.outputs) == 1:
        return "elementwise", {"type_name": type(op).__name__}, None
    if role == "layer":
        op = op.layer
    type_name = type(op).__name__
    attrs: dict[str, Any] = {"type_name": type_name}
    opaque = ("opaque", attrs, None)

    def why(note: str) -> tuple[str, dict[str, Any], None]:
        return "opaque", dict(attrs, type_name=f"{type_name} ({note})"), None

    if call.shared:
        return why("shared: called more than once")
    if len(call.node.outputs) != 1:
        return why(f"{len(call.node.outputs)} outputs")
    if not _channels_last(op):
        return why("channels_first")
    lay = k.layers
    cls = type(op)
    entry = entries.get(call.path)
    kind = entry.info.kind if entry is not None and entry.layer is op else None
    in_shape = _shape(in_specs[0]) if in_specs else None
    out_shape = _shape(out_spec)
    rank = len(in_shape) if in_shape is not None else None

    if cls in (lay.Conv1D, lay.Conv2D, lay.Conv3D):
        if getattr(op, "groups", 1) != 1:
            return why(f"groups={op.groups}")
        return ("conv", attrs, _activation_extra(op, k)) if kind == "conv" else opaque
    if cls is lay.Dense:
        return ("dense", attrs, _activation_extra(op, k)) if kind == "dense" else opaque
    if cls in tuple(getattr(lay, n) for n in ("DepthwiseConv1D", "DepthwiseConv2D") if hasattr(lay, n)):
        if getattr(op, "depth_multiplier", 1) != 1:
            return why(f"depth_multiplier={op.depth_multiplier}")
        return ("depthwise_conv", attrs, _activation_extra(op, k)) if kind == "depthwise_conv" else opaque
    if cls is lay.BatchNormalization:
        if not _axis_is_last(op.axis, rank):
            return why(f"axis={op.axis}")
        return ("batchnorm", attrs, None) if kind == "batchnorm" else opaque
    if cls is lay.Activation:
        if _activation_name(op.activation, k):
            return "elementwise", attrs, None
        label = getattr(op.activation, "__name__", None) or type(op.activation).__name__
        return "opaque", dict(attrs, type_name=f"Activation({label})"), None
    if cls in tuple(getattr(lay, n) for n in _ELEMENTWISE_LAYERS if hasattr(lay, n)):
        if in_shape is not None and out_shape is not None and in_shape[-1:] != out_shape[-1:]:
            return opaque  # e.g. a global pooling over a channels-first tensor
        return "elementwise", attrs, None
    if cls is getattr(lay, "Rescaling", None):
        scalar = all(isinstance(v, (int, float)) for v in (op.scale, op.offset))
        return ("elementwise", attrs, None) if scalar else opaque
    if type_name in _MERGES and cls is getattr(lay, type_name, None):
        return (_MERGES[type_name], attrs, None) if _mergeable(in_specs) else opaque
    if not isinstance(op, lay.Layer):
        return _describe_op(call, in_specs, attrs, k)
    if cls is lay.Concatenate:
        out_rank = len(out_shape) if out_shape is not None else None
        return ("concat", attrs, None) if _axis_is_last(op.axis, out_rank) else opaque
    if cls is lay.Flatten:
        if in_shape is None or out_shape is None or any(d is None for d in in_shape[1:]) or len(in_shape) < 2:
            return opaque
        spatial = math.prod(in_shape[1:-1])
        if out_shape[-1] != spatial * in_shape[-1]:
            return opaque
        return "flatten", dict(attrs, spatial=int(spatial), order="channels_last"), None
    if cls is lay.Permute:
        # Channels stay channels when the last axis stays last; spatial axes may move freely.
        return ("elementwise", attrs, None) if op.dims[-1] == len(op.dims) else opaque
    if cls is lay.Reshape:
        if in_shape is None or out_shape is None or len(out_shape) < 2:
            return opaque
        squeeze = lambda s: tuple(d for d in s[1:] if d != 1)  # noqa: E731
        if None in in_shape[1:] or None in out_shape[1:] or in_shape[-1] != out_shape[-1] \
                or squeeze(in_shape) != squeeze(out_shape):
            return opaque
        return "elementwise", attrs, None
    return opaque


# ------------------------------------------------------------------------------ layer outputs
def collect_outputs(walker: Walker, trace: Trace, source: dict[str, str], x: Any, names: list[str],
                    batch_size: int, dtype: Any) -> dict[str, Any]:
    """Inference outputs of the named graph nodes for ``x``, batch by batch, as float32 numpy.

    The model is run call by call on real tensors (layers default to inference mode), so no
    feature-extraction model is built and no layer gains a call node. Channels move to axis 1.

    Raises:
        KeyError: a name is no node of the graph.
    """
    import numpy as np

    k = walker.k
    wanted: dict[str, list[str]] = {}
    for name in names:
        if name not in source:
            raise KeyError(f"no layer or graph node named {name!r}")
        wanted.setdefault(source[name], []).append(name)
    parts: dict[str, list[Any]] = {name: [] for name in names}
    x = np.asarray(x)
    for start in range(0, len(x), max(1, int(batch_size))):
        batch = k.ops.convert_to_tensor(x[start:start + int(batch_size)], dtype=dtype)
        found: dict[str, Any] = {trace.input_name: batch}

        def visit(call: Call, outs: list[Any]) -> None:
            if call.name in wanted:
                found[call.name] = outs[0]

        walker.walk(run=lambda op, args, kwargs: op(*args, **kwargs), x=batch, visit=visit)
        for call_name, requested in wanted.items():
            value = np.asarray(k.ops.convert_to_numpy(found[call_name]), dtype=np.float32)
            for name in requested:
                parts[name].append(value)
    out = {}
    for name, chunks in parts.items():
        value = np.concatenate(chunks, axis=0)
        out[name] = np.moveaxis(value, -1, 1) if value.ndim >= 3 else value
    return out
