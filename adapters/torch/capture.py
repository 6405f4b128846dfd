"""Capturing PyTorch models ``torch.fx`` cannot trace: ``torch.export`` (non-strict), back to module calls.

Measured on Hugging Face transformers models (ResNet, MobileNetV2, ViT, BERT, DistilBERT from small
configs): ``torch.fx.symbolic_trace`` fails on every one (data-dependent control flow, iterating a
``Proxy``, ``int(Proxy)``), ``torch.export.export(strict=False)`` captures every one in 0.2-0.8 s (GPT-2
too, with ``use_cache=False``). fx stays the first choice where it works: it keeps each module call
and needs no sample. Where it fails, this module exports the model on a sample (batch axis, and the
sequence axis of integer inputs, dynamic) and rebuilds an fx graph of the same form fx would give:

* each call of a leaf module that holds parameters or buffers (Conv, Linear, BatchNorm, Embedding,
  LayerNorm, ...) or is a ``torch.nn`` module (ReLU, Dropout, pooling, Flatten, ...) becomes one
  ``call_module`` node on the real module, found through the aten nodes' ``nn_module_stack`` metadata,
  so masks, fake-quant parametrizations and train/eval behaviour apply as they do in eager mode;
* everything else stays an aten call, and parameters used outside such calls are ``get_attr`` nodes;
* the graph returns the output slimkit reads (:func:`.inputs.first_tensor`: the logits).

A module call whose aten nodes read more than one outside tensor or feed more than one stays aten
(``nn.MultiheadAttention`` takes q, k and v). Quantization and structured pruning then share this
graph exactly as they share fx's.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from slimkit.data import as_inputs, at_least_two, head, is_integer, map_inputs
from slimkit.errors import UnsupportedModelError

from slimkit.adapters.torch.inputs import arguments, call, first_tensor, to_tensors
from slimkit.adapters.torch.isolation import inference


def export_graph_module(model: nn.Module, sample: Any, needed_for: str) -> fx.GraphModule:
    """A module-level fx graph of ``model`` captured with ``torch.export`` on ``sample``.

    Raises:
        UnsupportedModelError: ``torch.export`` cannot capture the model; the message has its reason.
    """
    x = at_least_two(head(as_inputs(sample, "sample"), 2))  # one sample would specialise the batch axis
    tensors = to_tensors(x, model)
    args, kwargs = arguments(tensors)
    dynamic = _dynamic_shapes(x)
    try:
        with inference(model, suspend_hooks=False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eager = call(model, tensors)
            ep = torch.export.export(model, args, kwargs, dynamic_shapes=dynamic, strict=False)
    except Exception as exc:  # export fails in many ways; each means "cannot capture"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedModelError(
            f"{type(model).__qualname__} cannot be captured for {needed_for}: torch.fx cannot trace it and "
            f"torch.export failed ({type(exc).__name__}: {first})"
        ) from exc
    gm = _Rebuild(model, ep, _output_index(model, eager)).graph_module()
    # The eager model it was captured from (its leaf modules are the graph's): the float model to export
    # (the TorchScript exporter cannot take aten graphs). Kept outside the module tree on purpose.
    gm.__dict__["_slimkit_captured_from"] = model
    return gm


def captured_from(gm: nn.Module) -> nn.Module | None:
    """The eager model ``gm`` was captured from by :func:`export_graph_module`, or None."""
    return gm.__dict__.get("_slimkit_captured_from") if isinstance(gm, fx.GraphModule) else None


def _dynamic_shapes(x: Any) -> Any:
    """A dynamic batch axis on every input, and a dynamic sequence axis on integer inputs of rank 2+."""
    auto = torch.export.Dim.AUTO

    def dims(a: Any) -> dict[int, Any]:
        out = {0: auto}
        if is_integer(a) and a.ndim >= 2:
            out[1] = auto
        return out

    shapes = map_inputs(x, dims)
    if isinstance(x, dict):
        return shapes
    return shapes if isinstance(shapes, tuple) else (shapes,)


def _output_index(model: nn.Module, eager: Any) -> int:
    """The position, among the exported program's outputs, of the output slimkit reads."""
    chosen = first_tensor(eager, type(model).__name__)
    flat, _ = pytree.tree_flatten(eager)
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    for i, t in enumerate(tensors):
        if t is chosen:
            return i
    return 0


