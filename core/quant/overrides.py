"""Checks of a quantize stage's ``overrides`` against the layers the stage quantizes."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Sequence

from slimkit.adapter import LayerInfo
from slimkit.errors import RecipeError
from slimkit.recipe import LayerSelector, QuantizeStage


def picks(selector: LayerSelector, layer: LayerInfo) -> bool:
    """Whether ``selector`` picks ``layer`` (names, minus excludes, of the kinds named)."""
    return (any(fnmatchcase(layer.name, g) for g in selector.names)
            and not any(fnmatchcase(layer.name, g) for g in selector.exclude)
            and (selector.kinds is None or any(layer.matches_kind(k) for k in selector.kinds)))


def check_overrides(stage: QuantizeStage, layers: Sequence[LayerInfo], field: str) -> None:
    """Refuses an override that picks none of the stage's layers, as a stage selector matching no
    layer is refused: its settings would silently apply to nothing (a typo in a name, say).

    Args:
        stage: the quantize stage.
        layers: the layers its selector picked.
        field: the stage's recipe path (``stages[1].quantize``).

    Raises:
        RecipeError: naming the override, its selector and the layers it could have picked.
    """
    for i, override in enumerate(stage.overrides):
        if any(picks(override.layers, layer) for layer in layers):
            continue
        sel = override.layers
        listing = ", ".join(f"{layer.name} ({layer.kind})" for layer in layers) or "(none)"
        raise RecipeError(
            f"{field}.overrides[{i}].layers: selector (names={list(sel.names)}, kinds="
            f"{None if sel.kinds is None else list(sel.kinds)}, exclude={list(sel.exclude)}) matches no layer "
            f"this stage quantizes; its layers are: {listing}"
        )
