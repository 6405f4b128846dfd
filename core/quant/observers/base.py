"""What a calibration observer is, and the registry of observers.

An observer folds calibration batches into bounded statistics (``update(x)``, any array shape) and
gives a clipping range (``range() -> (min, max)``, float32 arrays) that feeds
:func:`slimkit.quant.params.params_from_range`. Each is a registered plugin with a frozen options
dataclass and a :meth:`build` from its options and the recipe's activation settings.

An observer class whose ``keeps_batches`` attribute is False promises that ``update`` keeps no reference
to its batch: calibration then hands it the framework's own buffer (a view valid during the call) and
copies nothing. Without that attribute every batch is a copy the observer may keep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from slimkit.plugins import Registry

if TYPE_CHECKING:
    from slimkit.recipe import ActivationQuant

Range = tuple[np.ndarray, np.ndarray]

#: name -> observer class (``minmax``, ``percentile``, ``entropy``, ``mse``); recipe validation
#: (``activations.calibration``) reads it.
OBSERVERS: Registry[type] = Registry("calibration observer", builtins=(
    "slimkit.quant.observers.minmax", "slimkit.quant.observers.percentile", "slimkit.quant.observers.entropy",
    "slimkit.quant.observers.mse"))


def _finite_flat(x: Any) -> np.ndarray:
    """``x`` flattened to float64 with non-finite values dropped."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    return flat[np.isfinite(flat)]




def build_observer(name: str, options: Any, settings: "ActivationQuant") -> Any:
    """The registered observer ``name`` for one activation tensor (its defaults when ``options`` is None)."""
    entry = OBSERVERS.get(name)
    return entry.impl.build(options if options is not None else entry.options(), settings)


def make_observer(name: str, axis: int | None = None, **kwargs: Any) -> Any:
    """An observer by name (case-insensitive) with constructor arguments, e.g. ``percentile=99.9``.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    key = str(name).lower()
    if key not in OBSERVERS:
        raise ValueError(f"unknown observer {name!r}; valid names: {', '.join(sorted(OBSERVERS.names()))}")
    return OBSERVERS.get(key).impl(axis=axis, **kwargs)