class _Rebuild:
    # groups are keyed by the outermost collapsible module in a node's stack: the ops of a masked
    # (parametrized) Linear, mask included, make one call of the Linear
    """One exported program rebuilt as a module-level fx graph (see the module docstring)."""

    def __init__(self, model: nn.Module, ep: Any, output_index: int) -> None:
        self.model, self.ep = model, ep
        sig = ep.graph_signature
        self.fqn: dict[str, str] = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                                    **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
        self.user_inputs = list(sig.user_inputs)
        self.output_index = output_index
        self.modules = dict(model.named_modules())
        self.collapsible = {path for path, m in self.modules.items() if path and _collapsible(m)}
        self.counts: dict[str, int] = {}

    def _owner(self, node: fx.Node) -> tuple[str, str | None]:
        """(call key, path) of the outermost collapsible module the node was called in, or ("", None)."""
        for key, path in _stack(node):
            if path in self.collapsible:
                return key, path
        return "", None

    def graph_module(self) -> fx.GraphModule:
        nodes = [n for n in self.ep.graph.nodes if n.op == "call_function"]
        groups = self._groups(nodes)
        owner = {n: g for g in groups for n in g[1]}
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        constants: dict[str, torch.Tensor] = {}
        for node in self.ep.graph.nodes:
            if node.op == "placeholder" and node.name in self.user_inputs:
                env[node] = graph.placeholder(node.name)

        def value(n: fx.Node) -> fx.Node:
            if n not in env:  # a parameter, buffer or constant read outside a module call
                target = self.fqn.get(n.name, n.name)
                if target in getattr(self.ep, "constants", {}) and not _has_attr(self.model, target):
                    name = "slimkit_constant_" + target.replace(".", "_")
                    constants[name] = self.ep.constants[target]
                    target = name
                env[n] = graph.get_attr(target)
            return env[n]

        for node in nodes:
            group = owner.get(node)
            if group is not None:
                path, members, source, result = group
                if node is result:
                    env[node] = graph.call_module(path, (value(source),))
                continue
            args = fx.node.map_arg(node.args, value)
            kwargs = fx.node.map_arg(node.kwargs, value)
            new = graph.create_node("call_function", node.target, args, kwargs, name=self._name(node))
            new.meta = dict(node.meta)
            env[node] = new
        outputs = [a for a in pytree.tree_leaves(list(self.ep.graph.output_node().args[0]))
                   if isinstance(a, fx.Node)]
        user = outputs[: len(self.ep.graph_signature.user_outputs)]
        if not user:
            raise UnsupportedModelError(f"{type(self.model).__qualname__} returns no tensor slimkit can read")
        graph.output(env[user[min(self.output_index, len(user) - 1)]])
        gm = fx.GraphModule(self.model, graph, class_name=f"{type(self.model).__name__}Exported")
        for name, tensor in constants.items():
            gm.register_buffer(name, tensor)
        gm.graph.lint()
        return gm

    def _name(self, node: fx.Node) -> str:
        """A name that does not depend on ops elsewhere in the model: the innermost module's path and
        the op, counted within that module (``bert.encoder.layer.0.attention.self`` + ``view_2``)."""
        _, path = _innermost(node)
        op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        base = f"{path}.{op}" if path else op
        count = self.counts.get(base, 0)
        self.counts[base] = count + 1
        return (base if count == 0 else f"{base}_{count}").replace(".", "_")

    def _groups(self, nodes: list[fx.Node]) -> list[tuple[str, list[fx.Node], fx.Node, fx.Node]]:
        """Module calls to collapse: (path, their nodes, the one outside tensor they read, the result).

        A call's nodes need not be contiguous (export hoists and shares size computations); sizes read
        from outside do not count, since the module computes its own when called."""
        calls: dict[str, tuple[str, list[fx.Node]]] = {}
        for node in nodes:
            key, path = self._owner(node)
            if path is not None:
                calls.setdefault(key, (path, []))[1].append(node)
        groups = []
        own_params: dict[str, set[str]] = {}
        for path, members in calls.values():
            inside = set(members)
            params = own_params.setdefault(path, {name for name, fqn in self.fqn.items()
                                                  if fqn.startswith(path + ".")})
            reads = {a for m in members for a in m.all_input_nodes
                     if a not in inside and a.name not in params and _is_tensor(a)}
            used_outside = [m for m in members if any(u not in inside for u in m.users)]
            if len(reads) == 1 and len(used_outside) == 1 and _is_tensor(used_outside[0]):
                groups.append((path, members, next(iter(reads)), used_outside[0]))
        return groups


def _is_tensor(node: fx.Node) -> bool:
    """The node's value (recorded by export) is one tensor, not a size or a tuple."""
    return isinstance(node.meta.get("val"), torch.Tensor)


def _stack(node: fx.Node) -> list[tuple[str, str]]:
    """(call key, module path) of the modules a captured node was called in, outermost first."""
    return [(key, path) for key, (path, _cls) in (node.meta.get("nn_module_stack") or {}).items()]


def _innermost(node: fx.Node) -> tuple[str, str]:
    """(call key, module path) of the innermost module a captured node belongs to ("", "" for none)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    key, (path, _cls) = list(stack.items())[-1]
    return key, path


def _collapsible(module: nn.Module) -> bool:
    """A leaf module kept as one call: it holds tensors of its own, or is a torch.nn module. Its only
    children may be its ``parametrizations`` (pruning masks, fake-quant)."""
    if any(name != "parametrizations" for name, _ in module.named_children()):
        return False
    owns = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
    return owns or type(module).__module__.startswith(("torch.nn.modules", "torch.nn.utils.parametrize"))


def _has_attr(model: nn.Module, target: str) -> bool:
    value: Any = model
    for part in target.split("."):
        if not hasattr(value, part):
            return False
        value = getattr(value, part)
    return True



