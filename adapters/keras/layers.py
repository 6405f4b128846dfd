"""Walks a Keras model's layers and describes each one with weights in neutral terms.

Works for Keras 3 and tf_keras alike: the keras module is passed in, never imported here, so this
module loads without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from slimkit.adapter import LayerInfo
from slimkit.attention import AttentionBlock, HeadWeights
from slimkit.errors import UnsupportedModelError

# Native variable name -> neutral name, per neutral kind. A recognised layer whose variables do not
# all appear here (LoRA-enabled or int8-quantized Dense, say) is described as ``other`` instead,
# because its ``kernel`` is then not the plain float matrix the algorithms expect.
_NEUTRAL_NAMES: dict[str, dict[str, str]] = {
    "dense": {"kernel": "kernel", "bias": "bias"},
    "conv": {"kernel": "kernel", "bias": "bias"},
    # Keras 3 names the depthwise kernel ``kernel``; tf_keras names it ``depthwise_kernel``.
    "depthwise_conv": {"kernel": "kernel", "depthwise_kernel": "kernel", "bias": "bias"},
    "embedding": {"embeddings": "kernel"},
    "batchnorm": {"gamma": "gamma", "beta": "beta", "moving_mean": "mean", "moving_variance": "var"},
    "layernorm": {"gamma": "gamma", "beta": "beta"},
}


@dataclass(frozen=True)
class LayerEntry:
    """A layer found by :func:`walk`: its neutral description plus the live objects behind it.

    Attributes:
        info: the neutral description handed to algorithms.
        layer: the Keras layer object.
        variables: neutral weight name -> the layer's variable.
    """

    info: LayerInfo
    layer: Any
    variables: dict[str, Any]


def short_name(variable: Any) -> str:
    """A variable's own name without scope or ``:0`` suffix (tf_keras names are ``dense/kernel:0``)."""
    return str(variable.name).rsplit("/", 1)[-1].split(":", 1)[0]


def walk(model: Any, k: ModuleType) -> list[LayerEntry]:
    """Every layer of ``model`` that holds weights, in model order, nested layers included.

    Nested models and container layers are descended into; their layers are named
    ``parent/child``. A container layer that also owns variables directly is listed as well, as
    kind ``other`` with just those variables.

    Args:
        model: a built Keras model.
        k: the keras module the model belongs to (``keras`` or ``tf_keras``).

    Returns:
        The entries, in the order the model lists its layers.

    Raises:
        UnsupportedModelError: two distinct layers end up with the same path.
    """
    entries: list[LayerEntry] = []
    seen: set[int] = set()
    for child in _children(model, k):
        _visit(child, child.name, k, entries, seen)
    names: dict[str, LayerEntry] = {}
    for entry in entries:
        if entry.info.name in names:
            # Names are the only handle algorithms and recipes have on layers, so a clash would make
            # one of the two layers unreachable; refuse rather than guess.
            raise UnsupportedModelError(
                f"two different layers are both named {entry.info.name!r} "
                f"({type(names[entry.info.name].layer).__name__} and {type(entry.layer).__name__}); "
                "give the layers unique names"
            )
        names[entry.info.name] = entry
    return entries


def _children(layer: Any, k: ModuleType) -> list[Any]:
    """Direct sublayers of a model or layer (not recursive)."""
    if isinstance(layer, k.Model):
        # ``layers`` keeps a Functional model's topological order, which is the "model order".
        return list(layer.layers)
    # Plain layers that hold sublayers (a residual block, MultiHeadAttention) have no public list
    # of them; both Keras 3 and tf_keras keep one behind ``_flatten_layers``.
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    return list(flatten(include_self=False, recursive=False))


def _visit(layer: Any, path: str, k: ModuleType, out: list[LayerEntry], seen: set[int]) -> None:
    if id(layer) in seen:  # a layer shared by several parents is listed once, at its first path
        return
    seen.add(id(layer))
    # Recurrent layers and multi-head attention hold their weights in sublayers (the cell, the
    # projections) that mean little on their own; they are described as the block users know.
    block = _recurrent(layer, path, k) or _attention(layer, path, k)
    if block:
        for entry in block:
            seen.update(id(sub) for sub in _children(entry.layer, k))
            out.append(entry)
        return
    children = _children(layer, k)
    if children:
        inner = {id(v) for child in children for v in child.weights}
        own = [v for v in layer.weights if id(v) not in inner]
        if own:
            out.append(_describe_other(layer, path, own))
        for child in children:
            _visit(child, f"{path}/{child.name}", k, out, seen)
        return
    variables = list(layer.weights)
    if variables:
        out.append(_describe(layer, path, variables, k))


