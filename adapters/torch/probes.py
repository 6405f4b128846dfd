"""What channel-pruning criteria read from a PyTorch model: layer outputs and weight gradients.

Neither changes the model: the train/eval flag is restored, no optimizer steps, and gradients come
from ``torch.autograd.grad``, so the parameters' ``.grad`` fields are left as they were.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from slimkit.adapter import MODEL_OUTPUT
from slimkit.data import as_arrays, as_inputs, head, is_array_pair, leaves, n_samples, take
from slimkit.errors import DataError, UnsupportedModelError
from slimkit.recipe import FineTune

from slimkit.adapters.torch.graph import node_names
from slimkit.adapters.torch.naming import neutral, submodule
from slimkit.adapters.torch.inputs import call, first_tensor, model_device, to_tensors
from slimkit.adapters.torch.isolation import inference
from slimkit.adapters.torch.loaders import CheckedLoader
from slimkit.adapters.torch import traces
from slimkit.adapters.torch.tracing import placeholder_args, propagate_shapes, trace
from slimkit.adapters.torch.training import make_loss
from slimkit.labels import prepare_labels

_BN_TRAINABLE = {"gamma": "weight", "beta": "bias"}


def layer_outputs(model: nn.Module, x: Any, names: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
    """Eval-mode outputs of the named layers, float32 numpy, batch-concatenated; channels on axis 1.

    Module paths are read with forward hooks (a module called several times gives its first call, as
    the graph names that call by the bare path). Other names of :func:`build_graph`'s nodes (fx names
    such as ``add_3``, or ``path#2`` for later calls) are read by running the fx trace instead.
    ``MODEL_OUTPUT`` reads what ``predict`` would, where that pass shows it (see the capability).
    """
    def run(xb: Any) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        # a copy taken now: a later in-place op (``ReLU(inplace=True)``, ``out += x``) must not alter it
        _pass(model, xb, names, lambda name, t: found.__setitem__(name, _as_numpy(t).copy()))
        return found

    return _batched(x, batch_size, names, run)


def stream_outputs(model: nn.Module, x: Any, names: list[str], consume: Callable[[str, np.ndarray], None],
                   batch_size: int = 256) -> None:
    """:func:`layer_outputs`' tensors handed to ``consume`` as each is computed, without a copy (a view
    valid during the call: a later in-place op may change the buffer), in batches of ``batch_size``."""
    x = as_inputs(x, "layer_outputs")
    for start in range(0, n_samples(x), batch_size):
        _pass(model, take(x, slice(start, start + batch_size)), names, lambda name, t: consume(name, _as_numpy(t)))


def _pass(model: nn.Module, xb: Any, names: list[str], sink: Callable[[str, torch.Tensor], None]) -> None:
    """One eval-mode pass over ``xb`` that gives ``sink`` each named tensor as soon as it is computed."""
    modules = dict(model.named_modules())
    layers = [n for n in names if n != MODEL_OUTPUT]
    if all(name in modules for name in layers):
        _hooked(model, xb, layers, modules, MODEL_OUTPUT in names, sink)
        return
    gm, by_name = _traced(model, xb)
    missing = [n for n in layers if n not in by_name]
    if missing:
        raise KeyError(f"no layer or graph node named {missing[0]!r}")
    _interpreted(model, gm, xb, {by_name[n]: n for n in layers}, MODEL_OUTPUT in names, sink)


def _traced(model: nn.Module, x: Any) -> tuple[fx.GraphModule, dict[str, fx.Node]]:
    """The fx trace of ``model`` and its nodes by graph name, for inputs of ``x``'s form.

    Calibration reads the same model in several passes, after planning captured its graph: tracing and
    shape propagation are done once per model structure and input form (see ``traces.py``).
    """
    inputs = as_inputs(x, "inputs")
    found = traces.lookup(model, inputs)
    if found is None:
        gm = trace(model, "reading graph node outputs", head(inputs, 2))
        propagate_shapes(model, gm, inputs)  # the same names as build_graph: only tensor-yielding nodes count
        names = node_names(model, gm)
        traces.remember(model, inputs, gm, names)
        found = (gm, {v: k for k, v in names.items()})
    return found


def _batched(x: Any, batch_size: int, names: list[str],
             run: Callable[[Any], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    x = as_inputs(x, "layer_outputs")
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, n_samples(x), batch_size):
        found = run(take(x, slice(start, start + batch_size)))
        for n in names:
            parts[n].append(found.get(n))
    if any(p is None for p in parts.get(MODEL_OUTPUT, ())):  # not readable in this pass: the caller predicts
        del parts[MODEL_OUTPUT]
    # One batch (the usual calibration probe) needs no concatenating copy.
    return {n: (p[0] if len(p) == 1 else np.concatenate(p)).astype(np.float32, copy=False)
            for n, p in parts.items()}


def _hooked(model: nn.Module, xb: Any, names: list[str], modules: dict[str, nn.Module], with_output: bool,
            sink: Callable[[str, torch.Tensor], None]) -> None:
    seen: set[str] = set()

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if name in seen:
                return
            if not isinstance(output, torch.Tensor):
                raise UnsupportedModelError(f"layer {name!r} returns {type(output).__name__}, not one tensor")
            seen.add(name)
            sink(name, output)
        return hook

    # registered inside: inference() suspends hooks registered before it as instrumentation
    with inference(model), torch.no_grad():
        handles = [modules[n].register_forward_hook(hook_for(n)) for n in dict.fromkeys(names)]
        try:
            out = call(model, to_tensors(xb, model))
            if with_output:  # what predict reads from the same call
                sink(MODEL_OUTPUT, first_tensor(out, type(model).__name__))
        finally:
            for handle in handles:
                handle.remove()
    missing = [n for n in names if n not in seen]
    if missing:
        raise DataError(f"layer {missing[0]!r} is not called in the forward pass")


def _interpreted(model: nn.Module, gm: fx.GraphModule, xb: Any, wanted: dict[fx.Node, str], with_output: bool,
                 sink: Callable[[str, torch.Tensor], None]) -> None:
    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            value = super().run_node(n)
            if n in wanted:
                if not isinstance(value, torch.Tensor):
                    raise UnsupportedModelError(f"graph node {wanted[n]!r} yields {type(value).__name__}, not a tensor")
                sink(wanted[n], value)
            return value

    with inference(model), torch.no_grad():
        out = Recorder(gm).run(*placeholder_args(gm, to_tensors(xb, model)))
    # A graph that returns one tensor returns what the model does; a structure may have been flattened
    # by the capture (torch.export), so the model's own output is left to predict then.
    if with_output and isinstance(out, torch.Tensor):
        sink(MODEL_OUTPUT, out)


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 numpy view of ``t`` (a copy only when its dtype or device differ)."""
    return t.detach().to("cpu", torch.float32).numpy()


