"""The search space over one model: named dimensions, candidates, and the plain recipe of a candidate.

A dimension is one setting a trial may change (``sparsity:conv2``, ``float:dense``, ``calibration``...),
with its choices ordered from the least to the most compressed where that order exists. A candidate
gives a value to some dimensions; the others keep the recipe's own. :func:`candidate_recipe` writes a
candidate as an edit of the user's own recipe mapping (without ``tune:``), which is what a trial runs and
what the tuner returns: re-run as it is, it reproduces the trial.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from slimkit.errors import RecipeError
from slimkit.recipe import PruneStage, QuantizeStage, Recipe
from slimkit.selection import select_layers
from slimkit.tune.recipe import Space, Tune

SPARSITY, FLOAT, BITS = "sparsity:", "float:", "bits:"


@dataclass(frozen=True)
class Dimension:
    """One setting: ``choices`` from least to most compressed (where that order exists) and the recipe's
    own value (``base``)."""

    name: str
    choices: tuple[Any, ...]
    base: Any

    @property
    def layer(self) -> str | None:
        return self.name.split(":", 1)[1] if ":" in self.name else None


Candidate = tuple[tuple[str, Any], ...]  # (dimension, value) pairs in the space's dimension order


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions a tuning run searches, for one recipe and one model.

    Attributes:
        dims: every dimension, in order: per-layer sparsity, per-layer float, per-layer bits, then the
            quantize stage's calibration, percentile and weight granularity.
        prune_index: the searched prune stage's index in ``recipe.stages`` (None without one).
        quant_index: the quantize stage's index (None without one).
        params: layer -> its number of kernel weights (how much a layer's setting weighs).
    """

    dims: tuple[Dimension, ...]
    prune_index: int | None
    quant_index: int | None
    params: Mapping[str, int]

    def dim(self, name: str) -> Dimension:
        return next(d for d in self.dims if d.name == name)

    def names(self, prefix: str) -> list[str]:
        return [d.name for d in self.dims if d.name.startswith(prefix)]

    def base(self) -> Candidate:
        """The recipe's own settings."""
        return tuple((d.name, d.base) for d in self.dims)

    def safest(self) -> Candidate:
        """The candidate closest to the float model: nothing pruned, every layer float, the recipe's other
        settings."""
        values = {d.name: (0.0 if d.name.startswith(SPARSITY) else True) for d in self.dims
                  if d.name.startswith((SPARSITY, FLOAT))}
        return self.make(values)

    def make(self, values: Mapping[str, Any]) -> Candidate:
        """A full candidate: ``values`` over the recipe's own settings."""
        unknown = [k for k in values if k not in {d.name for d in self.dims}]
        if unknown:
            raise KeyError(unknown[0])
        return tuple((d.name, values.get(d.name, d.base)) for d in self.dims)


def build_space(recipe: Recipe, tune: Tune, layers: list[Any]) -> SearchSpace:
    """The search space of ``recipe`` on a model whose layers are ``layers`` (``LayerInfo`` list).

    The first prune stage that sets kernel sparsity or removes channels is searched (per-layer ratios
    from ``space.sparsity``); the quantize stage gives per-layer float fallback, bits, calibration and
    granularity.

    Raises:
        RecipeError: the recipe has nothing to search (no prune or quantize stage).
    """
    from slimkit.pruning.methods import method_of as prune_method
    from slimkit.quant.methods import method_of as quant_method

    space: Space = tune.space
    dims: list[Dimension] = []
    params: dict[str, int] = {}
    prune_index = quant_index = None
    for index, stage in enumerate(recipe.stages):
        if isinstance(stage, PruneStage) and prune_index is None and prune_method(stage).takes_sparsity:
            prune_index = index
            field = f"stages[{index}].prune.layers"
            chosen = select_layers(layers, stage.layers, prune_method(stage).kinds, field)
            choices = tuple(sorted(set(space.sparsity) | {0.0, stage.sparsity}))
            for info in chosen:
                params[info.name] = _kernel_params(info)
                dims.append(Dimension(SPARSITY + info.name, choices, stage.sparsity))
        elif isinstance(stage, QuantizeStage):
            quant_index = index
            method = quant_method(stage)
            chosen = select_layers(layers, stage.layers, method.kinds, f"stages[{index}].quantize.layers")
            for info in chosen:
                params.setdefault(info.name, _kernel_params(info))
            if space.float_layers:
                dims.extend(Dimension(FLOAT + i.name, (True, False), False) for i in chosen)
            if space.bits:
                dims.extend(Dimension(BITS + i.name, space.bits, stage.weights.bits) for i in chosen)
            calibrations = tuple(dict.fromkeys((stage.activations.calibration, *space.calibration)))
            if len(calibrations) > 1:
                dims.append(Dimension("calibration", calibrations, stage.activations.calibration))
            if space.percentile:
                dims.append(Dimension("percentile", space.percentile, stage.activations.percentile))
            granularity = tuple(dict.fromkeys((stage.weights.per_channel, *space.per_channel)))
            if len(granularity) > 1:
                dims.append(Dimension("per_channel", granularity, stage.weights.per_channel))
    if not dims:
        raise RecipeError("tune: the recipe has nothing to search: it needs a prune stage (per-layer sparsity) or a "
                          "quantize stage (layers kept float, calibration, granularity, bits)")
    return SearchSpace(tuple(dims), prune_index, quant_index, params)


