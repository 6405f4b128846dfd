"""Running a user's PyTorch model without changing anything of it, and what a working copy keeps.

slimkit runs the user's own module for input checks, the "before" metrics and exports. ``model.eval()``
followed by ``model.train(was_training)`` would reset every submodule to the top-level flag (a user's
``model.train(); model.bn1.eval()`` would come back with ``bn1.training == True``), so
:func:`inference` records each submodule's flag and restores it exactly.

Forward and backward hooks are split in two. PyTorch's own hook-based reparametrizations (legacy
``weight_norm``, ``spectral_norm``, ``torch.nn.utils.prune``) compute the weights the module uses, so
they are part of the model and always run. Every other hook is the user's instrumentation (activation
recorders, loggers): it is suspended while slimkit runs the user's model, and a working copy
(:func:`drop_instrumentation`) does not carry it, so it never fires during ``compress`` and the
returned model has none.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Iterator

import torch
from torch import nn

from slimkit.errors import UnsupportedModelError

#: Per-module hook tables that run during forward or backward passes.
_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")

#: Floating types slimkit runs a model in (data is cast to the model's type); quantization needs float32.
RUNNABLE_DTYPES = (torch.float32, torch.float64)


def _computational() -> tuple[type, ...]:
    """Hook classes by which PyTorch itself computes a module's weights (imported on first use)."""
    from torch.nn.utils.prune import BasePruningMethod
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return (BasePruningMethod, SpectralNorm, WeightNorm)


def is_instrumentation(hook: Any) -> bool:
    """True for a hook that observes the model rather than computes its weights (see the module docstring)."""
    return not isinstance(hook, _computational())


def _without_instrumentation(table: "OrderedDict[int, Any]") -> "OrderedDict[int, Any]":
    return OrderedDict((key, hook) for key, hook in table.items() if not is_instrumentation(hook))


@contextlib.contextmanager
def inference(model: nn.Module, suspend_hooks: bool = True) -> Iterator[nn.Module]:
    """``model`` in eval mode with its instrumentation hooks suspended (unless ``suspend_hooks`` is
    False: a working copy, which has none of the user's, or a graph capture that must see every hook);
    afterwards every submodule's training flag and hook table are exactly what they were (the same
    objects). Hooks registered inside go with the context."""
    flags = [(module, module.training) for module in model.modules()]
    saved = []
    for module, _ in (flags if suspend_hooks else []):
        for table in _HOOK_TABLES:
            hooks = getattr(module, table, None)
            if hooks:
                saved.append((module, table, hooks))
                # a filtered copy: hooks registered meanwhile land in it and go with it
                setattr(module, table, _without_instrumentation(hooks))
    try:
        model.eval()
        yield model
    finally:
        for module, table, hooks in saved:
            setattr(module, table, hooks)
        for module, training in flags:
            module.training = training  # the attribute, not train(): train() recurses into children


def drop_instrumentation(model: nn.Module) -> nn.Module:
    """Removes the instrumentation hooks from ``model`` (a working copy) in place; returns it."""
    for module in model.modules():
        for table in _HOOK_TABLES:
            hooks = getattr(module, table, None)
            if hooks:
                for key in [k for k, hook in hooks.items() if is_instrumentation(hook)]:
                    del hooks[key]
    return model


def float_dtypes(model: nn.Module) -> list[torch.dtype]:
    """The distinct floating types of the model's parameters, in order of appearance (buffers may hold
    anything: a float32 model can keep a half-precision table it never computes with)."""
    seen: list[torch.dtype] = []
    for tensor in model.parameters():
        if tensor.is_floating_point() and tensor.dtype not in seen:
            seen.append(tensor.dtype)
    return seen


def check_dtype(model: nn.Module, feature: str, allowed: tuple[torch.dtype, ...] = RUNNABLE_DTYPES) -> None:
    """Raises UnsupportedModelError naming the dtype when the model holds floating tensors of a type
    ``feature`` cannot run in (half precision: its exported graph cannot be verified against the
    framework; anything but float32 for quantization).

    Raises:
        UnsupportedModelError: a floating parameter or buffer is not of an ``allowed`` type.
    """
    bad = [d for d in float_dtypes(model) if d not in allowed]
    if bad:
        names = " and ".join(str(d).replace("torch.", "") for d in allowed)
        raise UnsupportedModelError(
            f"{type(model).__qualname__} holds {str(bad[0]).replace('torch.', '')} parameters; {feature} "
            f"supports {names} PyTorch models: convert a copy with .float() first"
        )
