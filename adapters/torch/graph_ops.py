"""What the graph builder (graph.py) knows about PyTorch ops: which modules, functions, methods and aten
overloads act per channel, add, multiply, concatenate, reshape, reduce or permute, and which keep
quantized values on their grid."""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

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
                 "dropout", "neg", "abs", "square", "pow", module=torch)
    | {operator.neg, operator.pos}
    | _aten("relu", "relu_", "hardtanh", "hardtanh_", "gelu", "silu", "silu_", "sigmoid", "tanh", "hardswish",
            "hardsigmoid", "leaky_relu", "elu", "mish", "softplus", "dropout", "clone", "clamp", "clamp_min",
            "neg", "abs", "pow.Tensor_Scalar", "pad", "constant_pad_nd", "alias", "detach", "contiguous", "upsample_nearest2d.vec",
            "upsample_bilinear2d.vec")
)
_POOL_FUNCTIONS = {getattr(F, f"{kind}{r}d"): r for r in (1, 2, 3)
                   for kind in ("max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool")
                   if hasattr(F, f"{kind}{r}d")}
_POOL_FUNCTIONS.update({op: r for r in (1, 2, 3)
                        for op in _aten(f"max_pool{r}d", f"avg_pool{r}d", f"adaptive_avg_pool{r}d")})
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "clip_", "neg", "abs",
    "square", "pow", "contiguous", "clone", "detach", "float", "to",
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
_SELECT = _aten("select.int")
_SLICE = _aten("slice.Tensor")

def _permutation(node: fx.Node, rank: int) -> list[int] | None:
    """Output dim i = input dim order[i] for a permute / transpose of a rank-``rank`` tensor, else None."""
    if node.target in (torch.permute, "permute", _ATEN.permute.default):
        rest = list(node.args[1:])
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
        dims = list(dims or node.kwargs.get("dims", ()))
        if len(dims) != rank or not all(isinstance(d, int) for d in dims):
            return None
        return [d % rank for d in dims]
    moved = (_arg(node, 1, "dim0"), _arg(node, 2, "dim1"))
    if not all(isinstance(d, int) for d in moved):
        return None
    order = list(range(rank))
    a, b = (d % rank for d in moved)
    order[a], order[b] = order[b], order[a]
    return order


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


def _plain_rnn(module: nn.Module) -> bool:
    """A one-layer, one-direction nn.LSTM / nn.GRU / nn.RNN (no projection): its units can be removed."""
    return isinstance(module, nn.RNNBase) and type(module).__module__.startswith("torch.nn") and \
        module.mode in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU") and module.num_layers == 1 and \
        not module.bidirectional and not getattr(module, "proj_size", 0)

def _arg(node: fx.Node, index: int, key: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(key, default)
