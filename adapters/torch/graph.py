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
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from slimkit.data import as_inputs, head
from slimkit.errors import DataError, UnsupportedModelError
from slimkit.graph import LayerGraph, Node

from slimkit.adapters.torch.tracing import OUTPUT, is_fake_quant, neutral_names, propagate_shapes, trace


_CONV = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_POOL_MODULES = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3,
    nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
    nn.LPPool1d: 1, nn.LPPool2d: 2,
}
#: Parameter-free modules that act on each channel separately (shape is checked too).
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.GELU, nn.LeakyReLU,
    nn.ELU, nn.CELU, nn.SELU, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Softsign, nn.Tanhshrink,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
)


_ATEN = torch.ops.aten


def _aten(*names: str) -> set[Any]:
    """aten overloads (``add.Tensor``) as the nodes of a torch.export capture (``capture.py``) name them."""
    found = set()
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(_ATEN, packet, None)
        if op is not None and hasattr(op, overload or "default"):
            found.add(getattr(op, overload or "default"))
    return found


def _functions(*names: str, module: Any = F) -> set[Callable[..., Any]]:
    return {getattr(module, n) for n in names if hasattr(module, n)}


#: call_function targets that act on each channel separately (one tensor in, same dims 0 and 1 out).
_ELEMENTWISE_FUNCTIONS = (
    _functions("relu", "relu_", "relu6", "silu", "hardswish", "hardsigmoid", "sigmoid", "tanh", "gelu",
               "leaky_relu", "leaky_relu_", "elu", "elu_", "celu", "selu", "hardtanh", "hardtanh_", "mish",
               "softplus", "softsign", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
               "feature_alpha_dropout", "interpolate", "upsample", "pad")
    | _functions("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "clip_",
                 "dropout", "neg", "abs", "square", module=torch)
    | {operator.neg, operator.pos}
    | _aten("relu", "relu_", "hardtanh", "hardtanh_", "gelu", "silu", "silu_", "sigmoid", "tanh", "hardswish",
            "hardsigmoid", "leaky_relu", "elu", "mish", "softplus", "dropout", "clone", "clamp", "clamp_min",
            "neg", "abs", "pad", "constant_pad_nd", "alias", "detach", "contiguous", "upsample_nearest2d.vec",
            "upsample_bilinear2d.vec")
)
_POOL_FUNCTIONS = {getattr(F, f"{kind}{r}d"): r for r in (1, 2, 3)
                   for kind in ("max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool")
                   if hasattr(F, f"{kind}{r}d")}
_POOL_FUNCTIONS.update({op: r for r in (1, 2, 3)
                        for op in _aten(f"max_pool{r}d", f"avg_pool{r}d", f"adaptive_avg_pool{r}d")})
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "clip_", "neg", "abs",
    "square", "contiguous", "clone", "detach", "float", "to",
}
_ADD = {operator.add, operator.sub, torch.add, torch.sub, "add", "add_", "sub", "sub_", "__add__", "__sub__"} \
    | _aten("add.Tensor", "add_.Tensor", "sub.Tensor", "sub_.Tensor")
_MUL = {operator.mul, torch.mul, "mul", "mul_", "__mul__"} | _aten("mul.Tensor", "mul_.Tensor")
_DIV = {operator.truediv, torch.div, torch.true_divide, "div", "div_", "__truediv__", "true_divide"} \
    | _aten("div.Tensor")
_CAT = _functions("cat", "concat", "concatenate", module=torch) | _aten("cat")
_RESHAPE = {torch.flatten, torch.reshape, "flatten", "view", "reshape"} \
    | _aten("view", "reshape", "flatten.using_ints", "_unsafe_view")
_REDUCE = {torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"} \
    | _aten("mean.dim", "sum.dim_IntList", "amax", "amin")
_PERMUTE = {torch.permute, torch.transpose, "permute", "transpose"} | _aten("permute", "transpose.int")

# -- what an elementwise op does to quantized values (``attrs["quant"]``, see slimkit.quant.plan) --------
#: ReLU and ReLU6: quantizing ``[0, max]`` clamps as they do (modules: nn.ReLU and Hardtanh(0, 6)).
_RELU_FUNCTIONS = _functions("relu", "relu_", "relu6") | _functions("relu", "relu_", module=torch) \
    | _aten("relu", "relu_")
_HARDTANH_FUNCTIONS = _functions("hardtanh", "hardtanh_") | _aten("hardtanh", "hardtanh_")
_PAD_FUNCTIONS = {F.pad} | _aten("pad", "constant_pad_nd")
#: Ops whose output values are input values (selected, rearranged) or zeros, so they stay on the grid.
_SAME_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.Identity, nn.Flatten, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
)
_SAME_FUNCTIONS = (
    {getattr(F, f"{kind}{r}d") for r in (1, 2, 3) for kind in ("max_pool", "adaptive_max_pool")
     if hasattr(F, f"{kind}{r}d")}
    | _functions("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")
    | _functions("dropout", "flatten", "reshape", "permute", "transpose", "amax", module=torch)
    | _aten("max_pool1d", "max_pool2d", "max_pool3d", "dropout", "view", "reshape", "flatten.using_ints",
            "_unsafe_view", "permute", "transpose.int", "clone", "alias", "detach", "contiguous", "amax")
)
_SAME_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "contiguous", "clone", "detach", "amax"}