# ---------------------------------------------------------------------------------------------- gradients
def learned_weights(model: nn.Module, layer_names: Iterable[str]) -> dict[tuple[str, str], torch.Tensor]:
    """(layer, neutral name) -> the leaf parameter of every learned weight: kernel, bias, gamma, beta,
    frozen (``requires_grad=False``) or not; batch-norm statistics are no parameters.

    A masked kernel's leaf is the parametrization's ``original``; its gradient is the unmasked one.
    """
    out: dict[tuple[str, str], torch.Tensor] = {}
    for name in layer_names:
        module = submodule(model, name)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            pairs = {k: getattr(module, v) for k, v in _BN_TRAINABLE.items()}
        else:
            pairs = {neutral(module, p): t for p, t in module.named_parameters(recurse=False)}
            if parametrize.is_parametrized(module):
                for p in module.parametrizations.keys():
                    pairs[neutral(module, p)] = module.parametrizations[p].original
        for key, tensor in pairs.items():
            if isinstance(tensor, nn.Parameter):
                out[(name, key)] = tensor
    return out


def weight_gradients(model: nn.Module, layer_names: list[str], data: Any, settings: FineTune,
                     batches: int) -> dict[str, dict[str, np.ndarray]]:
    """Mean over the first ``batches`` batches of d(training loss)/d(weight), native layout, float32,
    for every learned weight (frozen ones too; see :func:`learned_weights`).

    The model runs in eval mode: batch norm normalises with its running statistics (as at inference)
    and dropout is off, so the gradients are those of the function the model computes when deployed,
    and no running statistic moves. Batches are ``settings.batch_size`` samples of ``(x, y)`` in order
    (no shuffling); a DataLoader is read as it is, its first ``batches`` batches.
    """
    params = learned_weights(model, layer_names)
    if not params:
        return {}
    frozen = [t for t in params.values() if not t.requires_grad]
    loss_fn, _ = make_loss(settings)
    device = model_device(model)
    keys, leaves = list(params), list(params.values())
    total = [torch.zeros_like(t) for t in leaves]
    for t in frozen:  # a frozen backbone is still pruned, and Taylor scores need its gradients
        t.requires_grad_(True)
    try:
        used = _accumulate(model, data, settings, batches, loss_fn, device, leaves, total)
    finally:
        for t in frozen:
            t.requires_grad_(False)
    if used == 0:
        raise DataError("train_data: no batches to compute gradients from")
    result: dict[str, dict[str, np.ndarray]] = {}
    for (layer, key), acc in zip(keys, total):
        result.setdefault(layer, {})[key] = (acc / used).cpu().float().numpy()
    return result


