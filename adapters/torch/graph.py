"""A PyTorch model as slimkit's neutral :class:`~slimkit.graph.LayerGraph`, traced with ``torch.fx``.

Why ``torch.fx.symbolic_trace`` and not ``torch.export``: fx keeps each ``nn.Module`` call as one
``call_module`` node whose target is the module path (``layer1.0.conv1``), which is exactly the layer
name slimkit's adapter reports; ``torch.export`` decomposes modules into aten ops and only keeps the
path in metadata. fx needs no example input to trace (shapes come afterwards from ``ShapeProp`` on
a small sample), runs in milliseconds, and does not specialise or guard on shapes. Its limit, data-
dependent Python control flow, raises :class:`~slimkit.errors.UnsupportedModelError`.

Mapping (the channel axis is dim 1: NCL, NCHW, NCDHW, or (N, features)): every fx node that yields one
tensor becomes one neutral node named by its module path (``call_module``) or its fx name; nodes that
yield no tensor (``x.size(0)``, ``x.shape``) are left out, and ops reading them see only their tensor
inputs. Anything not recognised with certainty, including weighted modules called twice or sharing a
parameter, becomes ``opaque``: its channels are then left whole rather than guessed.

Elementwise and flatten nodes carry ``attrs["quant"]`` for quantization planning: ``relu`` for ReLU /
ReLU6 (``Hardtanh(0, 6)``), ``same`` for ops whose output values are input values or zeros (max
pooling, dropout, identity, reshapes, permutes, zero padding); other nodes have no such key.
slimkit's own fake-quant modules are traced as single elementwise calls.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from slimkit.data import as_inputs, head
from slimkit.errors import DataError, UnsupportedModelError
from slimkit.graph import LayerGraph, Node

from slimkit.adapters.torch import traces
from slimkit.adapters.torch.graph_ops import (
    _ADD,
    _CAT,
    _CONV,
    _DIV,
    _ELEMENTWISE_FUNCTIONS,
    _ELEMENTWISE_METHODS,
    _ELEMENTWISE_MODULES,
    _MUL,
    _PERMUTE,
    _POOL_FUNCTIONS,
    _POOL_MODULES,
    _REDUCE,
    _RESHAPE,
    _SELECT,
    _SLICE,
    _arg,
    _permutation,
    _plain_rnn,
    _quant_kind,
)
from slimkit.adapters.torch.naming import is_transposed_linear
from slimkit.adapters.torch.tracing import OUTPUT, is_fake_quant, neutral_names, propagate_shapes, trace


def build_graph(model: nn.Module, sample: Any) -> LayerGraph:
    """The neutral graph of ``model`` with shapes from ``sample``. See the module docstring."""
    if sample is None:
        raise DataError("graph: PyTorch needs a sample input batch to infer shapes")
    sample = head(as_inputs(sample, "graph: sample"), 2)
    gm = trace(model, "channel pruning and quantization planning", sample)
    if not traces.inherited_shapes(model, sample, gm):  # a batch-norm fold keeps every shape
        propagate_shapes(model, gm, sample)
    builder = _Builder(model, gm)
    traces.remember(model, sample, gm, builder.names)  # calibration reads this model's nodes next
    return builder.graph()


def node_names(model: nn.Module, gm: fx.GraphModule) -> dict[fx.Node, str]:
    """Neutral node name of each fx node (module path for module calls), as :func:`build_graph` uses."""
    return _Builder(model, gm).names


def unshaped_node_names(model: nn.Module, gm: fx.GraphModule) -> dict[str, fx.Node]:
    """Neutral name -> fx node without shape propagation (no sample at hand), for locating graph nodes.

    Every node but the output is named as if it yielded a tensor. The names of the nodes that do
    yield tensors are those :func:`build_graph` gives them, except where a non-tensor node (``x.size(0)``)
    would take a module path as name or a module is called for non-tensor results as well, neither of
    which a model with one tensor per module call does.
    """
    names = neutral_names(dict(model.named_modules()), gm, lambda node: node.op != "output")
    return {name: node for node, name in names.items()}


# ---------------------------------------------------------------------------------------------- internals
def _meta(node: Any) -> TensorMetadata | None:
    """Shape metadata of an fx node yielding one tensor, else None."""
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return meta if isinstance(meta, TensorMetadata) else None


def _yields_tensors(node: fx.Node) -> bool:
    """True if the node's value is or contains a tensor (after ShapeProp)."""
    return "tensor_meta" in node.meta