_RECURRENT_CELLS = ("LSTMCell", "GRUCell", "SimpleRNNCell")


def _recurrent(layer: Any, path: str, k: ModuleType) -> list[LayerEntry]:
    """An LSTM, GRU or SimpleRNN layer as one ``recurrent`` entry; [] for anything else.

    Keras keeps both matrices as (in, gates * units); their canonical (out, in) order is PyTorch's
    ``weight_ih``/``weight_hh``. LSTM gates are i, f, c, o in both frameworks; GRU gates are z, r, h
    in Keras and r, z, n in PyTorch.
    """
    cell = getattr(layer, "cell", None)
    if not isinstance(layer, k.layers.RNN) or type(cell).__name__ not in _RECURRENT_CELLS:
        return []
    if not isinstance(cell, tuple(getattr(k.layers, n) for n in _RECURRENT_CELLS if hasattr(k.layers, n))):
        return []
    mapped = {short_name(v): v for v in layer.weights}
    if set(mapped) - {"kernel", "recurrent_kernel", "bias"} or len(mapped) != len(layer.weights):
        return []
    if any(len(mapped[n].shape) != 2 for n in ("kernel", "recurrent_kernel") if n in mapped) or "kernel" not in mapped:
        return []
    info = LayerInfo(
        name=path, kind="recurrent", type_name=type(layer).__name__,
        shapes={n: tuple(int(d) for d in v.shape) for n, v in mapped.items()},
        kernel_perm=(1, 0),
        matrices={"recurrent_kernel": (1, 0)} if "recurrent_kernel" in mapped else {},
    )
    return [LayerEntry(info=info, layer=layer, variables=mapped)]


def _attention(layer: Any, path: str, k: ModuleType) -> list[LayerEntry]:
    """A MultiHeadAttention layer as two ``attention`` entries; [] for anything else.

    The block itself holds the query, key and value projections (kernels (embed, heads, head_dim),
    canonical (heads, head_dim, embed): flattened, the rows of PyTorch's ``in_proj_weight``); the
    output projection is its own entry ``<block>/<output layer>`` (kernel (heads, head_dim, embed),
    canonical (embed, heads, head_dim): flattened, PyTorch's ``out_proj.weight``).
    """
    mha = getattr(k.layers, "MultiHeadAttention", None)
    if mha is None or not isinstance(layer, mha):
        return []
    parts = {role: getattr(layer, f"_{role}_dense", None) for role in ("query", "key", "value", "output")}
    variables: dict[str, Any] = {}
    for role in ("query", "key", "value"):
        for v in getattr(parts[role], "weights", None) or []:
            variables[f"{role}_{short_name(v)}"] = v
    output = parts["output"]
    out_vars = {short_name(v): v for v in getattr(output, "weights", None) or []}
    expected = {f"{r}_{w}" for r in ("query", "key", "value") for w in ("kernel", "bias")}
    if (not set(variables) <= expected or not all(f"{r}_kernel" in variables for r in ("query", "key", "value"))
            or any(len(variables[f"{r}_kernel"].shape) != 3 for r in ("query", "key", "value"))
            or "kernel" not in out_vars or set(out_vars) - {"kernel", "bias"} or len(out_vars["kernel"].shape) != 3
            or len(list(layer.weights)) != len(variables) + len(out_vars)):
        return []
    qkv = LayerInfo(
        name=path, kind="attention", type_name=type(layer).__name__,
        shapes={n: tuple(int(d) for d in v.shape) for n, v in variables.items()},
        matrices={f"{r}_kernel": (1, 2, 0) for r in ("query", "key", "value")},
    )
    out = LayerInfo(
        name=f"{path}/{output.name}", kind="attention", type_name=f"{type(layer).__name__} output",
        shapes={n: tuple(int(d) for d in v.shape) for n, v in out_vars.items()},
        kernel_perm=(2, 0, 1),
    )
    return [LayerEntry(info=qkv, layer=layer, variables=variables),
            LayerEntry(info=out, layer=output, variables=out_vars)]


def attention_blocks(entries: list[LayerEntry]) -> list[AttentionBlock]:
    """The MultiHeadAttention layers among ``entries`` (from :func:`walk`) as neutral attention blocks."""
    by_name = {e.info.name: e for e in entries}
    blocks = []
    for entry in entries:
        info = entry.info
        if info.kind != "attention" or "query_kernel" not in info.shapes:
            continue
        output = next((name for name in by_name if name.startswith(f"{info.name}/")
                       and by_name[name].info.kind == "attention"), None)
        if output is None:
            continue
        _, heads, key_dim = info.shapes["query_kernel"]

        def proj(role: str) -> HeadWeights:
            bias = f"{role}_bias" if f"{role}_bias" in info.shapes else None
            return HeadWeights(info.name, f"{role}_kernel", bias, (1, 2, 0), head_axes=2)

        blocks.append(AttentionBlock(info.name, int(heads), int(key_dim), int(info.shapes["value_kernel"][2]),
                                     proj("query"), proj("key"), proj("value"),
                                     HeadWeights(output, "kernel", None, (2, 0, 1), head_axes=2)))
    return blocks


