"""Tracing PyTorch models with ``torch.fx`` (why fx and not torch.export: see ``graph.py``), shape
propagation on a sample, and the neutral names of traced nodes."""

from __future__ import annotations

import contextlib
import inspect
import io
from typing import Any, Callable

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from slimkit.data import as_inputs, head, leaves
from slimkit.errors import DataError, UnsupportedModelError

from slimkit.adapters.torch.inputs import call, to_tensors
from slimkit.adapters.torch.isolation import inference

#: Name of the neutral graph's output node (never a module path or fx name).
OUTPUT = "__output__"


class _Tracer(fx.Tracer):
    """fx's tracer, keeping slimkit's fake-quant modules as single calls (their ``forward`` branches on
    state). fx keeps every ``torch.nn`` module whole, ``nn.TransformerEncoder`` included; only those
    without submodules are kept whole here, so that the Linear layers inside torch's own blocks get
    nodes of their own (quantization plans per layer node)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if is_fake_quant(m):
            return True
        nested = any(name != "parametrizations" for name, _ in m.named_children())
        return super().is_leaf_module(m, module_qualified_name) and not nested


def is_fake_quant(module: Any) -> bool:
    """True for slimkit's fake-quant modules (they mark their class; this module cannot import them)."""
    return bool(getattr(type(module), "slimkit_fake_quant", False))


def trace(model: nn.Module, needed_for: str = "channel pruning", sample: Any = None) -> fx.GraphModule:
    """A module-level fx graph of ``model``: ``torch.fx.symbolic_trace``, or where fx cannot trace the
    model and ``sample`` is given, ``torch.export`` rebuilt to the same form (:mod:`.capture`).

    ``forward`` arguments the sample does not provide (all but the first without a sample) are fixed
    at their defaults (``mask=None``, ``flag=True``), so Python branches on them trace the path such
    a call takes. slimkit's fake-quant modules stay one ``call_module`` node each. ``needed_for``
    names the feature in error messages.

    Raises:
        UnsupportedModelError: neither fx nor torch.export can capture the model; the message names
            the model and the cause.
    """
    if isinstance(model, fx.GraphModule):
        # Already a graph (a captured or fake-quantized model): tracing it again would rename its
        # nodes, which quantization plans refer to.
        return model
    try:
        concrete = _concrete_args(model, sample)
        tracer = _Tracer()
        graph = tracer.trace(model, concrete_args=concrete)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ... from user code
        if sample is None:
            raise UnsupportedModelError(
                f"cannot trace {type(model).__qualname__} with torch.fx ({type(exc).__name__}: {_first_line(exc)}); "
                f"{needed_for} needs a forward() without data-dependent Python control flow, or a sample input "
                "to capture it with torch.export"
            ) from exc
    from slimkit.adapters.torch.capture import export_graph_module

    return export_graph_module(model, sample, needed_for)


def _concrete_args(model: nn.Module, sample: Any) -> dict[str, Any] | None:
    """Defaults for the ``forward`` arguments the sample does not provide (see :func:`trace`)."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    params = [p for p in signature.parameters.values() if p.kind in kinds]
    if isinstance(sample, dict):
        provided = set(sample)
    else:
        count = len(sample) if isinstance(sample, (tuple, list)) else 1
        provided = {p.name for p in params[:count]}
    concrete = {}
    for param in params:
        if param.name in provided:
            continue
        if param.default is inspect.Parameter.empty:
            raise UnsupportedModelError(
                f"{type(model).__qualname__}.forward takes {param.name!r}, which the inputs do not provide"
            )
        if param.default is None or isinstance(param.default, (bool, int, float, str)):
            concrete[param.name] = param.default
    return concrete or None


def placeholder_args(gm: fx.GraphModule, inputs: Any) -> list[Any]:
    """Tensor inputs in the order of the traced graph's placeholders (keyword inputs by name)."""
    if not isinstance(inputs, dict):
        return list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
    missing = [n for n in inputs if n not in names]
    if missing:
        raise DataError(f"graph: the model's forward takes no argument named {missing[0]!r} (it takes {names})")
    return [inputs.get(n) for n in names]


def propagate_shapes(model: nn.Module, gm: fx.GraphModule, sample: Any) -> None:
    """Runs ``ShapeProp`` on up to two samples in eval mode without gradients; the model is unchanged."""
    if sample is None:
        raise DataError("graph: PyTorch needs a sample input batch to infer shapes")
    x = to_tensors(head(as_inputs(sample, "graph: sample"), 2), model)
    gm_training = gm.training
    try:
        # gm shares the model's submodules: eval only inside, where every flag is restored after
        with inference(model, suspend_hooks=False), torch.no_grad():
            gm.eval()
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints tracebacks itself
                    ShapeProp(gm).propagate(*placeholder_args(gm, x))
            except Exception as exc:
                # Only now the model itself runs on the sample (a forward pass fewer on every capture when
                # all is well): a sample it refuses is the user's data, else the trace is at fault.
                try:
                    call(model, x)
                except Exception as own:
                    shapes = [tuple(t.shape) for t in leaves(x)]
                    raise DataError(
                        f"graph: sample of shape {shapes[0] if len(shapes) == 1 else shapes} does not fit "
                        f"{type(model).__qualname__} ({_first_line(own)})"
                    ) from own
                cause = exc.__cause__ or exc
                raise UnsupportedModelError(
                    f"the torch.fx trace of {type(model).__qualname__} fails on the sample although the model "
                    f"runs ({type(cause).__name__}: {_first_line(cause)})"
                ) from exc
    finally:
        gm.training = gm_training


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def neutral_names(modules: dict[str, nn.Module], gm: fx.GraphModule,
                   named: Callable[[fx.Node], bool]) -> dict[fx.Node, str]:
    """Neutral names of the fx nodes for which ``named`` is true.

    Module path for a module's first call, ``path#k`` for its k-th; fx names otherwise, never equal
    to a module path.
    """
    reserved = set(modules) | {OUTPUT}
    used: set[str] = set()
    seen: dict[str, int] = {}
    names: dict[fx.Node, str] = {}
    for node in gm.graph.nodes:
        if node.op == "output" or not named(node):
            continue
        if node.op == "call_module":
            seen[node.target] = seen.get(node.target, 0) + 1
            base = node.target if seen[node.target] == 1 else f"{node.target}#{seen[node.target]}"
        else:
            base = node.name
        name, k = base, 1
        while name in used or (node.op != "call_module" and name in reserved):
            k += 1
            name = f"{base}#{k}"
        used.add(name)
        names[node] = name
    return names
