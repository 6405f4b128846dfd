"""PyTorch model files: state dicts read onto an architecture (tensors only, nothing executed), and the
files that may run code when loaded (torch.export ``.pt2`` programs, whole pickled modules), which
callers read only when the user says the file is trusted.

A ``.pt2`` program holds aten calls, not modules: :func:`module_from_program` turns each conv, linear,
batch-norm, layer-norm and embedding call on the program's own weights back into the ``torch.nn``
module it came from, so that slimkit sees (and prunes, quantizes) layers as in the eager model.
"""

from __future__ import annotations

import copy
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from slimkit.errors import DataError

WEIGHTS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
TRUSTED_SUFFIXES = (".pt2", ".pt", ".pth")

# checkpoint dictionaries that wrap the state dict under one of these keys (training scripts' habit)
_WRAPPERS = ("state_dict", "model_state_dict", "model")


def load_weights_file(path: Path, model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode holding the state dict in ``path`` (``weights_only=True``).

    Raises:
        DataError: the file is damaged, holds objects other than tensors, or its weights do not fit
            ``model`` (missing, unexpected or differently shaped); the message names them.
    """
    state = _read_state(path)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    loaded = copy.deepcopy(model)
    name = type(model).__name__
    try:
        missing, unexpected = loaded.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(str(exc).split())
        raise DataError(f"{path}: the weights do not fit {name}: {detail[:600]}") from None
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {name}'s weights are missing ({', '.join(missing[:5])}"
                         f"{', ...' if len(missing) > 5 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} are not {name}'s ({', '.join(unexpected[:5])}"
                         f"{', ...' if len(unexpected) > 5 else ''})")
        raise DataError(f"{path}: the state dict does not fit {name}: {'; '.join(parts)}; is the factory the "
                        "architecture the weights were saved from?")
    return loaded.eval()


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise DataError(f"{path}: not a readable safetensors file ({exc})") from None
    if not _torch_file(path):
        raise DataError(f"{path}: not a readable PyTorch file (neither the zip archive torch.save writes nor a pickle)")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(
            f"{path} holds Python objects besides tensors, which slimkit does not unpickle ({first[:200]}); save "
            "the weights with torch.save(model.state_dict(), path), or, for a file you trust, load it as a "
            "trusted file (slimkit's command line: --trust-model-file)") from None
    except Exception as exc:  # zip/pickle damage surfaces as RuntimeError, EOFError, ValueError, ...
        raise DataError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {exc})") from None
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise DataError(f"{path}: entries {', '.join(map(repr, bad[:5]))} are not tensors; a state dict maps "
                        "weight names to tensors")
    return obj


def _torch_file(path: Path) -> bool:
    """The file is a zip archive (torch.save's format) or starts as a pickle (the legacy format)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"


def load_trusted_file(path: Path) -> nn.Module:
    """A ``.pt2`` program (as modules, see :func:`module_from_program`) or a pickled ``nn.Module``.

    Loading may run code the file holds: call it only for files the user trusts.

    Raises:
        DataError: the file cannot be loaded or holds no module.
    """
    if path.suffix.lower() == ".pt2":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.load(str(path))
        except Exception as exc:
            raise DataError(f"{path}: torch.export.load failed ({type(exc).__name__}: {exc})") from None
        return module_from_program(program, path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise DataError(f"{path}: torch.load failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, nn.Module):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module; a state dict needs the "
                        "architecture to load onto (slimkit's command line: --factory module:callable)")
    return obj.eval()


_CONV = {getattr(torch.ops.aten, f"conv{r}d").default: r for r in (1, 2, 3)}
_LINEAR = torch.ops.aten.linear.default
_BATCH_NORM = torch.ops.aten.batch_norm.default
_LAYER_NORM = torch.ops.aten.layer_norm.default
_EMBEDDING = torch.ops.aten.embedding.default


def module_from_program(program: Any, path: Path) -> fx.GraphModule:
    """The program's module with each layer call on its own weights made a ``torch.nn`` module again.

    Calls whose weights are shared, or computed rather than stored, stay aten calls (slimkit then sees
    no layer there, as with any op it does not know)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = program.module()
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":  # input-shape guards; nothing reads them
            graph.erase_node(node)
    if hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        built = _layer(gm, node)
        if built is None:
            continue
        owner, module, tensors, source = built
        _install(gm, owner, module)
        with graph.inserting_before(node):
            new = graph.call_module(owner, (source,))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        for t in tensors:
            if not t.users:
                graph.erase_node(t)
    graph.eliminate_dead_code()
    graph.lint()
    # a plain GraphModule (the program's own refuses eval() and flattens inputs by its pytree spec)
    graph._codegen = fx.graph.CodeGen()
    output = graph.output_node()
    if isinstance(output.args[0], (tuple, list)) and len(output.args[0]) == 1:  # one output: return it bare
        output.args = (output.args[0][0],)
    out = fx.GraphModule(gm, graph, class_name=f"{path.stem.replace('-', '_').replace('.', '_')}_pt2")
    if not any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) for m in out.modules()):
        warnings.warn(f"{path}: no conv or linear layer could be recovered from the program; slimkit sees no "
                      "layer to compress", stacklevel=2)
    return out.eval()


def _attr(gm: nn.Module, node: Any) -> tuple[str, torch.Tensor] | None:
    """(owner path, tensor) of a get_attr node of ``gm`` read by exactly one node; else None."""
    if not isinstance(node, fx.Node) or node.op != "get_attr" or len(node.users) != 1:
        return None
    owner = node.target.rpartition(".")[0]
    for get in (gm.get_parameter, gm.get_buffer):
        try:
            return owner, get(node.target)
        except AttributeError:
            continue
    return None


def _per_axis(values: Any, rank: int) -> tuple[int, ...]:
    """aten's int lists (one value stands for every spatial axis) as one int per axis."""
    values = [int(v) for v in values]
    return tuple(values * rank if len(values) == 1 else values)


def _owns_only(gm: nn.Module, owner: str, names: list[str]) -> bool:
    """The container at ``owner`` holds exactly the tensors ``names`` (a batch norm's counter aside)."""
    if not owner:
        return False
    container = gm.get_submodule(owner)
    own = {n for n, _ in container.named_parameters(recurse=False)} | \
        {n for n, _ in container.named_buffers(recurse=False)}
    return own - {"num_batches_tracked"} == set(names)


def _args(node: Any, defaults: tuple[Any, ...]) -> list[Any]:
    """Positional arguments of an aten call with the schema's defaults filled in."""
    args = list(node.args) + list(defaults[len(node.args):])
    for i, arg in enumerate(node.target._schema.arguments):
        if arg.name in node.kwargs and i < len(args):
            args[i] = node.kwargs[arg.name]
    return args


def _layer(gm: nn.Module, node: Any) -> tuple[str, nn.Module, list[Any], Any] | None:
    """(owner path, module, get_attr nodes used, input node) for a layer call on the owner's own weights,
    or None."""
    target = node.target
    if target in _CONV:
        rank = _CONV[target]
        x, w, b, stride, padding, dilation, groups = _args(node, (None, None, None, [1], [0], [1], 1))
        found = [_attr(gm, w)] + ([_attr(gm, b)] if b is not None else [])
        if None in found or len({o for o, _ in found}) != 1 or isinstance(padding, str):
            return None
        weight = found[0][1]
        cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[rank - 1]
        module = cls(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=_per_axis(stride, rank),
                     padding=_per_axis(padding, rank), dilation=_per_axis(dilation, rank), groups=groups,
                     bias=b is not None)
        return _filled(gm, module, found, ["weight", "bias"], [w, b], x)
    if target is _LINEAR:
        x, w, b = _args(node, (None, None, None))
        found = [_attr(gm, w)] + ([_attr(gm, b)] if b is not None else [])
        if None in found or len({o for o, _ in found}) != 1:
            return None
        weight = found[0][1]
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=b is not None)
        return _filled(gm, module, found, ["weight", "bias"], [w, b], x)
    if target is _BATCH_NORM:
        x, w, b, mean, var, training, momentum, eps, _ = _args(node, (None,) * 9)
        nodes = [w, b, mean, var]
        found = [_attr(gm, n) for n in nodes]
        val = node.meta.get("val")
        if None in found or len({o for o, _ in found}) != 1 or training or getattr(val, "ndim", 0) not in (2, 3, 4, 5):
            return None
        rank = val.ndim
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank]
        module = cls(found[0][1].shape[0], eps=float(eps), momentum=float(momentum))
        return _filled(gm, module, found, ["weight", "bias", "running_mean", "running_var"], nodes, x)
    if target is _LAYER_NORM:
        x, shape, w, b, eps, _ = _args(node, (None, None, None, None, 1e-5, True))
        found = [_attr(gm, n) for n in (w, b)]
        if None in found or len({o for o, _ in found}) != 1:
            return None
        module = nn.LayerNorm(list(shape), eps=float(eps))
        return _filled(gm, module, found, ["weight", "bias"], [w, b], x)
    if target is _EMBEDDING:
        w, indices, padding_idx, scale_grad, sparse = _args(node, (None, None, -1, False, False))
        found = [_attr(gm, w)]
        if None in found or padding_idx not in (-1, None):
            return None
        weight = found[0][1]
        module = nn.Embedding(weight.shape[0], weight.shape[1])
        return _filled(gm, module, found, ["weight"], [w], indices)
    return None


def _filled(gm: nn.Module, module: nn.Module, found: list[tuple[str, torch.Tensor]], names: list[str],
            nodes: list[Any], source: Any) -> tuple[str, nn.Module, list[Any], Any] | None:
    """(owner, module holding the tensors, their get_attr nodes, the call's input) or None when the
    owner holds other tensors as well (a custom module calling several layers' ops)."""
    owner = found[0][0]
    if not _owns_only(gm, owner, [n for n, node in zip(names, nodes) if node is not None]):
        return None
    with torch.no_grad():
        for name, (_, tensor) in zip(names, found):
            getattr(module, name).copy_(tensor)
    return owner, module, [n for n in nodes if isinstance(n, fx.Node)], source


def _install(gm: nn.Module, path: str, module: nn.Module) -> None:
    """Puts ``module`` at ``path`` in place of the container that held its weights (keeping other children)."""
    parent_path, _, name = path.rpartition(".")
    parent = gm.get_submodule(parent_path) if parent_path else gm
    old = getattr(parent, name)
    for child, sub in old.named_children():
        module.add_module(child, sub)
    setattr(parent, name, module)