def _type_name(node: fx.Node, module: nn.Module | None) -> str:
    if module is not None:
        return type(module).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "get_attr":
        return f"attribute {node.target}"
    target = node.target
    name = getattr(target, "__name__", str(target))
    mod = getattr(target, "__module__", None) or ""
    return f"{mod.replace('torch.nn.functional', 'F')}.{name}" if mod else name



class _Builder:
    """Maps one shape-propagated fx graph to neutral nodes."""

    def __init__(self, model: nn.Module, gm: fx.GraphModule) -> None:
        self.model, self.gm = model, gm
        self.modules = dict(model.named_modules())
        calls: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        self.calls = calls
        self.tied = self._tied_modules()
        self.names = neutral_names(self.modules, gm, _yields_tensors)
        # The channel axis of each tensor: 1 for NC... layouts; the last one for token tensors (N, T, C),
        # which Linear layers on rank-3 inputs produce (transformer feed-forward units).
        self.axis: dict[fx.Node, int] = {}
        self.mapped: set[fx.Node] = set()  # nodes given a neutral op other than opaque
        self.rnn_calls: set[fx.Node] = set()  # recurrent layers mapped as dense nodes

    def _tied_modules(self) -> set[str]:
        """Called modules whose parameters some other module or a direct attribute read also uses."""
        users: dict[int, set[str]] = {}
        for node in self.gm.graph.nodes:
            if node.op == "call_module":
                for t in self.modules[node.target].parameters():
                    users.setdefault(id(t), set()).add(node.target)
            elif node.op == "get_attr":
                try:
                    value = _resolve(self.model, node.target)
                except AttributeError:
                    continue
                if isinstance(value, torch.Tensor):
                    users.setdefault(id(value), set()).add(f"<attr {node.target}>")
        tied: set[str] = set()
        for names in users.values():
            if len(names) > 1:
                tied.update(n for n in names if not n.startswith("<attr"))
        return tied

    def graph(self) -> LayerGraph:
        nodes: list[Node] = []
        for node in self.gm.graph.nodes:
            if node.op == "output":
                nodes.append(self._output(node))
            elif node in self.names and not self._unused_state(node):
                nodes.append(self._node(node))
        return LayerGraph(nodes)

    def _unused_state(self, node: fx.Node) -> bool:
        """The final states of a recurrent layer (``out, _ = self.rnn(x)``) that nothing reads."""
        return node.op == "call_function" and node.target is operator.getitem and not node.users and \
            node.args[0] in self.rnn_calls and node.args[1] != 0

    def _output(self, node: fx.Node) -> Node:
        """The output node: the tensor slimkit reads (as ``inputs.first_tensor``: the tensor, a
        ``logits`` entry, or the first tensor of a tuple/list/dict) first, then every other tensor
        output, so that pruning leaves all of them whole."""
        result = node.args[0]
        if isinstance(result, dict) or hasattr(result, "keys"):
            values = [result["logits"]] if "logits" in result else []
            values += list(result.values())
        elif isinstance(result, (tuple, list)):
            values = list(result)
        else:
            values = [result]
        tensors = list(dict.fromkeys(v for v in values if isinstance(v, fx.Node) and _meta(v) is not None
                                     and v in self.names))
        if not tensors:
            what = "a value that is not a tensor" if isinstance(result, fx.Node) else type(result).__name__
            raise UnsupportedModelError(
                f"{type(self.model).__qualname__} returns {what} with no tensor in it; channel pruning and "
                "quantization read a tensor output, the logits of a transformers output, or the first tensor of "
                "a tuple, list or dict"
            )
        first = tensors[0]
        return Node(OUTPUT, "output", tuple(self.names[t] for t in tensors),
                    _channels(_meta(first), self.axis.get(first, 1)))

    def _inputs(self, node: fx.Node) -> list[fx.Node]:
        """fx nodes yielding tensors among the node's arguments, in argument order (lists flattened)."""
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n in self.names else None)
        return found

    def _node(self, node: fx.Node) -> Node:
        name = self.names[node]
        meta = _meta(node)
        ins = self._inputs(node)
        in_names = tuple(self.names[i] for i in ins)
        if node.op == "placeholder":
            self.axis[node] = 1
            return Node(name, "input", (), _channels(meta))
        module = self.modules.get(node.target) if node.op == "call_module" else None
        # A weighted module slimkit cannot prune through (a grouped convolution, a Linear reading a tensor
        # whose channels are not its last axis) is opaque, but still its layer's node: quantization plans
        # its sites there and batch-norm folding folds into it.
        weighted = isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) or is_transposed_linear(module)
        layer_of_opaque = node.target if weighted and self.calls.get(node.target, 0) == 1 and \
            node.target not in self.tied else None
        # an opaque op's rank-3 output is taken as tokens (N, T, C): its space is blocked either way, and
        # the Linear layers it feeds are then dense layers whose output units can be pruned
        self.axis[node] = 2 if meta is not None and len(meta.shape) == 3 else 1
        opaque = Node(name, "opaque", in_names, _channels(meta, self.axis[node]) if meta else None,
                      layer_of_opaque, attrs={"type_name": _type_name(node, module)})
        recurrent = self._map_recurrent(node, module, ins)
        if recurrent is not None:
            op, channels, axis = recurrent
            self.axis[node] = axis
            self.mapped.add(node)
            layer = node.target if op == "dense" else None
            return Node(name, op, in_names, channels, layer, {"type_name": _type_name(node, module)})
        if meta is None or len(meta.shape) < 2:
            return opaque  # a tuple of tensors, or no channel axis
        mapped = self._map(node, module, ins, meta) if node.op != "get_attr" else None
        if mapped is None:
            return opaque
        op, inputs, attrs = mapped
        self.mapped.add(node)
        self.axis[node] = attrs.pop("axis", None) if "axis" in attrs else (
            self.axis[inputs[0]] if op in ("elementwise", "add", "multiply", "concat") else 1)
        layer = node.target if op in ("conv", "dense", "depthwise_conv", "batchnorm") else None
        attrs = dict(attrs, type_name=_type_name(node, module))
        if op in ("elementwise", "flatten"):
            quant = _quant_kind(node, module)
            if quant is not None:
                attrs["quant"] = quant
        return Node(name, op, tuple(self.names[i] for i in inputs), _channels(meta, self.axis[node]), layer, attrs)

    def _map_recurrent(self, node: fx.Node, module: nn.Module | None,
                       ins: list[fx.Node]) -> tuple[str, int, int] | None:
        """(op, channels, axis) for a one-layer unidirectional LSTM/GRU/RNN (``dense``: it consumes the
        input's last axis and produces ``hidden_size`` units) and for its output sequence (``output[0]``,
        ``elementwise``); None otherwise (its final states, ``output[1]``, stay opaque)."""
        if module is not None and _plain_rnn(module):
            src = _meta(ins[0]) if len(ins) == 1 else None
            if src is None or len(src.shape) != 3 or self.calls[node.target] > 1 or node.target in self.tied or \
                    not self._features_last(ins[0]):
                return None
            self.rnn_calls.add(node)
            return "dense", int(module.hidden_size), 2
        if node.op == "call_function" and node.target is operator.getitem and node.args[0] in self.rnn_calls \
                and node.args[1] == 0:
            return "elementwise", int(self.modules[node.args[0].target].hidden_size), 2
        return None

    # -- op recognition: (op, tensor inputs, attrs) or None for opaque ---------------------------------
    def _map(self, node: fx.Node, module: nn.Module | None, ins: list[fx.Node],
             meta: TensorMetadata) -> tuple[str, list[fx.Node], dict[str, Any]] | None:
        if any(_meta(i) is None for i in ins):
            return None  # reads a tuple of tensors
        if module is not None:
            return self._map_module(node, module, ins, meta)
        target = node.target
        if target in _ADD or target in _MUL:
            return self._map_binary("add" if target in _ADD else "multiply", ins, meta)
        if target in _DIV:
            # x / scalar keeps zeros zero; tensor / tensor and scalar / x do not
            first = node.args[0] if node.args else None
            if len(ins) == 1 and first is ins[0]:
                return self._channelwise(ins, meta)
            return None
        if target in _CAT:
            return self._map_cat(node, ins, meta)
        if target in _RESHAPE:
            return self._map_reshape(ins, meta)
        if target in _PERMUTE:
            return self._map_permute(node, ins, meta)
        if target is operator.getitem or target in _SELECT or target in _SLICE:
            return self._map_index(node, ins, meta)
        if target in _REDUCE:
            return self._map_reduce(node, ins, meta)
        if target in _POOL_FUNCTIONS:
            if len(ins) == 1 and len(_meta(ins[0]).shape) == _POOL_FUNCTIONS[target] + 2 and self.axis[ins[0]] == 1:
                return self._channelwise(ins, meta)
            return None
        if (node.op == "call_function" and target in _ELEMENTWISE_FUNCTIONS) or \
                (node.op == "call_method" and target in _ELEMENTWISE_METHODS):
            return self._channelwise(ins, meta)
        return None

    def _map_module(self, node: fx.Node, module: nn.Module, ins: list[fx.Node],
                    meta: TensorMetadata) -> tuple[str, list[fx.Node], dict[str, Any]] | None:
        if len(ins) != 1:
            return None
        in_meta = _meta(ins[0])
        rank = len(in_meta.shape)
        if self.axis[ins[0]] != 1 and not isinstance(module, nn.Linear) and not is_transposed_linear(module) and \
                not isinstance(module, _ELEMENTWISE_MODULES) and not is_fake_quant(module):
            return None  # convolutions, norms and pools read the channels on dim 1
        weighted = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
        if weighted and (self.calls[node.target] > 1 or node.target in self.tied):
            return None  # shared weights: pruning one use would change the other
        kind = type(module)
        for cls, spatial in _CONV.items():
            if isinstance(module, cls):
                if rank != spatial + 2 or not (kind is cls or _parametrized(kind, cls)):
                    return None
                if module.groups == 1:
                    return "conv", ins, {}
                if module.groups == module.in_channels == module.out_channels:
                    return "depthwise_conv", ins, {}
                return None
        if is_transposed_linear(module) or \
                (isinstance(module, nn.Linear) and (kind is nn.Linear or _parametrized(kind, nn.Linear))):
            if rank == 2:
                return "dense", ins, {}
            # on tokens (N, ..., features) a Linear (or transformers' Conv1D) maps the last axis
            return ("dense", ins, {"axis": rank - 1}) if self._features_last(ins[0]) else None
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and kind.__module__.startswith("torch.nn"):
            has_state = module.affine or module.track_running_stats
            return ("batchnorm" if has_state else "elementwise"), ins, {}
        if isinstance(module, nn.Flatten):
            return self._map_reshape(ins, meta)
        if isinstance(module, tuple(_POOL_MODULES)):
            spatial = next(r for c, r in _POOL_MODULES.items() if isinstance(module, c))
            return self._channelwise(ins, meta) if rank == spatial + 2 else None
        if isinstance(module, _ELEMENTWISE_MODULES) and kind.__module__.startswith("torch.nn"):
            return self._channelwise(ins, meta)
        if is_fake_quant(module):
            return self._channelwise(ins, meta)
        return None

    def _source_op(self, node: fx.Node) -> str:
        """``placeholder``, ``opaque`` (the node has no recognised mapping) or ``mapped``."""
        if node.op == "placeholder":
            return "placeholder"
        return "mapped" if node in self.mapped else "opaque"

    def _features_last(self, node: fx.Node) -> bool:
        """True if ``node``'s channels are its last axis, or its space is blocked anyway (a model input or an
        op slimkit does not describe), so that a layer mapping the last axis may read it."""
        meta = _meta(node)
        return (meta is not None and self.axis[node] == len(meta.shape) - 1) or \
            self._source_op(node) in ("placeholder", "opaque")

    def _channelwise(self, ins: list[fx.Node], meta: TensorMetadata) -> tuple[str, list[fx.Node], dict[str, Any]] | None:
        """Elementwise if one tensor goes in and batch and channel dims come out unchanged at rank >= 2."""
        if len(ins) != 1:
            return None
        src, axis = _meta(ins[0]), self.axis[ins[0]]
        if src is None or len(src.shape) != len(meta.shape) or src.shape[0] != meta.shape[0] or \
                src.shape[axis] != meta.shape[axis]:
            return None
        return "elementwise", ins, {}

    def _map_binary(self, op: str, ins: list[fx.Node], meta: TensorMetadata):
        tensors = [i for i in ins if len(_meta(i).shape) > 0]  # 0-d tensors act as scalars
        if len(tensors) == 1:
            return self._channelwise(tensors, meta)
        axis = self.axis[tensors[0]]
        if not tensors or any(len(_meta(i).shape) != len(meta.shape) or self.axis[i] != axis for i in tensors):
            return None  # broadcasting that moves the channel axis: cannot tell which axis ties
        if any(_meta(i).shape[axis] not in (1, meta.shape[axis]) for i in tensors):
            return None
        return op, tensors, {}

    def _map_permute(self, node: fx.Node, ins: list[fx.Node], meta: TensorMetadata):
        """A permute / transpose that keeps the batch dim first; the channel axis moves with it."""
        if len(ins) != 1:
            return None
        rank, axis = len(_meta(ins[0]).shape), self.axis[ins[0]]
        order = _permutation(node, rank)
        if order is None or order[0] != 0:
            return None
        return "elementwise", ins, {"axis": order.index(axis)}

    def _map_index(self, node: fx.Node, ins: list[fx.Node], meta: TensorMetadata):
        """Indexing that keeps the batch and channel axes whole (``x[:, -1]`` of a sequence, a time slice):
        elementwise, the channel axis shifted left by the dims an integer index removed."""
        if len(ins) != 1 or node.args[0] is not ins[0]:
            return None
        rank, axis = len(_meta(ins[0]).shape), self.axis[ins[0]]
        if node.target in _SELECT or node.target in _SLICE:
            dim = _arg(node, 1, "dim", 0)
            if not isinstance(dim, int) or dim % rank in (0, axis):
                return None
            removed = [dim % rank] if node.target in _SELECT else []
        else:
            index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
            if len(index) > rank or not index or index[0] != slice(None) or \
                    any(not isinstance(i, (int, slice)) for i in index):
                return None
            if axis < len(index) and index[axis] != slice(None):
                return None
            removed = [d for d, i in enumerate(index) if isinstance(i, int)]
        new_axis = axis - sum(d < axis for d in removed)
        if len(meta.shape) != rank - len(removed) or meta.shape[new_axis] != _meta(ins[0]).shape[axis]:
            return None
        return "elementwise", ins, {"axis": new_axis}

    def _map_cat(self, node: fx.Node, ins: list[fx.Node], meta: TensorMetadata):
        seq = _arg(node, 0, "tensors")
        dim = _arg(node, 1, "dim", 0)
        if not isinstance(seq, (list, tuple)) or not isinstance(dim, int):
            return None
        parts = list(seq)
        if not all(isinstance(p, fx.Node) and _meta(p) is not None for p in parts):
            return None
        rank = len(meta.shape)
        if any(len(_meta(p).shape) != rank or self.axis[p] != self.axis[parts[0]] for p in parts) or \
                dim % rank != self.axis[parts[0]]:
            return None
        return "concat", parts, {}

    def _map_reshape(self, ins: list[fx.Node], meta: TensorMetadata):
        """(N, C, *S) -> (N, C*prod(S)) is a channels-first flatten; (N, C, ...) -> (N, C, ...) keeps channels."""
        if len(ins) != 1:
            return None
        src = tuple(_meta(ins[0]).shape)
        out = tuple(meta.shape)
        if len(src) < 2:
            return None
        if self.axis[ins[0]] != 1:
            return ("elementwise", ins, {}) if out == src else None  # tokens: only a no-op reshape is known
        if len(src) > 2 and out == (src[0], math.prod(src[1:])) and math.prod(src[2:]) > 1:
            return "flatten", ins, {"spatial": math.prod(src[2:]), "order": "channels_first"}
        if len(out) >= 2 and out[:2] == src[:2]:
            # also (N, C, 1, 1) -> (N, C): a flatten with one position per channel is the identity on channels
            return "elementwise", ins, {}  # spatial dims merged or split; channel c stays channel c
        return None

    def _map_reduce(self, node: fx.Node, ins: list[fx.Node], meta: TensorMetadata):
        """Mean / sum / max over dims that exclude batch and channel keep channels (any keepdim)."""
        if len(ins) != 1:
            return None
        src, axis = tuple(_meta(ins[0]).shape), self.axis[ins[0]]
        dims = _arg(node, 1, "dim")
        if dims is None:
            return None
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if not dims or not all(isinstance(d, int) for d in dims) or any(d % len(src) in (0, axis) for d in dims):
            return None
        out = tuple(meta.shape)
        new_axis = axis if len(out) == len(src) else axis - sum(d % len(src) < axis for d in dims)
        if len(out) < 2 or out[0] != src[0] or out[new_axis] != src[axis]:
            return None
        return "elementwise", ins, {"axis": new_axis}


def _parametrized(kind: type, base: type) -> bool:
    """True for the class ``torch.nn.utils.parametrize`` makes for a masked module of class ``base``."""
    return kind.__module__ == "torch.nn.utils.parametrize" and base in kind.__bases__


def _resolve(model: nn.Module, target: str) -> Any:
    value: Any = model
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _channels(meta: TensorMetadata | None, axis: int = 1) -> int | None:
    if meta is None or len(meta.shape) < 2:
        return None
    return int(meta.shape[axis])

