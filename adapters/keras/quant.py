"""Fake quantization of Keras 3 Sequential and Functional models: the Keras side of ``slimkit.quant``.

:func:`fake_quant_model` rebuilds a model with ``keras.models.clone_model`` so that every site of a
:class:`~slimkit.quant.plan.QuantPlan` computes what the exported QDQ model will compute:

* a quantized layer (Conv1D/2D/3D, DepthwiseConv1D/2D, Dense) becomes a :class:`QuantLayer` that
  wraps a copy of it and computes the layer's op with a fake-quantized kernel and bias, reading the
  copy's own variables (so a pruning mask's variable constraint keeps applying);
* an activation site gets one :class:`FakeQuant` layer right after the layer whose output it is
  (for the model input: one shared quantizer ahead of every reader).

The layers are in :mod:`.quant_layers` (importing this module registers them for ``.keras`` loading);
the arithmetic is core's. This module imports Keras: the adapter imports it only when a
quantization method is used.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

from slimkit.errors import UnsupportedModelError
from slimkit.names import unique_name
from slimkit.quant.plan import MODES, ActSite, FakeQuantSpec, LayerSite, QuantPlan, SiteParams
from slimkit.quant.specs import bias_spec

from .graph import Trace, is_graph_model
from .layer_copy import ZeroInit
from .node_kinds import fake_quant_role
from .layers import LayerEntry
from .quant_layers import FakeQuant, QuantLayer, kind_of

__all__ = ["ACT_SUFFIX", "FakeQuant", "QuantLayer", "fake_quant_model", "float_model", "read_plan", "set_params",
           "sites", "unwrap_entries"]


# Suffix of the layer holding an activation site's fake-quant op: "<layer>_fakequant".
ACT_SUFFIX = "_fakequant"


# ------------------------------------------------------------------------------------- building
def _spec_config(spec: FakeQuantSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


@dataclasses.dataclass(frozen=True)
class _Sites:
    """The plan resolved onto the model: original Keras op id -> its site (and plan position)."""

    acts: dict[int, tuple[ActSite, int]]
    input: tuple[ActSite, int] | None
    layers: dict[int, tuple[LayerSite, int]]


def resolve(plan: QuantPlan, trace: Trace, source: dict[str, str], entries: dict[str, LayerEntry],
            k: ModuleType) -> _Sites:
    """Maps each site of ``plan`` to the Keras layer it acts on.

    Raises:
        UnsupportedModelError: a site's node is no node of the model, not a layer (a Keras op called
            on tensors), a shared layer, or a layer that cannot be quantized; the message names it.
    """
    calls = {c.name: c for c in trace.calls}
    acts: dict[int, tuple[ActSite, int]] = {}
    input_site: tuple[ActSite, int] | None = None
    for index, site in enumerate(plan.acts):
        if site.spec.mode not in MODES:
            raise ValueError(f"activation site {site.node!r}: unknown mode {site.spec.mode!r}")
        if site.node == trace.input_name:
            input_site = (site, index)
            continue
        call = calls.get(source.get(site.node, ""))
        if call is None:
            raise UnsupportedModelError(f"quantization site {site.node!r} is no node of the model's graph")
        what = f"quantization site {site.node!r} ({type(call.op).__name__})"
        if not isinstance(call.op, k.layers.Layer):
            raise UnsupportedModelError(
                f"{what} is a Keras op called on tensors, not a layer, so slimkit cannot attach a "
                "fake-quant op to its output; use the equivalent Keras layer (keras.layers.ReLU, Add, ...)"
            )
        if call.shared:
            raise UnsupportedModelError(
                f"{what} is a layer called more than once; slimkit cannot fake-quantize one of its outputs"
            )
        if len(call.node.outputs) != 1:
            raise UnsupportedModelError(f"{what} has {len(call.node.outputs)} outputs; a site needs one")
        if fake_quant_role(call.op) is not None:
            raise UnsupportedModelError(f"{what} is already a fake-quant layer")
        if id(call.op) in acts:
            raise UnsupportedModelError(
                f"quantization sites {acts[id(call.op)][0].node!r} and {site.node!r} are the same tensor"
            )
        acts[id(call.op)] = (site, index)
    by_op = {id(c.op): c for c in trace.calls}
    layers: dict[int, tuple[LayerSite, int]] = {}
    for index, site in enumerate(plan.layers):
        entry = entries.get(site.layer)
        if entry is None:
            raise UnsupportedModelError(f"quantized layer {site.layer!r} is no layer of the model")
        what = f"quantized layer {site.layer!r} ({entry.info.type_name})"
        if fake_quant_role(entry.layer) is not None or kind_of(entry.layer) is None:
            raise UnsupportedModelError(
                f"{what} cannot be fake-quantized; slimkit quantizes Conv1D/2D/3D, DepthwiseConv1D/2D "
                "and Dense layers (not subclasses of them, whose call() may differ)"
            )
        call = by_op.get(id(entry.layer))
        if call is None or call.shared:
            raise UnsupportedModelError(f"{what} is {'shared' if call else 'not called in the model graph'}; "
                                        "slimkit quantizes layers called once")
        layers[id(entry.layer)] = (site, index)
    return _Sites(acts, input_site, layers)


def _input_name(tensor: Any) -> str:
    return tensor._keras_history.operation.name


def _swap(value: Any, replace: dict[int, Any]) -> Any:
    """``value`` with every tensor in ``replace`` (by id) swapped, through lists, tuples and dicts."""
    if id(value) in replace:
        return replace[id(value)]
    if isinstance(value, (list, tuple)):
        return type(value)(_swap(v, replace) for v in value)
    if isinstance(value, dict):
        return {key: _swap(v, replace) for key, v in value.items()}
    return value


class _Cloner:
    """Rebuilds a model (nested graph models too) through ``clone_model``, layer by layer.

    ``layer_fn(layer)`` gives each layer's replacement and ``after(original, new, outputs)`` what a
    call's outputs become (a fake-quant op appended, say). Records ``(original, copy)`` pairs.
    """

    def __init__(self, k: ModuleType, layer_fn: Any, after: Any, names: set[str]) -> None:
        self.k, self.layer_fn, self.after = k, layer_fn, after
        self.names = names  # every layer name in use, so added layers get unique ones
        self.pairs: list[tuple[Any, Any]] = []
        self.original: dict[int, Any] = {}

    def unique(self, base: str) -> str:
        return unique_name(base, self.names)

    def clone(self, model: Any, on_input: Any = None) -> Any:
        """The rebuilt ``model``; ``on_input(tensor)`` may replace its (top-level) input tensor."""
        k = self.k
        fn = model._functional if type(model) is k.Sequential else model
        if fn is None:
            raise UnsupportedModelError(f"the Sequential model {model.name!r} has no functional graph")
        inputs = [k.Input(batch_shape=t.shape, dtype=t.dtype, name=_input_name(t)) for t in fn.inputs]
        replace: dict[int, Any] = {}
        if on_input is not None:
            replace[id(inputs[0])] = on_input(inputs[0])

        def clone_function(layer: Any) -> Any:
            if is_graph_model(layer, k):
                new = self.clone(layer)
            else:
                new = self.layer_fn(layer)
            self.original[id(new)] = layer
            self.pairs.append((layer, new))
            return new

        def call_function(layer: Any, *args: Any, **kwargs: Any) -> Any:
            if replace:
                args, kwargs = _swap(args, replace), _swap(kwargs, replace)
            return self.after(self.original.get(id(layer)), layer, *args, **kwargs)

        structure = k.tree.pack_sequence_as(fn._inputs_struct, inputs) if hasattr(fn, "_inputs_struct") \
            else inputs[0]
        clone = k.models.clone_model(fn, input_tensors=structure, clone_function=clone_function,
                                     call_function=call_function)
        if fn is not model or clone.name != model.name:  # a Sequential: keep its name on the Functional
            clone = k.Model(clone.inputs, clone.outputs, name=model.name)
        return clone


def _all_layer_names(model: Any) -> set[str]:
    return {layer.name for layer in model._flatten_layers(include_self=True, recursive=True)}


def _new_fake_quant(site: ActSite, index: int, method: str, name: str) -> FakeQuant:
    return FakeQuant(**_spec_config(site.spec), site=site.node, role="activation", method=method,
                     index=index, name=name)


def fake_quant_model(model: Any, k: ModuleType, trace: Trace, source: dict[str, str],
                     entries: dict[str, LayerEntry], plan: QuantPlan) -> Any:
    """A new model computing ``model`` with fake-quant at every site of ``plan`` (``model`` untouched).

    Returns a Functional model (a Sequential comes back as the Functional of the same layers) whose
    quantized layers are :class:`QuantLayer` wrappers and whose activation sites are
    :class:`FakeQuant` layers named ``<layer>_fakequant``; every other layer is a copy. Weights are
    copied; masks are not (the adapter sets them again).

    Raises:
        UnsupportedModelError: a site cannot take a fake-quant op (see :func:`resolve`), or the
            model already has fake-quant layers.
    """
    if any(fake_quant_role(layer) for layer in model._flatten_layers(include_self=False, recursive=True)):
        raise UnsupportedModelError(
            f"Keras model {model.name!r} already has fake-quant layers; start from its without_fake_quant() copy"
        )
    sites = resolve(plan, trace, source, entries, k)

    zeros = ZeroInit(k)  # every copied layer's weights are assigned below

    def layer_fn(layer: Any) -> Any:
        copy = zeros.copy(layer)
        found = sites.layers.get(id(layer))
        if found is None:
            return copy
        site, index = found
        kernel = FakeQuant(**_spec_config(site.kernel), site=f"{site.layer}/kernel", role="kernel",
                           method=plan.method, name=cloner.unique(f"{layer.name}_kernel_quant"))
        bias = FakeQuant(**_spec_config(bias_spec(site.kernel)), site=f"{site.layer}/bias", role="bias",
                         method=plan.method, name=cloner.unique(f"{layer.name}_bias_quant"))
        return QuantLayer(copy, kernel.get_config(), bias.get_config(),
                          {"layer": site.layer, "node": site.node, "input": site.input, "output": site.output},
                          index=index, name=layer.name)

    def after(original: Any, layer: Any, *args: Any, **kwargs: Any) -> Any:
        out = layer(*args, **kwargs)
        found = sites.acts.get(id(original))
        if found is None:
            return out
        site, index = found
        return _new_fake_quant(site, index, plan.method, cloner.unique(original.name + ACT_SUFFIX))(out)

    cloner = _Cloner(k, layer_fn, after, _all_layer_names(model))
    on_input = None
    if sites.input is not None:
        site, index = sites.input
        on_input = _new_fake_quant(site, index, plan.method, cloner.unique(trace.input_name + ACT_SUFFIX))
    new_model = cloner.clone(model, on_input)
    for old, new in cloner.pairs:
        if is_graph_model(old, k):
            continue
        target = new.layer if fake_quant_role(new) == "layer" else new
        _copy_weights(old, target)
    zeros.restore()
    return new_model


def float_model(model: Any, k: ModuleType) -> Any:
    """A float copy of a fake-quant model: wrapped layers unwrapped, fake-quant ops removed.

    Layer and input names stay, so the copy's graph has the node names the plan refers to.
    """
    zeros = ZeroInit(k)  # every copied layer's weights are assigned below

    def layer_fn(layer: Any) -> Any:
        role = fake_quant_role(layer)
        if role == "activation":
            return layer  # never called: after() skips it
        inner = layer.layer if role == "layer" else layer
        return zeros.copy(inner)

    def after(original: Any, layer: Any, *args: Any, **kwargs: Any) -> Any:
        if fake_quant_role(original) == "activation":
            return args[0]
        return layer(*args, **kwargs)

    cloner = _Cloner(k, layer_fn, after, _all_layer_names(model))
    new_model = cloner.clone(model)
    for old, new in cloner.pairs:
        role = fake_quant_role(old)
        if is_graph_model(old, k) or role == "activation":
            continue
        _copy_weights(old.layer if role == "layer" else old, new)
    zeros.restore()
    return new_model


def _copy_weights(old: Any, new: Any) -> None:
    src, dst = getattr(old, "weights", []), getattr(new, "weights", [])
    if [tuple(v.shape) for v in src] != [tuple(v.shape) for v in dst]:
        raise UnsupportedModelError(
            f"cannot copy layer {old.name!r} ({type(old).__name__}): its copy has different weights"
        )
    for s, d in zip(src, dst):
        d.assign(s.numpy())


# ------------------------------------------------------------------------------------- reading
def _quant_layers(model: Any) -> list[Any]:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if fake_quant_role(layer) is not None]


def has_fake_quant(model: Any) -> bool:
    """True if ``model`` holds any slimkit fake-quant layer."""
    flatten = getattr(model, "_flatten_layers", None)
    return flatten is not None and bool(_quant_layers(model))


def sites(model: Any) -> dict[str, FakeQuant]:
    """Site key -> its :class:`FakeQuant`, for every site of a fake-quant model."""
    out: dict[str, FakeQuant] = {}
    for layer in _quant_layers(model):
        if fake_quant_role(layer) == "layer":
            for quantizer in (layer.kernel_quantizer, layer.bias_quantizer):
                out[quantizer.site] = quantizer
        elif layer.role == "activation":
            out[layer.site] = layer
    return out


def read_plan(model: Any) -> QuantPlan | None:
    """The plan of the fake-quant layers in ``model`` (current modes), or None if it has none."""
    acts: list[tuple[int, ActSite]] = []
    layers: list[tuple[int, LayerSite]] = []
    method = None
    for layer in _quant_layers(model):
        if fake_quant_role(layer) == "layer":
            s = layer.site
            layers.append((layer.index, LayerSite(s["layer"], s["node"], layer.kernel_quantizer.spec,
                                                  s.get("input"), s.get("output"))))
            method = method or layer.kernel_quantizer.method
        elif layer.role == "activation":
            acts.append((layer.index, ActSite(layer.site, layer.spec)))
            method = method or layer.method
    if method is None:
        return None
    return QuantPlan(tuple(a for _, a in sorted(acts, key=lambda t: t[0])),
                     tuple(s for _, s in sorted(layers, key=lambda t: t[0])), method)


def unwrap_entries(entries: list[LayerEntry], model: Any) -> list[LayerEntry]:
    """Layer entries of a fake-quant model as the float model's: a wrapped layer under its wrapper's
    path (``conv1``, not ``conv1/conv1``), fake-quant variables left out (slimkit's own, like masks)."""
    wrapped = {id(layer.layer) for layer in _quant_layers(model) if fake_quant_role(layer) == "layer"}
    out = []
    for entry in entries:
        if fake_quant_role(entry.layer) is not None:
            continue
        if id(entry.layer) in wrapped:
            entry = LayerEntry(dataclasses.replace(entry.info, name=entry.info.name.rsplit("/", 1)[0]),
                               entry.layer, entry.variables)
        out.append(entry)
    return out


def set_params(model: Any, params: dict[str, SiteParams], name: str) -> bool:
    """Sets the named sites' parameters, every key and value checked before any is set; returns
    True if a site's mode or range changed (compiled steps must then be traced again).

    Raises:
        KeyError: a key names no site of the model (``name`` describes the model).
        ValueError: parameters that do not fit their site (shape, axis, range, scale <= 0).
    """
    found = sites(model)
    for key in params:
        if key not in found:
            known = ", ".join(sorted(found)) or "none: call with_fake_quant first"
            raise KeyError(f"no quantization site {key!r} in Keras model {name}; sites: {known}")
    for key, value in params.items():
        found[key].check_params(value)
    changed = False
    for key, value in params.items():
        changed |= found[key].set_params(value)
    return changed