def build_graph(model: nn.Module, sample: Any) -> LayerGraph:
    """The neutral graph of ``model`` with shapes from ``sample``. See the module docstring."""
    if sample is None:
        raise DataError("graph: PyTorch needs a sample input batch to infer shapes")
    sample = head(as_inputs(sample, "graph: sample"), 2)
    gm = trace(model, "channel pruning and quantization planning", sample)
    propagate_shapes(model, gm, sample)
    return _Builder(model, gm).graph()


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


def _arg(node: fx.Node, index: int, key: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(key, default)


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
            elif node in self.names:
                nodes.append(self._node(node))
        return LayerGraph(nodes)

    def _output(self, node: fx.Node) -> Node:
        result = node.args[0]
        if _meta(result) is None:
            what = "a value that is not one tensor" if isinstance(result, fx.Node) else type(result).__name__
            raise UnsupportedModelError(
                f"{type(self.model).__qualname__} returns {what}; channel pruning supports models with one "
                "tensor output"
            )
        return Node(OUTPUT, "output", (self.names[result],), _channels(_meta(result)))

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
            return Node(name, "input", (), _channels(meta))
        module = self.modules.get(node.target) if node.op == "call_module" else None
        # A Linear on (N, T, C) tokens, say, is opaque to channel analysis (channels are dim 1 here),
        # but it is still its layer's node: quantization plans its sites there.
        weighted = isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) or (
            module is not None and type(module).__name__ == "Conv1D" and hasattr(module, "nf"))
        layer_of_opaque = node.target if weighted and self.calls.get(node.target, 0) == 1 and \
            node.target not in self.tied else None
        opaque = Node(name, "opaque", in_names, _channels(meta) if meta else None, layer_of_opaque,
                      attrs={"type_name": _type_name(node, module)})
        if meta is None or len(meta.shape) < 2:
            return opaque  # a tuple of tensors, or no channel axis
        mapped = self._map(node, module, ins, meta) if node.op != "get_attr" else None
        if mapped is None:
            return opaque
        op, inputs, attrs = mapped
        layer = node.target if op in ("conv", "dense", "depthwise_conv", "batchnorm") else None
        attrs = dict(attrs, type_name=_type_name(node, module))
        if op in ("elementwise", "flatten"):
            quant = _quant_kind(node, module)
            if quant is not None:
                attrs["quant"] = quant
        return Node(name, op, tuple(self.names[i] for i in inputs), _channels(meta), layer, attrs)

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
            keeps = len(ins) == 1 and _keeps_batch_and_channels(node, len(_meta(ins[0]).shape))
            return self._channelwise(ins, meta) if keeps else None
        if target in _REDUCE:
            return self._map_reduce(node, ins, meta)
        if target in _POOL_FUNCTIONS:
            if len(ins) == 1 and len(_meta(ins[0]).shape) == _POOL_FUNCTIONS[target] + 2:
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
        if isinstance(module, nn.Linear) and (kind is nn.Linear or _parametrized(kind, nn.Linear)):
            return ("dense", ins, {}) if rank == 2 else None
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

    @staticmethod
    def _channelwise(ins: list[fx.Node], meta: TensorMetadata) -> tuple[str, list[fx.Node], dict[str, Any]] | None:
        """Elementwise if one tensor goes in and batch and channel dims come out unchanged at rank >= 2."""
        if len(ins) != 1:
            return None
        src = _meta(ins[0])
        if src is None or len(src.shape) != len(meta.shape) or tuple(src.shape[:2]) != tuple(meta.shape[:2]):
            return None
        return "elementwise", ins, {}

    @staticmethod
    def _map_binary(op: str, ins: list[fx.Node], meta: TensorMetadata):
        tensors = [i for i in ins if len(_meta(i).shape) > 0]  # 0-d tensors act as scalars
        if len(tensors) == 1:
            return _Builder._channelwise(tensors, meta)
        if not tensors or any(len(_meta(i).shape) != len(meta.shape) for i in tensors):
            return None  # broadcasting that moves the channel axis: cannot tell which axis ties
        if any(_meta(i).shape[1] not in (1, meta.shape[1]) for i in tensors):
            return None
        return op, tensors, {}

    @staticmethod
    def _map_cat(node: fx.Node, ins: list[fx.Node], meta: TensorMetadata):
        seq = _arg(node, 0, "tensors")
        dim = _arg(node, 1, "dim", 0)
        if not isinstance(seq, (list, tuple)) or not isinstance(dim, int):
            return None
        parts = list(seq)
        if not all(isinstance(p, fx.Node) and _meta(p) is not None for p in parts):
            return None
        rank = len(meta.shape)
        if dim % rank != 1 or any(len(_meta(p).shape) != rank for p in parts):
            return None
        return "concat", parts, {}

    @staticmethod
    def _map_reshape(ins: list[fx.Node], meta: TensorMetadata):
        """(N, C, *S) -> (N, C*prod(S)) is a channels-first flatten; (N, C, ...) -> (N, C, ...) keeps channels."""
        if len(ins) != 1:
            return None
        src = tuple(_meta(ins[0]).shape)
        out = tuple(meta.shape)
        if len(src) < 2:
            return None
        if len(src) > 2 and out == (src[0], math.prod(src[1:])) and math.prod(src[2:]) > 1:
            return "flatten", ins, {"spatial": math.prod(src[2:]), "order": "channels_first"}
        if len(out) >= 2 and out[:2] == src[:2]:
            # also (N, C, 1, 1) -> (N, C): a flatten with one position per channel is the identity on channels
            return "elementwise", ins, {}  # spatial dims merged or split; channel c stays channel c
        return None

    @staticmethod
    def _map_reduce(node: fx.Node, ins: list[fx.Node], meta: TensorMetadata):
        """Mean / sum / max over dims that exclude batch and channel keep channels (any keepdim)."""
        if len(ins) != 1:
            return None
        src = tuple(_meta(ins[0]).shape)
        dims = _arg(node, 1, "dim")
        if dims is None:
            return None
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if not dims or not all(isinstance(d, int) for d in dims) or any(d % len(src) in (0, 1) for d in dims):
            return None
        out = tuple(meta.shape)
        if len(out) < 2 or out[:2] != src[:2]:
            return None
        return "elementwise", ins, {}


