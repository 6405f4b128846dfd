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


def _form(inputs: Any) -> tuple:
    """What a trace's shapes depend on: the inputs' names or kind, and per array its shape past the
    batch axis and its dtype."""
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
    return _entries(model).get(_form(inputs))


def remember(model: nn.Module, inputs: Any, gm: fx.GraphModule, names: dict[fx.Node, str]) -> None:
    """Records ``gm`` (traced and shape-propagated on ``inputs``) with its neutral node ``names``."""
    if gm is not model:  # a graph model's own nodes would keep it alive in the cache
        _entries(model)[_form(inputs)] = (gm, {v: k for k, v in names.items()})
