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

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

from slimkit.adapter.structure import MODEL_OUTPUT
from slimkit.errors import UnsupportedModelError
from slimkit.graph import LayerGraph, Node
from slimkit.names import unique_name

from .layers import LayerEntry
from .node_kinds import describe, last_channels, quant_grid

OUTPUT = "__output__"

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
        nodes = _ordered_nodes(fn)
        # A real run drops each value after its last reader: holding every activation of the batch
        # until the walk ends would make calibration's memory the whole model's activations.
        last_read: dict[int, int] = {}
        if self._run is not None:
            for index, node in enumerate(nodes):
                for t in node.arguments.keras_tensors:
                    last_read[id(t)] = index
            for t in fn.outputs:
                last_read[id(t)] = len(nodes)
        for index, node in enumerate(nodes):
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
            if self._run is not None:
                for t in [*tensors, *node.outputs]:
                    if last_read.get(id(t), -1) <= index:
                        values.pop(id(t), None)
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
    nodes = [Node(trace.input_name, "input", (), last_channels(trace.input_tensor), attrs={"type_name": "InputLayer"})]
    final: dict[str, str] = {trace.input_name: trace.input_name}  # call name -> node holding its output
    source: dict[str, str] = {trace.input_name: trace.input_name}
    channels_of = {trace.input_name: last_channels(trace.input_tensor)}
    for call in trace.calls:
        inputs = tuple(final[n] for n in call.inputs)
        out_spec = call.node.outputs[0] if call.node.outputs else None
        in_specs = list(call.node.arguments.keras_tensors)
        channels = last_channels(out_spec)
        if any(last_channels(spec) != channels_of[n] for spec, n in zip(in_specs, inputs)):
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


def collect_outputs(walker: Walker, trace: Trace, source: dict[str, str], x: Any, names: list[str],
                    batch_size: int, dtype: Any) -> dict[str, Any]:
    """Inference outputs of the named graph nodes for ``x``, batch by batch, as float32 numpy.

    The model is run call by call on real tensors (layers default to inference mode), so no
    feature-extraction model is built and no layer gains a call node. Channels move to axis 1.

    Raises:
        KeyError: a name is no node of the graph.
    """
    import numpy as np

    parts: dict[str, list[Any]] = {name: [] for name in names}
    # copied now: the walk frees (and TensorFlow reuses) a tensor's buffer after its last reader
    stream_outputs(walker, trace, source, x, names, lambda name, value: parts[name].append(np.array(value)),
                   batch_size, dtype)
    missing = [name for name, chunks in parts.items() if not chunks]
    if missing and len(x):
        raise UnsupportedModelError(f"reading layer outputs: the model's call never computed {missing[0]!r}")
    # One batch (the usual calibration probe) needs no concatenating copy.
    return {name: chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0) for name, chunks in parts.items()}


def stream_outputs(walker: Walker, trace: Trace, source: dict[str, str], x: Any, names: list[str],
                   consume: Callable[[str, Any], None], batch_size: int, dtype: Any) -> None:
    """:func:`collect_outputs`' values handed to ``consume(name, values)`` as the walk computes each
    (float32 numpy, channels on axis 1; possibly a view of TensorFlow's buffer, valid during the call),
    so a pass holds no tensor after its last reader.

    Raises:
        KeyError: a name is no node of the graph.
    """
    import numpy as np

    k = walker.k
    wanted: dict[str, list[str]] = {}
    for name in names:
        if name == MODEL_OUTPUT:  # the walk's last call gives the model's (single) output
            wanted.setdefault(trace.output, []).append(name)
            continue
        if name not in source:
            raise KeyError(f"no layer or graph node named {name!r}")
        wanted.setdefault(source[name], []).append(name)

    def hand_over(call_name: str, tensor: Any) -> None:
        value = np.asarray(k.ops.convert_to_numpy(tensor), dtype=np.float32)
        for name in wanted[call_name]:
            moved = value
            if name != MODEL_OUTPUT and value.ndim >= 3:
                moved = np.moveaxis(value, -1, 1)
            consume(name, moved)

    x = np.asarray(x)
    for start in range(0, len(x), max(1, int(batch_size))):
        batch = k.ops.convert_to_tensor(x[start:start + int(batch_size)], dtype=dtype)
        if trace.input_name in wanted:
            hand_over(trace.input_name, batch)

        def visit(call: Call, outs: list[Any]) -> None:
            if call.name in wanted:
                hand_over(call.name, outs[0])

        walker.walk(run=lambda op, args, kwargs: op(*args, **kwargs), x=batch, visit=visit)
