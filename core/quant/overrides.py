"""Checks of a quantize stage's ``overrides`` against the layers the stage quantizes."""

from __future__ import annotations

from typing import Sequence

from slimkit.adapter import LayerInfo
from slimkit.recipe import QuantizeStage
from slimkit.selection import picks, unmatched_override


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
        if not any(picks(override.layers, layer) for layer in layers):
            raise unmatched_override(override.layers, list(layers), f"{field}.overrides[{i}].layers", "quantizes")
