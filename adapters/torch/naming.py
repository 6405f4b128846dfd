"""What each PyTorch module is in neutral terms: kind, rank, kernel layout and weight names.

Neutral weight names are those of :class:`slimkit.adapter.LayerInfo`: ``kernel``/``bias`` for Linear,
convolutions and embeddings; ``gamma``/``beta`` for batch and layer norms; for recurrent layers
``kernel`` (``weight_ih``), ``recurrent_kernel`` (``weight_hh``), ``bias`` (``bias_ih``),
``recurrent_bias`` (``bias_hh``) and ``projection_kernel`` (``weight_hr``), suffixed ``_l1``, ``_l2``
for stacked layers and ``_reverse`` for the backward direction; for ``nn.MultiheadAttention``
``in_proj_kernel`` (or ``query_kernel``, ``key_kernel``, ``value_kernel`` when key and value widths
differ) and ``in_proj_bias``. Other parameters keep their own names.
"""

from __future__ import annotations

import re

from torch import nn

_RECURRENT = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")
_RECURRENT_NAMES = {("weight", "ih"): "kernel", ("weight", "hh"): "recurrent_kernel",
                    ("weight", "hr"): "projection_kernel", ("bias", "ih"): "bias", ("bias", "hh"): "recurrent_bias"}
_ATTENTION_NAMES = {"in_proj_weight": "in_proj_kernel", "q_proj_weight": "query_kernel",
                    "k_proj_weight": "key_kernel", "v_proj_weight": "value_kernel"}
_NORMS = (nn.LayerNorm,)


def layer_name(model: nn.Module, path: str) -> str:
    """The neutral layer name of the module at ``path``: the path, or the model's class name for the root
    module (parameters directly on the model, as ViT's ``cls_token``)."""
    return path or type(model).__name__


def submodule(model: nn.Module, name: str) -> nn.Module:
    """The module a neutral layer name stands for (:func:`layer_name`'s inverse).

    Raises:
        KeyError: no module has that name.
    """
    try:
        return model.get_submodule(name)
    except AttributeError:
        if name == type(model).__name__:
            return model
        raise KeyError(f"no layer named {name!r}") from None


def is_transposed_linear(module: nn.Module) -> bool:
    """transformers' ``pytorch_utils.Conv1D``, as GPT-2 uses it: ``x @ weight + bias``, weight (in, out)."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers") and \
        getattr(module, "weight", None) is not None and getattr(module.weight, "dim", lambda: 0)() == 2


def describe(module: nn.Module) -> tuple[str, int, tuple[int, ...]]:
    """Neutral kind, spatial rank and canonical kernel permutation of a module."""
    if isinstance(module, nn.Linear):
        return "dense", 0, (0, 1)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        rank = module.weight.dim() - 2
        perm = tuple(range(rank + 2))  # PyTorch's (out, in/groups, *spatial) is canonical already
        depthwise = module.groups > 1 and module.groups == module.in_channels
        return ("depthwise_conv" if depthwise else "conv"), rank, perm
    if is_transposed_linear(module):  # transformers' Conv1D (GPT-2): a Linear whose weight is (in, out)
        return "dense", 0, (1, 0)
    if isinstance(module, nn.Embedding):
        return "embedding", 0, (0, 1)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batchnorm", 0, ()
    if isinstance(module, _NORMS):
        return "layernorm", 0, ()
    if isinstance(module, nn.RNNBase) and module.mode in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"):
        return "recurrent", 0, (0, 1)  # weight_ih is (gates * hidden, in): canonical already
    if isinstance(module, nn.MultiheadAttention):
        return "attention", 0, ()
    return "other", 0, ()


def neutral(module: nn.Module, native: str) -> str:
    """The neutral name of the module's parameter ``native``."""
    if native == "weight" and not isinstance(module, _NORMS):
        return "kernel"
    if isinstance(module, _NORMS):
        return {"weight": "gamma", "bias": "beta"}.get(native, native)
    if isinstance(module, nn.RNNBase):
        found = _RECURRENT.match(native)
        if found:
            kind, which, layer, reverse = found.groups()
            return _RECURRENT_NAMES[(kind, which)] + (f"_l{layer}" if layer != "0" else "") + (reverse or "")
    if isinstance(module, nn.MultiheadAttention):
        return _ATTENTION_NAMES.get(native, native)
    return native


def tensor_names(module: nn.Module) -> list[str]:
    """The module's own parameter names, parametrized ones (masked, fake-quantized) included."""
    names = [name for name, _ in module.named_parameters(recurse=False)]
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None:
        names += [name for name in parametrizations.keys() if name not in names]
    return names


def native(module: nn.Module, key: str) -> str:
    """The module's parameter name for the neutral name ``key`` (the inverse of :func:`neutral`)."""
    for name in tensor_names(module):
        if neutral(module, name) == key:
            return name
    if key == "kernel":
        return "weight"
    return key


def matrices(module: nn.Module, kind: str) -> dict[str, tuple[int, ...]]:
    """Neutral name -> canonical permutation of the matrices besides ``kernel`` magnitude pruning masks."""
    if kind not in ("recurrent", "attention"):
        return {}
    out = {}
    for name in tensor_names(module):
        key = neutral(module, name)
        is_matrix = key.endswith("kernel") or "kernel_" in key  # kernel_l1, recurrent_kernel_reverse, ...
        if key != "kernel" and is_matrix and getattr(module, name).dim() == 2:
            out[key] = (0, 1)
    return out
