"""What an algorithm may ask of a framework, as small capabilities (the model, its structure, its
quantization) plus :class:`slimkit.ops.TensorOps`; each framework implements them in
``slimkit.adapters.<framework>``.

Algorithms check for the capability they need with :func:`require`, so an adapter that implements
only :class:`ModelAdapter` still serves what needs no more.
"""

from __future__ import annotations

from typing import Any, TypeVar

from slimkit.adapter.hooks import FitFn, HookChain, StepCallback, TrainHooks
from slimkit.adapter.model import LayerInfo, ModelAdapter
from slimkit.adapter.quant import QuantAdapter
from slimkit.adapter.saving import SavingAdapter
from slimkit.adapter.structure import MODEL_OUTPUT, StructureAdapter
from slimkit.errors import UnsupportedModelError

C = TypeVar("C")


def require(adapter: Any, capability: type[C], feature: str) -> C:
    """``adapter`` as ``capability``, or UnsupportedModelError naming the feature that needs it.

    Raises:
        UnsupportedModelError: the adapter does not implement ``capability``.
    """
    if not isinstance(adapter, capability):
        raise UnsupportedModelError(
            f"{feature} needs the {capability.__name__} capability, which {type(adapter).__name__} "
            f"(framework {getattr(adapter, 'framework', '?')!r}) does not implement"
        )
    return adapter


__all__ = ["FitFn", "HookChain", "LayerInfo", "MODEL_OUTPUT", "ModelAdapter", "QuantAdapter", "SavingAdapter", "StepCallback", "StructureAdapter",
           "TrainHooks", "require"]
