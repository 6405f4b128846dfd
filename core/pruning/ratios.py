"""Per-layer pruning ratios: a prune stage's ``overrides`` resolved against the layers it prunes.

A stage prunes its layers to ``sparsity``; an override gives the layers it picks their own value, the
last override that picks a layer winning. Pruners compute masks for a *target*: one number (every
layer alike, as tools and tests ask for ``choose(0.5)``) or a :data:`Ramp`, a function from a layer's
own final sparsity to its sparsity now. Ramps are how a schedule (:func:`schedule_ramp`), lottery
rounds and ADMM's projection (:data:`FINAL`) bring every layer to its own value along one shape.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence, Union

from slimkit.adapter import LayerInfo
from slimkit.errors import RecipeError
from slimkit.recipe import PruneStage, Schedule
from slimkit.schedules import sparsity_at
from slimkit.selection import picks, unmatched_override

#: A layer's final sparsity -> the sparsity it is pruned to now.
Ramp = Callable[[float], float]
#: What pruners prune to: one sparsity for every layer, or a ramp of each layer's own.
Target = Union[float, Ramp]


def final(sparsity: float) -> float:
    """The ramp at the end of pruning: every layer at its own final sparsity."""
    return sparsity


#: Every layer at its own final sparsity (the stage's ``sparsity``, or its override's).
FINAL: Ramp = final


def schedule_ramp(schedule: Schedule, step: int, total_steps: int) -> Ramp:
    """The ramp of ``schedule`` after optimizer step ``step``: each layer follows the schedule's shape
    to its own final sparsity (:func:`slimkit.schedules.sparsity_at`)."""
    return lambda target: sparsity_at(schedule, target, step, total_steps)


def at(target: Target, final_sparsity: float) -> float:
    """The sparsity now of a layer whose final sparsity is ``final_sparsity``."""
    return target(final_sparsity) if callable(target) else target


def reaches_final(target: Target, finals: Iterable[float]) -> bool:
    """Whether ``target`` prunes every layer (of these final sparsities) to its final value."""
    return all(at(target, f) == f for f in finals)


def overridden(stage: PruneStage, layers: Sequence[LayerInfo]) -> set[str]:
    """The names of ``layers`` that some override of ``stage`` picks."""
    return {layer.name for layer in layers if any(picks(o.layers, layer) for o in stage.overrides)}


def layer_ratios(stage: PruneStage, layers: Sequence[LayerInfo]) -> dict[str, float]:
    """Each layer's final sparsity: that of the last override picking it, else the stage's.

    Args:
        stage: the prune stage.
        layers: the layers it prunes, in model order.

    Returns:
        layer name -> final sparsity (channel ratio for channel pruning), in model order.
    """
    ratios = {}
    for layer in layers:
        ratio = stage.sparsity
        for override in stage.overrides:
            if picks(override.layers, layer):
                ratio = override.sparsity
        ratios[layer.name] = ratio
    return ratios


def check_overrides(stage: PruneStage, takes_overrides: bool, layers: Sequence[LayerInfo],
                    path: str) -> dict[str, float]:
    """Refuses overrides the stage's method cannot honour, or that pick none of its layers (their
    sparsity would silently apply to nothing: a typo in a name, say); returns :func:`layer_ratios`.

    Args:
        stage: the prune stage.
        takes_overrides: whether its method prunes layers to their own ratios.
        layers: the layers the stage's selector picked.
        path: the stage's recipe path (``stages[0].prune``).

    Raises:
        RecipeError: naming ``overrides`` (or the override's ``layers``) and why.
    """
    if stage.overrides and not takes_overrides:
        raise RecipeError(f"{path}.overrides: method {stage.method} prunes every layer alike and takes no "
                          "per-layer overrides")
    for j, override in enumerate(stage.overrides):
        if not any(picks(override.layers, layer) for layer in layers):
            raise unmatched_override(override.layers, list(layers), f"{path}.overrides[{j}].layers", "prunes")
    return layer_ratios(stage, layers)


def requested_share(ratios: dict[str, float], default: float, sizes: dict[str, int]) -> float:
    """The share of the weights in ``sizes`` (layer -> weight count) a stage asks to remove: each
    layer's own ratio, ``default`` (the stage's sparsity) for the layers it does not prune, weighted
    by their sizes; exactly ``default`` without overrides."""
    total = sum(sizes.values())
    if not total or all(r == default for r in ratios.values()):
        return default
    return sum(n * ratios.get(name, default) for name, n in sizes.items()) / total
