"""Recipe field primitives: each takes a raw value and its field path and returns a typed value or raises
a RecipeError naming the path. Shared by every section's parser (stages, ``analyze:``, ``tune:``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from slimkit.errors import RecipeError
from slimkit.recipe import LAYER_KINDS, LayerSelector
from slimkit.reprs import short_repr


def keys(raw: Any, path: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected a mapping, got {type(raw).__name__} {short_repr(raw)}")
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise RecipeError(
            f"{path}: unknown key {short_repr(unknown[0])}; allowed keys are {', '.join(allowed)}"
        )
    return raw


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def integer(raw: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RecipeError(f"{path}: expected an integer, got {short_repr(raw)}")
    if lo is not None and raw < lo:
        raise RecipeError(f"{path}: {short_repr(raw)} is below the minimum {lo}")
    if hi is not None and raw > hi:
        raise RecipeError(f"{path}: {short_repr(raw)} is above the maximum {hi}")
    return raw


def number(raw: Any, path: str, lo: float, hi: float, hi_open: bool = False, lo_open: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise RecipeError(f"{path}: expected a number, got {short_repr(raw)}")
    try:
        value = float(raw)
    except OverflowError:  # an integer past float's range (10**400)
        value = math.inf
    if not math.isfinite(value):
        raise RecipeError(f"{path}: expected a finite number, got {short_repr(raw)}")
    bad_lo = value <= lo if lo_open else value < lo
    bad_hi = value >= hi if hi_open else value > hi
    if bad_lo or bad_hi:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise RecipeError(f"{path}: {short_repr(raw)} is outside {interval}")
    return value


def boolean(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise RecipeError(f"{path}: expected true or false, got {short_repr(raw)}")
    return raw


def choice(raw: Any, path: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise RecipeError(f"{path}: {short_repr(raw)} is not one of {', '.join(choices)}")
    return raw


def str_list(raw: Any, path: str, check: Callable[[str, str], None] | None = None) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(s, str) for s in raw):
        raise RecipeError(f"{path}: expected a list of strings, got {short_repr(raw)}")
    for i, item in enumerate(raw):
        if check is not None:
            check(item, f"{path}[{i}]")
    return tuple(raw)


def check_kind(kind: str, path: str) -> None:
    choice(kind, path, LAYER_KINDS)


def build(cls: type, raw: Any, path: str, base: Any, fields: Mapping[str, Callable[[Any, str], Any]]) -> Any:
    """Overlays the keys present in ``raw`` on ``base`` (a dataclass instance), validating each."""
    raw = keys(raw, path, tuple(fields))
    updates = {key: fields[key](value, join(path, key)) for key, value in raw.items()}
    return dataclasses.replace(base, **updates) if updates else base


def selector(raw: Any, path: str, base: LayerSelector) -> LayerSelector:
    return build(LayerSelector, raw, path, base, {
        "names": lambda v, p: str_list(v, p),
        "kinds": lambda v, p: None if v is None else str_list(v, p, check_kind),
        "exclude": lambda v, p: str_list(v, p),
    })
