"""The recipe's ``analyze:`` section (per-layer sensitivity settings).

```yaml
analyze:
  layers: {kinds: [conv, dense]}     # default: the recipe's top-level layers
  prune: {method: magnitude, ratios: [0.25, 0.5, 0.75]}   # null: no prune rows
  quantize: {bits: [8, 4]}           # null: no quantize rows
  output_error: true                 # SQNR and cosine at each layer's output (no labels needed)
  samples: 256                       # calibration inputs; default: the quantize stage's activations.samples
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimkit.errors import RecipeError
from slimkit.recipe import LayerSelector
from slimkit.recipe_fields import boolean, build, choice, integer, keys, number, selector
from slimkit.reprs import short_repr

#: Pruning methods a sensitivity pass can apply to one layer at a time at a given ratio.
ANALYZE_PRUNE_METHODS = ("magnitude", "channel")

#: Most inputs a sensitivity pass calibrates on (the recipe's own calibration bound).
MAX_SAMPLES = 2**20


@dataclass(frozen=True)
class AnalyzePrune:
    """Prune rows: each selected layer alone pruned at each ratio.

    Attributes:
        method: ``magnitude`` (the smallest |w| of the layer's kernel zeroed) or ``channel`` (the registered
            channel method, one shot, on that layer alone); None: the recipe's prune stage's method when it
            is one of these, else magnitude.
        ratios: fractions of the kernel's weights (magnitude) or of its output channels (channel) removed,
            ascending.
    """

    method: str | None = None
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class AnalyzeQuantize:
    """Quantize rows: each selected layer alone quantized with the recipe's quantize-stage settings
    (static int8 when the recipe has no quantize stage), its kernel at each of ``bits`` (8 is the stage's
    own kernel settings; lower widths are simulated; activations stay at the stage's 8 bits)."""

    bits: tuple[int, ...] = (8, 4)


@dataclass(frozen=True)
class Analyze:
    """The ``analyze:`` settings.

    Attributes:
        layers: the layers analyzed (each action keeps those of kinds it handles).
        prune: prune rows' settings; None: none.
        quantize: quantize rows' settings; None: none.
        output_error: measure SQNR and cosine similarity against the float model at each layer's output,
            on calibration inputs (no labels needed).
        samples: calibration inputs used (ranges and output errors; output errors read at most the first
            64); None: the quantize stage's ``activations.samples``.
    """

    layers: LayerSelector = LayerSelector()
    prune: AnalyzePrune | None = AnalyzePrune()
    quantize: AnalyzeQuantize | None = AnalyzeQuantize()
    output_error: bool = True
    samples: int | None = None


def _ascending(raw: Any, path: str, item: Any) -> tuple[Any, ...]:
    """A non-empty list of distinct values, each checked by ``item``, returned in ascending order."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise RecipeError(f"{path}: expected a non-empty list, got {short_repr(raw)}")
    values = [item(v, f"{path}[{i}]") for i, v in enumerate(raw)]
    seen: set[Any] = set()
    for i, v in enumerate(values):
        if v in seen:
            raise RecipeError(f"{path}[{i}]: {short_repr(raw[i])} is listed twice")
        seen.add(v)
    return tuple(sorted(values))


def _prune(raw: Any, path: str) -> AnalyzePrune | None:
    if raw is None:
        return None
    return build(AnalyzePrune, raw, path, AnalyzePrune(), {
        "method": lambda v, p: None if v is None else choice(v, p, ANALYZE_PRUNE_METHODS),
        "ratios": lambda v, p: _ascending(v, p, lambda x, q: number(x, q, 0.0, 1.0, lo_open=True, hi_open=True)),
    })


def _quantize(raw: Any, path: str) -> AnalyzeQuantize | None:
    if raw is None:
        return None
    return build(AnalyzeQuantize, raw, path, AnalyzeQuantize(), {
        "bits": lambda v, p: _ascending(v, p, lambda x, q: integer(x, q, lo=2, hi=8))[::-1],
    })


def parse_analyze(raw: Any, path: str, layers: LayerSelector) -> Analyze | None:
    """The ``analyze:`` settings, or None when the section is absent (:func:`slimkit.sensitivity` then uses
    ``Analyze(layers=recipe.layers)``).

    Args:
        raw: the section as read from YAML.
        path: its field path (``analyze``).
        layers: the recipe's top-level selector, the default of ``analyze.layers``.

    Raises:
        RecipeError: an unknown key or a bad value; the message names the field path.
    """
    if raw is None:
        return None
    keys(raw, path, ("layers", "prune", "quantize", "output_error", "samples"))
    found = build(Analyze, raw, path, Analyze(layers=layers), {
        "layers": lambda v, p: selector(v, p, layers),
        "prune": _prune,
        "quantize": _quantize,
        "output_error": boolean,
        "samples": lambda v, p: None if v is None else integer(v, p, lo=1, hi=MAX_SAMPLES),
    })
    if found.prune is None and found.quantize is None:
        raise RecipeError(f"{path}: prune and quantize are both null; nothing would be analyzed")
    return found


def analyze_of(recipe: Any) -> Analyze:
    """The recipe's ``analyze:`` settings, or the defaults over its top-level layers when it has none."""
    return recipe.analyze if recipe.analyze is not None else Analyze(layers=recipe.layers)


__all__ = ["ANALYZE_PRUNE_METHODS", "Analyze", "AnalyzePrune", "AnalyzeQuantize", "analyze_of", "parse_analyze"]
