"""The fx traces already shape-propagated for a model, per input form, so that each is made once.

A static-int8 run captures the float model's graph for planning, then reads the same model's node
outputs for calibration: each capture traces the model and runs ``ShapeProp`` on two samples (a fifth
of a second on a ResNet50 at 224x224, in the fx interpreter). :func:`~.graph.build_graph` records its
trace here and :mod:`.probes` looks it up before tracing again. An entry belongs to the model object
and holds while the model's module structure is unchanged (a module replaced, added or removed gives
another structure).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from torch import fx, nn

from slimkit.data import as_inputs, leaves

#: Per model: its module structure, and per input form the fx trace and its nodes by neutral name.
_TRACES: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[tuple, tuple[fx.GraphModule, dict]]]]" = \
    weakref.WeakKeyDictionary()


def input_form(inputs: Any) -> tuple:
    """What a trace's shapes (and whether the model takes the inputs) depend on: the inputs' names or
    kind, and per array its shape past the batch axis and its dtype."""
    inputs = as_inputs(inputs, "inputs")
    return (tuple(inputs) if isinstance(inputs, dict) else type(inputs).__name__,
            tuple((tuple(np.shape(a)[1:]), str(np.asarray(a).dtype)) for a in leaves(inputs)))


def _entries(model: nn.Module) -> dict[tuple, tuple[fx.GraphModule, dict]]:
    structure = tuple((name, id(module)) for name, module in model.named_modules())
    known = _TRACES.get(model)
    if known is None or known[0] != structure:
        known = (structure, {})
        _TRACES[model] = known
    return known[1]


def lookup(model: nn.Module, inputs: Any) -> tuple[fx.GraphModule, dict[str, fx.Node]] | None:
    """The recorded trace of ``model`` for inputs of ``inputs``' form and its nodes by name, if any."""
    return _entries(model).get(input_form(inputs))


def remember(model: nn.Module, inputs: Any, gm: fx.GraphModule, names: dict[fx.Node, str]) -> None:
    """Records ``gm`` (traced and shape-propagated on ``inputs``) with its neutral node ``names``."""
    if gm is not model:  # a graph model's own nodes would keep it alive in the cache
        _entries(model)[input_form(inputs)] = (gm, {v: k for k, v in names.items()})


#: Per model made from another by a shape-preserving rebuild (batch norms folded away, kernels of the
#: same shapes): the input form and, per fx node name, the node's op and target and its shape metadata
#: in the original (None for a node yielding no tensor).
_INHERITED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, tuple[str, Any]]]]" = \
    weakref.WeakKeyDictionary()


def inherit(model: nn.Module, original: nn.Module) -> None:
    """Records that every tensor of ``model`` has the shape of the same-named tensor of ``original``
    (``model`` rebuilt from it with kernels of the same shapes and shape-preserving modules replaced by
    ``nn.Identity``), so that capturing ``model`` again needs no shape propagation. Uses the trace of
    ``original`` recorded last, if any."""
    entries = _entries(original)
    if not entries:
        return
    form, (gm, _) = next(reversed(entries.items()))
    _INHERITED[model] = (form, {n.name: ((n.op, str(n.target)), n.meta.get("tensor_meta")) for n in gm.graph.nodes
                                if n.op != "output"})


def inherited_shapes(model: nn.Module, inputs: Any, gm: fx.GraphModule) -> bool:
    """Gives ``gm``'s nodes (a fresh trace of ``model``) the shapes recorded by :func:`inherit`, when
    they were recorded for inputs of ``inputs``' form and cover every node but the output; False
    (``gm`` untouched) otherwise: the caller propagates shapes itself."""
    known = _INHERITED.get(model)
    if known is None or known[0] != input_form(inputs):
        return False
    shapes = known[1]
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    if any(n.name not in shapes or shapes[n.name][0] != (n.op, str(n.target)) for n in nodes):
        return False
    # the form leaves the batch size out; the shapes recorded hold it
    fed = [tuple(getattr(shapes[n.name][1], "shape", ())) for n in nodes if n.op == "placeholder"]
    if sorted(fed) != sorted(tuple(np.shape(a)) for a in leaves(inputs)):
        return False
    for n in nodes:
        if shapes[n.name][1] is not None:  # None: a node yielding no tensor (x.size(0))
            n.meta["tensor_meta"] = shapes[n.name][1]
    return True