def _classify(layer: Any, k: ModuleType) -> tuple[str, int]:
    """The neutral kind and spatial rank of a layer, judged by its class."""
    lay = k.layers
    # Transposed and separable convolutions subclass Conv in tf_keras, so they are ruled out first.
    others = tuple(
        getattr(lay, n) for n in (
            "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "SeparableConv1D", "SeparableConv2D",
        ) if hasattr(lay, n)
    )
    if others and isinstance(layer, others):
        return "other", 0
    depthwise = tuple(getattr(lay, n) for n in ("DepthwiseConv1D", "DepthwiseConv2D") if hasattr(lay, n))
    if depthwise and isinstance(layer, depthwise):
        return "depthwise_conv", int(getattr(layer, "rank", 0) or 0)
    if isinstance(layer, (lay.Conv1D, lay.Conv2D, lay.Conv3D)):
        return "conv", int(getattr(layer, "rank", 0) or 0)
    if isinstance(layer, lay.Dense):
        return "dense", 0
    if isinstance(layer, lay.Embedding):
        return "embedding", 0
    if isinstance(layer, lay.BatchNormalization):
        return "batchnorm", 0
    if isinstance(layer, lay.LayerNormalization):
        return "layernorm", 0
    return "other", 0


def _kernel_perm(kind: str, rank: int, ndim: int) -> tuple[int, ...] | None:
    """Permutation of the native kernel axes into (out, in, *spatial); None if the layout is unexpected."""
    if kind == "dense" and ndim == 2:
        return (1, 0)  # (in, out)
    if kind == "embedding" and ndim == 2:
        return (0, 1)  # (vocab, dim): rows are the "outputs" pruned per token
    if kind == "conv" and rank >= 1 and ndim == rank + 2:
        return (rank + 1, rank, *range(rank))  # (*spatial, in, out)
    if kind == "depthwise_conv" and rank >= 1 and ndim == rank + 2:
        # (*spatial, C, M) -> (C, M, *spatial): flattening C, M gives PyTorch's (C*M, 1, *spatial).
        return (rank, rank + 1, *range(rank))
    return None


def _describe(layer: Any, path: str, variables: list[Any], k: ModuleType) -> LayerEntry:
    kind, rank = _classify(layer, k)
    if kind == "other":
        return _describe_other(layer, path, variables)
    names = _NEUTRAL_NAMES[kind]
    mapped: dict[str, Any] = {}
    for v in variables:
        neutral = names.get(short_name(v))
        if neutral is None or neutral in mapped:
            return _describe_other(layer, path, variables)
        mapped[neutral] = v
    perm: tuple[int, ...] = ()
    if kind not in ("batchnorm", "layernorm"):
        if "kernel" not in mapped:
            return _describe_other(layer, path, variables)
        found = _kernel_perm(kind, rank, len(mapped["kernel"].shape))
        if found is None:
            return _describe_other(layer, path, variables)
        perm = found
    info = LayerInfo(
        name=path,
        kind=kind,
        type_name=type(layer).__name__,
        rank=rank if kind in ("conv", "depthwise_conv") else 0,
        shapes={n: tuple(int(d) for d in v.shape) for n, v in mapped.items()},
        kernel_perm=perm,
        eps=float(layer.epsilon) if kind == "batchnorm" else None,
        activation=_activation_label(layer),
    )
    return LayerEntry(info=info, layer=layer, variables=mapped)


def _activation_label(layer: Any) -> str:
    """The name of the activation fused into ``layer`` (``linear`` when there is none)."""
    fn = getattr(layer, "activation", None)
    if fn is None:
        return "linear"
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def _describe_other(layer: Any, path: str, variables: list[Any]) -> LayerEntry:
    """An ``other`` entry; its weights keep their native names, suffixed ``_1``, ``_2`` on clashes."""
    mapped: dict[str, Any] = {}
    for v in variables:
        base = short_name(v)
        name, n = base, 0
        while name in mapped:
            n += 1
            name = f"{base}_{n}"
        mapped[name] = v
    info = LayerInfo(
        name=path,
        kind="other",
        type_name=type(layer).__name__,
        shapes={n: tuple(int(d) for d in v.shape) for n, v in mapped.items()},
    )
    return LayerEntry(info=info, layer=layer, variables=mapped)
