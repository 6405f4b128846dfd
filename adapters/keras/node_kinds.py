"""How a Keras layer or op maps onto a node of slimkit's neutral graph: its op kind, channel
attributes, and whether quantized values stay on their grid through it."""

from __future__ import annotations

import math
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .layers import LayerEntry

if TYPE_CHECKING:
    from .graph import Call

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


def last_channels(spec: Any) -> int | None:
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


def _channelslast_channels(op: Any) -> bool:
    fmt = getattr(op, "data_format", None)
    return fmt is None or fmt == "channels_last"


def _axis_islast_channels(axis: Any, rank: int | None) -> bool:
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
    return bool(in_specs) and all(last_channels(spec) is not None for spec in in_specs)


def _describe_op(call: "Call", in_specs: list[Any], attrs: dict[str, Any],
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


def describe(call: "Call", in_specs: list[Any], out_spec: Any, entries: dict[str, LayerEntry],
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
    if not _channelslast_channels(op):
        return why("channels_first")
    lay = k.layers
    cls = type(op)
    entry = entries.get(call.path)
    kind = entry.info.kind if entry is not None and entry.layer is op else None
    in_shape = _shape(in_specs[0]) if in_specs else None
    out_shape = _shape(out_spec)
    rank = len(in_shape) if in_shape is not None else None

    if _activation_name(getattr(op, "activation", None), k) in ("relu", "relu6"):
        attrs["fused"] = "relu"  # the layer's output is never negative (quantization modes ask)
    if cls in (lay.Conv1D, lay.Conv2D, lay.Conv3D):
        if getattr(op, "groups", 1) != 1:
            return why(f"groups={op.groups}")
        return ("conv", attrs, _activation_extra(op, k)) if kind == "conv" else opaque
    if cls is lay.Dense:
        return ("dense", attrs, _activation_extra(op, k)) if kind == "dense" else opaque
    if kind == "recurrent":  # units are channels: consumed features in, hidden units out
        flags = [f for f in ("return_state", "go_backwards", "stateful") if getattr(op, f, False)]
        return why(", ".join(flags)) if flags else ("dense", attrs, None)
    if cls in tuple(getattr(lay, n) for n in ("DepthwiseConv1D", "DepthwiseConv2D") if hasattr(lay, n)):
        if getattr(op, "depth_multiplier", 1) != 1:
            return why(f"depth_multiplier={op.depth_multiplier}")
        return ("depthwise_conv", attrs, _activation_extra(op, k)) if kind == "depthwise_conv" else opaque
    if cls is lay.BatchNormalization:
        if not _axis_islast_channels(op.axis, rank):
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
        return ("concat", attrs, None) if _axis_islast_channels(op.axis, out_rank) else opaque
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
