"""Model inputs as PyTorch models take them, and the one output slimkit reads from what they return.

Inputs (see :mod:`slimkit.data`): one array is ``model(x)``, a tuple of arrays ``model(*xs)``, a dict
``model(**named)`` (``forward`` keyword arguments, as a tokenizer returns them). Integer and boolean
arrays (token ids, attention masks) stay integers (int64) and booleans; every other array (floats of
any width, uint8 image pixels, unscaled) becomes the model's float type. The output slimkit reads is the model's tensor, or the ``logits`` of a
transformers ``ModelOutput``, or else the first tensor of a tuple, list or dict output.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.data import is_integer, leaves, map_inputs
from slimkit.errors import DataError, UnsupportedModelError


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def float_dtype(model: nn.Module) -> torch.dtype:
    """The model's floating type: that of its first floating parameter (float32 without one)."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def to_tensor(a: Any, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One array as a tensor: integers as int64, booleans as bool, anything else as ``dtype``."""
    if isinstance(a, torch.Tensor):  # a DataLoader's batch: floats and pixels to the model's type, on its device
        return a.to(device=device, dtype=dtype) if a.is_floating_point() or a.dtype == torch.uint8 else a.to(device)
    arr = np.asarray(a)
    if arr.dtype.kind == "b":
        return torch.as_tensor(arr, dtype=torch.bool, device=device)
    if is_integer(arr):
        return torch.as_tensor(arr.astype(np.int64, copy=False), device=device)
    return torch.as_tensor(arr, device=device).to(dtype)


def to_tensors(x: Any, model: nn.Module) -> Any:
    """Model inputs ``x`` (numpy, any form) as tensors on the model's device, in the same form."""
    device, dtype = model_device(model), float_dtype(model)
    return map_inputs(x, lambda a: to_tensor(a, device, dtype))


def misfit(what: str, shapes: list[tuple[int, ...]], model: nn.Module, exc: BaseException) -> DataError:
    """The DataError for inputs of ``shapes`` the model failed on, with the framework's first line and,
    for images that look channels-last, the layout PyTorch expects."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    hint = ""
    if len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][3] in (1, 3, 4) and shapes[0][1] not in (1, 3, 4):
        hint = ("; it looks channels-last (N, H, W, C): PyTorch models take images channels-first (N, C, H, W), "
                "transpose with x.transpose(0, 3, 1, 2)")
    return DataError(f"{what}: input of shape {shapes[0] if len(shapes) == 1 else shapes} does not fit "
                     f"{type(model).__name__} ({first}){hint}")


def call(model: nn.Module, inputs: Any) -> Any:
    """``model`` applied to tensor inputs in their form: one, positional, or keyword arguments."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def first_tensor(out: Any, where: str) -> torch.Tensor:
    """The output slimkit reads (see the module docstring).

    Raises:
        UnsupportedModelError: the output holds no tensor; the message names the model.
    """
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) or hasattr(out, "keys"):
        logits = out.get("logits") if hasattr(out, "get") else None
        if isinstance(logits, torch.Tensor):
            return logits
        values = list(out.values())
    elif isinstance(out, (tuple, list)):
        values = list(out)
    else:
        values = []
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    raise UnsupportedModelError(
        f"{where} returns {type(out).__name__} with no tensor in it; slimkit reads a model's tensor output, "
        "the logits of a transformers output, or the first tensor of a tuple, list or dict"
    )


def arguments(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for exporters and tracers that take them apart."""
    if isinstance(inputs, dict):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def input_names(model: nn.Module, x: Any) -> list[str]:
    """Graph input names for an export: the dict's keys, the ``forward`` parameters' names for
    positional inputs, or ``input`` for a single one."""
    if isinstance(x, dict):
        return list(x)
    if not isinstance(x, (tuple, list)):
        return ["input"]
    try:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"input_{i}" for i in range(len(x))]


def dynamic_axes(names: list[str], x: Any) -> dict[str, dict[int, str]]:
    """A dynamic batch axis for every input, and a dynamic sequence axis for integer inputs of rank 2
    or more (token ids and masks)."""
    axes = {}
    for name, a in zip(names, leaves(x)):
        axes[name] = {0: "batch"}
        if is_integer(a) and np.ndim(a) >= 2:
            axes[name][1] = "sequence"
    return axes
