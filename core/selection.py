"""Layer selectors: name globs, kinds and excludes resolved against a model's layers."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from slimkit.adapter import LayerInfo
from slimkit.errors import RecipeError
from slimkit.recipe import LayerSelector


def _listing(layers: list[LayerInfo]) -> str:
    return ", ".join(f"{layer.name} ({layer.kind})" for layer in layers) or "(none)"


def picks(selector: LayerSelector, layer: LayerInfo) -> bool:
    """Whether ``selector`` picks ``layer`` (names, minus excludes, of the kinds named), whatever the
    kinds a stage supports: how per-layer overrides within a stage's layers are matched."""
    return (any(fnmatchcase(layer.name, g) for g in selector.names)
            and not any(fnmatchcase(layer.name, g) for g in selector.exclude)
            and (selector.kinds is None or any(layer.matches_kind(k) for k in selector.kinds)))


def unmatched_override(selector: LayerSelector, layers: list[LayerInfo], field: str, verb: str) -> RecipeError:
    """The error for an override whose selector (at ``field``) picks none of a stage's ``layers``, as a
    stage selector matching no layer is refused: its settings would silently apply to nothing (a typo in
    a name, say). ``verb`` says what the stage does to its layers (``quantizes``, ``prunes``)."""
    listing = _listing(layers)
    return RecipeError(
        f"{field}: selector (names={list(selector.names)}, kinds="
        f"{None if selector.kinds is None else list(selector.kinds)}, exclude={list(selector.exclude)}) matches no "
        f"layer this stage {verb}; its layers are: {listing}"
    )


def select_layers(
    layers: list[LayerInfo],
    selector: LayerSelector,
    supported_kinds: tuple[str, ...],
    field: str,
) -> list[LayerInfo]:
    """The layers a selector picks, in model order.

    Args:
        layers: every weighted layer of the model.
        selector: globs, kinds and excludes from the recipe.
        supported_kinds: neutral kinds the algorithm can handle; used when the selector names none.
        field: the recipe path of the selector, for messages.

    Raises:
        RecipeError: the selector matches no layer (the message lists the layers that exist), names a
            kind the stage cannot handle, or names outright a layer of such a kind.
    """
    for kind in selector.kinds or ():
        if re.sub(r"[123]d$", "", kind) not in supported_kinds:
            raise RecipeError(
                f"{field}.kinds: this stage cannot handle kind {kind!r}; it handles {', '.join(supported_kinds)}"
            )
    picked = []
    for layer in layers:
        if not any(fnmatchcase(layer.name, g) for g in selector.names):
            continue
        if any(fnmatchcase(layer.name, g) for g in selector.exclude):
            continue
        if selector.kinds is not None and not any(layer.matches_kind(k) for k in selector.kinds):
            continue
        if layer.kind not in supported_kinds:
            # A glob may sweep over layers the stage cannot handle; naming one outright is an error.
            if layer.name in selector.names:
                raise RecipeError(
                    f"{field}: layer {layer.name!r} ({layer.type_name}, kind {layer.kind}) is not "
                    f"supported by this stage, which handles {', '.join(supported_kinds)}"
                )
            continue
        picked.append(layer)
    if not picked:
        raise RecipeError(
            f"{field}: selector (names={list(selector.names)}, kinds="
            f"{None if selector.kinds is None else list(selector.kinds)}, exclude={list(selector.exclude)}) "
            f"matches no layer of this model; its layers are: {_listing(layers)}"
        )
    return picked
