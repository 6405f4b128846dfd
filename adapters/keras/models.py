"""Keras model objects: which keras module owns a model, how to name it in messages, and copying
it so that the user's model is never touched (clone for Sequential/Functional, deep copy otherwise)."""

from __future__ import annotations

import copy
import re
import sys
from types import ModuleType
from typing import Any

import numpy as np

from slimkit.errors import UnsupportedModelError

from . import graph as kgraph
from .layer_copy import ZeroInit, named_config
from .layers import walk

# The keras modules an adapter can serve, in the order accepts() tries them.
KERAS_MODULES = ("keras", "tf_keras")


def keras_of(model: Any) -> ModuleType | None:
    """The already-loaded keras module whose ``Model`` class ``model`` is an instance of."""
    for name in KERAS_MODULES:
        module = sys.modules.get(name)
        model_cls = getattr(module, "Model", None) if module is not None else None
        if isinstance(model_cls, type) and isinstance(model, model_cls):
            return module
    return None


def describe(model: Any) -> str:
    """``'name' (ClassName)`` for messages."""
    return f"{getattr(model, 'name', '?')!r} ({type(model).__qualname__})"


def is_graph_model(model: Any, k: ModuleType) -> bool:
    """True for plain Sequential and Functional models, whose structure Keras can clone from configs.

    Subclasses of either (a class deriving from ``keras.Model`` that calls ``super().__init__(inputs,
    outputs)``) are excluded: ``clone_model`` would rebuild them as the base class.
    """
    return kgraph.is_graph_model(model, k)


def format_shape(shape: tuple[int | None, ...]) -> str:
    """``(batch, 8, 8, 1)``: the batch axis by name, unknown axes as None."""
    return "(" + ", ".join(["batch", *(str(d) for d in shape[1:])]) + ("," if len(shape) == 1 else "") + ")"


def one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line, for wrapping it in slimkit's messages.

    Keras wraps layer errors as "Exception encountered when calling X.call()." followed by the real
    cause in ANSI bold, then a dump of the call arguments; the cause is the part worth showing.
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    if any(line.startswith("Arguments received") for line in lines):  # Keras's call-argument dump
        lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("Arguments received"))]
    useful = [line for line in lines if not line.startswith("Exception encountered")] or lines
    # Keras wraps long messages over several lines; keep whole sentences, up to a readable length.
    text = " ".join(useful)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def clone_graph(model: Any, k: ModuleType) -> Any:
    """A Sequential/Functional model rebuilt from layer configs, with the original's weights."""
    zeros = ZeroInit(k)  # every weight is assigned below: initialising them first would be wasted
    try:
        clone = clone_structure(model, k, zeros)
    except Exception as exc:  # custom layers without get_config fail in many ways
        raise UnsupportedModelError(
            f"cannot copy Keras model {describe(model)}: clone_model failed ({one_line(exc)}); "
            "custom layers need get_config() returning their constructor arguments"
        ) from exc
    weights = model.get_weights()
    if [tuple(w.shape) for w in weights] != [tuple(int(d) for d in v.shape) for v in clone.weights]:
        # clone_model splits variables shared between layers; the copy would not be the same model.
        raise UnsupportedModelError(
            f"cannot copy Keras model {describe(model)}: its clone has different weights "
            "(are variables shared between layers?)"
        )
    clone.set_weights(weights)
    zeros.restore()
    if list(dict.fromkeys(_unsplit(e.info.name) for e in walk(model, k))) != \
            list(dict.fromkeys(_unsplit(e.info.name) for e in walk(clone, k))):
        raise UnsupportedModelError(f"cannot copy Keras model {describe(model)}: its clone renamed layers")
    return clone


def _unsplit(name: str) -> str:
    """A layer name with a split separable convolution's ``/depthwise``/``/pointwise`` suffix removed."""
    return name.rsplit("/", 1)[0] if name.endswith(("/depthwise", "/pointwise")) else name