def _parametrized(kind: type, base: type) -> bool:
    """True for the class ``torch.nn.utils.parametrize`` makes for a masked module of class ``base``."""
    return kind.__module__ == "torch.nn.utils.parametrize" and base in kind.__bases__


def _resolve(model: nn.Module, target: str) -> Any:
    value: Any = model
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _channels(meta: TensorMetadata | None) -> int | None:
    if meta is None or len(meta.shape) < 2:
        return None
    return int(meta.shape[1])


def _keeps_batch_and_channels(node: fx.Node, rank: int) -> bool:
    """True for a permute / transpose of a rank-``rank`` tensor that leaves dims 0 and 1 where they are."""
    if node.target in (torch.permute, "permute", _ATEN.permute.default):
        rest = list(node.args[1:])
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
        dims = list(dims or node.kwargs.get("dims", ()))
        return len(dims) == rank and all(isinstance(d, int) for d in dims) and \
            [d % rank for d in dims[:2]] == [0, 1]
    moved = (_arg(node, 1, "dim0"), _arg(node, 2, "dim1"))
    return all(isinstance(d, int) for d in moved) and all(d % rank >= 2 for d in moved)


def _quant_kind(node: fx.Node, module: nn.Module | None) -> str | None:
    """``relu``, ``same`` or None: what an elementwise or flatten node does to quantized values."""
    if module is not None:
        if not type(module).__module__.startswith("torch.nn"):
            return None
        if isinstance(module, nn.Hardtanh):  # nn.ReLU6 is a Hardtanh(0, 6)
            return "relu" if (module.min_val, module.max_val) == (0.0, 6.0) else None
        if isinstance(module, nn.ReLU):
            return "relu"
        if isinstance(module, _SAME_MODULES):
            return "same"
        if isinstance(module, nn.modules.padding._ConstantPadNd):
            return "same" if module.value == 0 else None
        return None
    target = node.target
    if node.op == "call_function":
        if target in _RELU_FUNCTIONS:
            return "relu"
        if target in _HARDTANH_FUNCTIONS:
            bounds = (_arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0))
            return "relu" if bounds == (0.0, 6.0) else None
        if target in _PAD_FUNCTIONS:
            if target is _ATEN.constant_pad_nd.default:
                return "same" if _arg(node, 2, "value", 0) in (None, 0) else None
            mode, value = _arg(node, 2, "mode", "constant"), _arg(node, 3, "value", None)
            return "same" if mode == "constant" and value in (None, 0) else None
        if target in _SAME_FUNCTIONS:
            return "same"
        return None
    if node.op == "call_method":
        if target in ("relu", "relu_"):
            return "relu"
        if target in _SAME_METHODS:
            return "same"
    return None
