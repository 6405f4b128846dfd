"""What the graph builder (graph.py) knows about PyTorch ops: which modules, functions, methods and aten
overloads act per channel, add, multiply, concatenate, reshape, reduce or permute, and which keep
quantized values on their grid."""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

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