def _accumulate(model: nn.Module, data: Any, settings: FineTune, batches: int, loss_fn: Any,
                device: torch.device, leaves: list[torch.Tensor], total: list[torch.Tensor]) -> int:
    """Adds each batch's gradients of ``leaves`` to ``total``; returns the batches used."""
    used = 0
    with inference(model), torch.enable_grad():
        for xb, yb in _batches(model, data, settings, batches):
            xb = xb if _is_tensors(xb) else to_tensors(xb, model)
            out = first_tensor(call(model, xb), type(model).__name__)
            loss = loss_fn(out, _labels(yb, device, settings, tuple(out.shape[1:])))
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            for acc, g in zip(total, grads):
                if g is not None:
                    acc.add_(g.detach())
            used += 1
    return used


def _batches(model: nn.Module, data: Any, settings: FineTune, batches: int) -> Iterable[tuple[Any, Any]]:
    if isinstance(data, torch.utils.data.DataLoader):  # batches split, converted and checked as fit has them
        for i, batch in enumerate(CheckedLoader(data, model, settings.loss)):
            if i >= batches:
                return
            yield batch
        return
    if not is_array_pair(data):
        raise DataError(
            f"train_data: expected an (x, y) tuple of arrays or a torch DataLoader, got {type(data).__name__}")
    x, y = as_arrays(data, "train_data", need_labels=True)
    size = settings.batch_size
    for b in range(min(batches, -(-n_samples(x) // size))):
        yield take(x, slice(b * size, (b + 1) * size)), y[b * size:(b + 1) * size]


def _is_tensors(x: Any) -> bool:
    return all(isinstance(t, torch.Tensor) for t in leaves(x))


def _labels(y: Any, device: torch.device, settings: FineTune, out_shape: tuple[int, ...]) -> torch.Tensor:
    """A loader's labels as :class:`.loaders.CheckedLoader` prepared them; numpy labels in core's form
    (``slimkit.labels``), as fit uses."""
    if isinstance(y, torch.Tensor):
        return y.to(device)
    y = prepare_labels(np.asarray(y), settings.loss, out_shape, len(y))
    return torch.as_tensor(y, device=device)
