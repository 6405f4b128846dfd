"""Finds the adapter for a model object, importing only frameworks the user already loaded.

Like einops' backend lookup: ``torch`` is never imported to check a Keras model, and vice versa. An
adapter module is imported only if its framework is already in ``sys.modules``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from slimkit.adapter import ModelAdapter
from slimkit.errors import UnsupportedModelError

# framework module that must be loaded -> adapter module and class
_ADAPTERS = (
    (("keras", "tf_keras", "tensorflow"), "slimkit.adapters.keras.adapter", "KerasAdapter"),
    (("torch",), "slimkit.adapters.torch.adapter", "TorchAdapter"),
)


_REGISTERED: list[type[ModelAdapter]] = []


def register_adapter(cls: type[ModelAdapter]) -> None:
    """Adds an adapter class, tried before the built-in ones (for other frameworks, or test fakes)."""
    if cls not in _REGISTERED:
        _REGISTERED.insert(0, cls)


def unregister_adapter(cls: type[ModelAdapter]) -> None:
    """Removes an adapter added with :func:`register_adapter`."""
    if cls in _REGISTERED:
        _REGISTERED.remove(cls)


def adapter_class(model: Any) -> type[ModelAdapter]:
    """The adapter class that accepts ``model``.

    Raises:
        UnsupportedModelError: no loaded framework owns ``model``.
    """
    for cls in _REGISTERED:
        if cls.accepts(model):
            return cls
    for modules, module_name, class_name in _ADAPTERS:
        if not any(m in sys.modules for m in modules):
            continue
        cls = getattr(importlib.import_module(module_name), class_name)
        if cls.accepts(model):
            return cls
    raise UnsupportedModelError(
        f"unsupported model type {type(model).__module__}.{type(model).__qualname__}: slimkit "
        "compresses keras.Model (Keras 3 or tf_keras) and torch.nn.Module objects"
    )


def adapter_named(framework: str) -> type[ModelAdapter] | None:
    """The adapter class whose ``framework`` is ``framework`` (importing that framework), or None.

    Adapters whose framework is already imported are asked first, so that reading a PyTorch folder
    after ``import torch`` does not import TensorFlow on the way."""
    for cls in _REGISTERED:
        if getattr(cls, "framework", None) == framework:
            return cls
    for loaded_first in (True, False):
        for modules, module_name, class_name in _ADAPTERS:
            if loaded_first != any(m in sys.modules for m in modules):
                continue
            try:
                cls = getattr(importlib.import_module(module_name), class_name)
            except ImportError:
                continue
            if getattr(cls, "framework", None) == framework:
                return cls
    return None


def adapter_for_file(path: Any, suffixes: str = "model_file_suffixes") -> type[ModelAdapter] | None:
    """The adapter class that loads model files with ``path``'s suffix, or None.

    ``suffixes`` names the class attribute listing the suffixes: ``model_file_suffixes`` (whole models
    read safely), ``weights_file_suffixes`` (weights onto an architecture) or ``trusted_file_suffixes``
    (files that may run code when loaded). Adapters whose framework is already imported are asked
    first; the others are imported only when none of those knows the suffix."""
    suffix = str(path).lower().rsplit(".", 1)[-1] if "." in str(path) else ""
    seen: list[type[ModelAdapter]] = list(_REGISTERED)
    for loaded_first in (True, False):
        for modules, module_name, class_name in _ADAPTERS:
            if loaded_first != any(m in sys.modules for m in modules):
                continue
            try:
                seen.append(getattr(importlib.import_module(module_name), class_name))
            except ImportError:
                continue
        for cls in seen:
            if f".{suffix}" in getattr(cls, suffixes, ()):
                return cls
    return None


def adapter_for(model: Any) -> ModelAdapter:
    """An adapter over ``model`` itself (for read-only work such as export)."""
    return adapter_class(model)(model)


def adapter_for_copy(model: Any) -> ModelAdapter:
    """An adapter over an independent copy of ``model`` (for work that changes it)."""
    return adapter_class(model).copy_of(model)