def clone_structure(model: Any, k: ModuleType, zeros: ZeroInit | None = None) -> Any:
    """``clone_model`` (fresh weights), keeping a Keras 3 Functional model's input layer names.

    Left to itself, Keras 3's ``clone_model`` names a Functional clone's input layers after the
    input *tensors* (``keras_tensor_12``); graph nodes are named after layers, so keep the originals.
    ``zeros``: copy layers with zero initializers (the caller assigns every weight, then restores them).
    """
    if k.__name__ != "keras":
        return k.models.clone_model(model)
    split = _separable_splitter(k, zeros)
    if type(model) is k.Sequential:
        return k.models.clone_model(model, clone_function=split)
    inputs = k.tree.map_structure(
        lambda t: k.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name), model.input
    )
    return k.models.clone_model(model, input_tensors=inputs, clone_function=split)


def _separable_splitter(k: ModuleType, zeros: ZeroInit | None = None) -> Any:
    """A ``clone_function`` that copies layers from their configs, except that a SeparableConv1D/2D
    becomes a Sequential of the DepthwiseConv and the 1x1 Conv it computes (named ``<name>/depthwise``
    and ``<name>/pointwise``): the same function and the same weights in the same order, in layers
    that channel pruning, magnitude pruning and int8 know. Regularizers and constraints go along."""
    separable = {getattr(k.layers, n): r for n, r in (("SeparableConv1D", 1), ("SeparableConv2D", 2))
                 if hasattr(k.layers, n)}

    def clone(layer: Any) -> Any:
        rank = next((r for cls, r in separable.items() if type(layer) is cls), None)
        if rank is None:
            return zeros.copy(layer) if zeros is not None else layer.__class__.from_config(named_config(layer))
        c = layer.get_config()
        depthwise = getattr(k.layers, f"DepthwiseConv{rank}D")(
            kernel_size=c["kernel_size"], strides=c["strides"], padding=c["padding"], data_format=c["data_format"],
            dilation_rate=c["dilation_rate"], depth_multiplier=c["depth_multiplier"], use_bias=False,
            depthwise_initializer=c["depthwise_initializer"], depthwise_regularizer=c["depthwise_regularizer"],
            depthwise_constraint=c["depthwise_constraint"], name="depthwise")
        pointwise = getattr(k.layers, f"Conv{rank}D")(
            c["filters"], 1, data_format=c["data_format"], activation=c["activation"], use_bias=c["use_bias"],
            kernel_initializer=c["pointwise_initializer"], bias_initializer=c["bias_initializer"],
            kernel_regularizer=c["pointwise_regularizer"], bias_regularizer=c["bias_regularizer"],
            activity_regularizer=c.get("activity_regularizer"), kernel_constraint=c["pointwise_constraint"],
            bias_constraint=c["bias_constraint"], name="pointwise")
        return k.Sequential([depthwise, pointwise], name=layer.name)

    return clone


def deep_copy(model: Any, k: ModuleType) -> Any:
    """A subclassed model copied with ``copy.deepcopy``, or else rebuilt from its config.

    Keras 3 deep-copies through an in-memory save and load, which looks classes up by registered
    name; the model's own classes are put in scope so unregistered ones are found too. The load also
    restores the compile state, which fails for a model compiled with an unregistered custom loss or
    metric; slimkit needs no compile state, so it then rebuilds the model from ``get_config()``.
    """
    classes: dict[str, type] = {}
    get_name = getattr(k.saving, "get_registered_name", None) or getattr(k.utils, "get_registered_name", None)
    flatten = getattr(model, "_flatten_layers", None)
    for layer in flatten(include_self=True, recursive=True) if flatten else [model]:
        cls = type(layer)
        classes.setdefault(cls.__name__, cls)
        if get_name is not None:
            classes.setdefault(get_name(cls), cls)
    scope = getattr(k.saving, "custom_object_scope", None) or k.utils.custom_object_scope
    try:
        with scope(classes):
            clone = copy.deepcopy(model)
        check_same_weights(model, clone)
    except Exception as exc:  # deserialization fails in many ways; all mean "cannot rebuild"
        try:
            with scope(classes):
                clone = rebuild_from_config(model)
        except Exception:
            raise UnsupportedModelError(
                f"cannot copy the subclassed Keras model {describe(model)} ({one_line(exc)}). "
                "slimkit never modifies your model, so it works on a copy: give the class a get_config() "
                "returning its constructor arguments (and a from_config() if they are not plain values), "
                "or build the model with the Functional API"
            ) from exc
    copy_layer_names(model, clone)
    # A copied compiled step would belong to the original's variables; drop it.
    for attr in ("train_function", "test_function", "predict_function"):
        if getattr(clone, attr, None) is not None:
            setattr(clone, attr, None)
    return clone