def _kernel_params(info: Any) -> int:
    total = 0
    for key in info.maskable or ():
        n = 1
        for d in info.shapes[key]:
            n *= int(d)
        total += n
    return max(total, 1)


def escape(name: str) -> str:
    """``name`` as an fnmatch pattern matching only itself (layer names may hold ``[``, ``*``, ``?``)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def candidate_recipe(recipe: Recipe, space: SearchSpace, candidate: Candidate) -> dict[str, Any]:
    """The plain recipe mapping of ``candidate``: the user's recipe without ``tune:``, edited.

    Per-layer ratios become the prune stage's ``overrides`` (a ratio of 0 excludes the layer; with every
    layer at 0 the stage, and its fine-tuning, is dropped); layers
    kept float are added to the quantize stage's ``layers.exclude``; bits become quantize ``overrides``;
    calibration, percentile and granularity replace the stage's own. A static stage's own fallback is
    turned off (``max_float_share: 0``) when the tuner decides which layers stay float.
    """
    if recipe.raw is None:
        raise RecipeError("tune: the recipe must be loaded with Recipe.load (from a file, YAML text or a mapping) "
                          "so that the tuner can write its trials as edits of it")
    raw = copy.deepcopy(dict(recipe.raw))
    raw.pop("tune", None)
    raw.pop("analyze", None)
    values = dict(candidate)
    stages = raw["stages"]
    if space.quant_index is not None:  # first: the prune stage may be dropped, shifting later indices
        _edit_quant(stages, space.quant_index, recipe.stages[space.quant_index], values, space)
    if space.prune_index is not None:
        _edit_prune(stages, space.prune_index, recipe.stages[space.prune_index], values)
    if not stages:  # every stage dropped: the float model itself, as a recipe that changes nothing
        stages.append({"prune": {"method": "magnitude", "sparsity": 0.0, "fine_tune": None}})
    return raw


def _stage_body(stages: list[Any], index: int, kind: str) -> dict[str, Any]:
    item = dict(stages[index])
    body = dict(item[kind] or {})
    item[kind] = body
    stages[index] = item
    return body


def _selector_dict(selector: Any, exclude: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"names": list(selector.names),
                           "exclude": list(dict.fromkeys([*selector.exclude, *exclude]))}
    if selector.kinds is not None:
        out["kinds"] = list(selector.kinds)
    return out


def _edit_prune(stages: list[Any], index: int, stage: PruneStage, values: Mapping[str, Any]) -> None:
    ratios = {k[len(SPARSITY):]: float(v) for k, v in values.items()
              if k.startswith(SPARSITY) and float(v) != stage.sparsity}
    if not ratios:
        return  # every layer at the stage's own ratio: the stage as the user wrote it
    everything = [k for k in values if k.startswith(SPARSITY)]
    if all(float(values[k]) == 0.0 for k in everything):
        del stages[index]  # no layer pruned: the stage (and its fine-tuning) is dropped
        return
    body = _stage_body(stages, index, "prune")
    zero = [name for name, r in ratios.items() if r == 0.0]
    body["layers"] = _selector_dict(stage.layers, [escape(n) for n in zero])
    kept = {n: r for n, r in ratios.items() if r > 0.0}
    body["overrides"] = [{"layers": {"names": [escape(n)]}, "sparsity": r} for n, r in kept.items()]


def _edit_quant(stages: list[Any], index: int, stage: QuantizeStage, values: Mapping[str, Any],
                space: SearchSpace) -> None:
    floated = [k[len(FLOAT):] for k, v in values.items() if k.startswith(FLOAT) and v]
    if floated and len(floated) == len(space.names(FLOAT)):
        del stages[index]  # every layer kept float: no quantize stage
        return
    body = _stage_body(stages, index, "quantize")
    if space.names(FLOAT):
        body["layers"] = _selector_dict(stage.layers, [escape(n) for n in floated])
        if stage.options is not None and hasattr(stage.options, "max_float_share"):
            body["max_float_share"] = 0.0  # the tuner decides which layers stay float
    bits = {k[len(BITS):]: int(v) for k, v in values.items() if k.startswith(BITS)}
    changed = {n: b for n, b in bits.items() if b != stage.weights.bits}
    if changed:
        body["overrides"] = list(body.get("overrides") or []) + [
            {"layers": {"names": [escape(n)]}, "weights": {"bits": b}} for n, b in changed.items()]
    acts = dict(body.get("activations") or {})
    if "calibration" in values and values["calibration"] != stage.activations.calibration:
        acts["calibration"] = values["calibration"]
    if "percentile" in values and values["percentile"] != stage.activations.percentile:
        acts["percentile"] = float(values["percentile"])
    if acts:
        body["activations"] = acts
    if "per_channel" in values and values["per_channel"] != stage.weights.per_channel:
        body["weights"] = {**dict(body.get("weights") or {}), "per_channel": bool(values["per_channel"])}


def describe(candidate: Candidate, space: SearchSpace) -> dict[str, Any]:
    """The settings of ``candidate`` that differ from the recipe's, as plain data for the trial log."""
    base = dict(space.base())
    return {k: v for k, v in candidate if base.get(k) != v}
