"""Saving a PyTorch model as safetensors plus its layers' shapes, and loading it onto an architecture.

PyTorch modules are Python code, which a safe file cannot hold: the folder keeps the weights
(``safetensors``, no pickle; tied tensors stored once) and each layer's weight shapes. Loading takes
an instance of the architecture as it was before compression, rebuilds on a copy of it every layer
whose shapes differ (the same rebuild channel and head pruning use: smaller Linear/conv/batch-norm
layers, attention blocks with fewer heads) and loads every tensor, strictly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from slimkit.errors import DataError, ExportError

from slimkit.adapters.torch import naming, quant
from slimkit.adapters.torch.rebuild import shrink_model

WEIGHTS = "model.safetensors"
_BN_NATIVE = {"gamma": "weight", "beta": "bias", "mean": "running_mean", "var": "running_var"}


def save_files(model: nn.Module, layers: dict[str, dict[str, tuple[int, ...]]], folder: Path) -> dict[str, Any]:
    """Writes ``model``'s tensors into ``folder``; returns the manifest entry (file, class, layer shapes)."""
    from safetensors.torch import save_model

    if quant.has_fake_quant(model):
        raise ExportError(
            f"save: {type(model).__qualname__} holds fake-quantized layers, which have no safe PyTorch file "
            "format; deploy a quantized model with export_onnx, or save it before quantization"
        )
    try:
        save_model(model, str(folder / WEIGHTS))
    except Exception as exc:  # safetensors refuses non-contiguous views and the like
        raise ExportError(f"save: writing {WEIGHTS} of {type(model).__qualname__} failed: {exc}") from exc
    return {"weights": WEIGHTS, "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "layers": {name: {k: list(v) for k, v in shapes.items()} for name, shapes in layers.items()}}


def _native(module: nn.Module, key: str) -> str:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _BN_NATIVE.get(key, key)
    return naming.native(module, key)


def load_files(folder: Path, entry: dict[str, Any], model: nn.Module | None,
               layers: dict[str, dict[str, tuple[int, ...]]]) -> nn.Module:
    """The saved model on a copy of ``model`` (whose current layer shapes are ``layers``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, load_model

    path = folder / str(entry.get("weights", WEIGHTS))
    if model is None:
        raise DataError(
            f"load: {folder} holds a PyTorch model ({entry.get('class', '?')}); PyTorch architectures are code, "
            "so pass an instance of it as it was before compression: slimkit.load(path, model=MyModel())"
        )
    saved = {name: {k: tuple(v) for k, v in shapes.items()} for name, shapes in entry.get("layers", {}).items()}
    unknown = sorted(set(saved) - set(layers))
    if unknown:
        raise DataError(f"load: {folder} has layer {unknown[0]!r}, which {type(model).__qualname__} lacks; "
                        "pass the architecture the model was compressed from")
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise DataError(f"load: {path} cannot be read: {exc}") from None
    changed: dict[str, dict[str, np.ndarray]] = {}
    for name, shapes in saved.items():
        if shapes == layers[name]:
            continue
        module = naming.submodule(model, name)
        prefix = "" if module is model else f"{name}."
        weights = {}
        for key in shapes:
            native = _native(module, key)
            if f"{prefix}{native}" not in tensors:
                raise DataError(f"load: {path} has no tensor {prefix}{native} for layer {name!r}")
            weights[key] = tensors[f"{prefix}{native}"].numpy()
        changed[name] = weights
    new = shrink_model(model, changed) if changed else shrink_model(model, {})
    try:
        load_model(new, str(path), strict=True)
    except (RuntimeError, OSError, SafetensorError) as exc:
        raise DataError(f"load: {path} does not fit {type(model).__qualname__} after its saved layer shapes were "
                        f"applied: {exc}") from None
    return new.eval()