def copy_layer_names(model: Any, clone: Any) -> None:
    """Gives the copy's layers the original's names.

    A rebuilt subclassed model creates its layers anew, and Keras numbers unnamed layers from a
    global counter (``dense`` comes back as ``dense_2``); slimkit reports and selects layers by the
    names the user sees in the original.

    Raises:
        UnsupportedModelError: the copy's layers do not match the original's one to one.
    """
    src = list(model._flatten_layers(include_self=True, recursive=True))
    dst = list(clone._flatten_layers(include_self=True, recursive=True))
    if len(src) != len(dst) or any(type(a) is not type(b) for a, b in zip(src, dst)):
        raise UnsupportedModelError(
            f"cannot copy the subclassed Keras model {describe(model)}: the copy's layers differ from "
            "the original's; check the class's get_config()/from_config()"
        )
    for a, b in zip(src, dst):
        if b.name != a.name:
            try:
                b.name = a.name
            except AttributeError:  # tf_keras exposes ``name`` read-only
                b._name = a.name


def rebuild_from_config(model: Any) -> Any:
    """``from_config(get_config())``, built like the original and given its weights (not compiled)."""
    clone = type(model).from_config(model.get_config())
    build_config = model.get_build_config() if hasattr(model, "get_build_config") else None
    shape = (build_config or {}).get("input_shape")
    if isinstance(shape, (list, tuple)) and all(d is None or isinstance(d, int) for d in shape):
        # Build it the way users build subclassed models, by a call: Keras's build_from_config
        # creates the variables but leaves a subclassed model marked unbuilt.
        clone(np.zeros(tuple(1 if d is None else d for d in shape), dtype=np.float32), training=False)
    elif build_config:
        clone.build_from_config(build_config)
    check_same_weights(model, clone)
    clone.set_weights(model.get_weights())
    return clone


def check_same_weights(model: Any, clone: Any) -> None:
    """Raises ValueError unless the copy is built with variables shaped like the original's."""
    if not getattr(clone, "built", False):
        raise ValueError("the copy came back unbuilt (does the class restore its build state?)")
    if [tuple(v.shape) for v in model.weights] != [tuple(v.shape) for v in clone.weights]:
        raise ValueError("the copy's variables differ from the original's (check get_config/from_config)")


def check_independent(model: Any, clone: Any) -> None:
    """Raises UnsupportedModelError if the copy shares a variable with the original.

    Identity covers every variable; one write-and-compare probe guards against distinct wrapper
    objects over shared storage.
    """
    originals = model.weights
    if {id(v) for v in originals} & {id(v) for v in clone.weights}:
        raise UnsupportedModelError(f"the copy of Keras model {describe(model)} shares variables with it")
    probe = next((i for i, v in enumerate(clone.weights) if np.size(v.numpy()) > 0), None)
    if probe is None:
        return
    theirs, mine = originals[probe], clone.weights[probe]
    before = theirs.numpy().copy()
    saved = mine.numpy().copy()
    mine.assign(saved + 1)
    changed = theirs.numpy().tobytes() != before.tobytes()  # bytes: NaN-safe
    mine.assign(saved)
    if changed:
        raise UnsupportedModelError(f"the copy of Keras model {describe(model)} shares variables with it")


def independent_copy(model: Any) -> Any:
    """An independent copy of a built Keras model: Sequential and Functional models cloned from
    their layer configs (names kept) with the original's weights, subclassed ones deep-copied
    (Keras' in-memory save and load).

    Raises:
        UnsupportedModelError: the model is not a Keras model, not built, or cannot be copied.
    """
    k = keras_of(model)
    if k is None:
        raise UnsupportedModelError(f"not a Keras model: {type(model).__module__}.{type(model).__qualname__}")
    if not getattr(model, "built", False):
        raise UnsupportedModelError(
            f"Keras model {describe(model)} is not built; call it on data or pass input shape "
            "(start it with keras.Input(shape=...), or call model.build(input_shape))"
        )
    clone = clone_graph(model, k) if is_graph_model(model, k) else deep_copy(model, k)
    check_independent(model, clone)
    return clone
