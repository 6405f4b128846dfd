"""Registries of named plugins, each with its own frozen options dataclass.

A plugin kind (optimizers today; pruning methods, criteria, observers as they move here) keeps one
:class:`Registry`. Each entry is registered with a name and an options dataclass whose fields are the
recipe keys it accepts; recipe validation reads the registry, so allowed names, allowed keys, types
and ranges come from the plugins themselves, not from lists kept elsewhere. Ranges are declared on
fields with :func:`bounded`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, TypeVar

from slimkit.errors import RecipeError

T = TypeVar("T")


@dataclass(frozen=True)
class Bounds:
    """Allowed interval of a numeric option; ``open`` ends exclude their value."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def __str__(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


def bounded(default: Any, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
            hi_open: bool = False, doc: str = "") -> Any:
    """A dataclass field with a default and an allowed interval (for every element of a tuple)."""
    return dataclasses.field(default=default, metadata={"bounds": Bounds(lo, hi, lo_open, hi_open), "doc": doc})


@dataclass(frozen=True)
class NoOptions:
    """The options of a plugin that takes none."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered plugin: its name, options class and implementation."""

    name: str
    options: type
    impl: T


class Registry(Generic[T]):
    """Name -> plugin for one kind of plugin (``what`` names the kind in messages).

    ``builtins`` are modules that register slimkit's own plugins; they are imported on first use,
    so that a registry can live below the modules that fill it (which may import the recipe).
    """

    def __init__(self, what: str, builtins: tuple[str, ...] = ()) -> None:
        self.what = what
        self._entries: dict[str, Entry[T]] = {}
        self._builtins = builtins
        self._loaded = not builtins

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtins:
                importlib.import_module(module)

    def register(self, name: str, options: type) -> Callable[[T], T]:
        """Decorator registering ``impl`` under ``name`` with the frozen dataclass ``options``.

        Raises:
            ValueError: ``name`` is taken, or ``options`` is not a frozen dataclass.
        """
        if not (dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen):  # type: ignore[attr-defined]
            raise ValueError(f"{self.what} {name!r}: options must be a frozen dataclass, got {options!r}")

        def add(impl: T) -> T:
            if name in self._entries and self._entries[name].impl is not impl:
                raise ValueError(f"a {self.what} named {name!r} is registered already")
            self._entries[name] = Entry(name, options, impl)
            return impl

        return add

    def unregister(self, name: str) -> None:
        """Removes ``name`` (for plugins registered by tests or user code)."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str, path: str = "") -> Entry[T]:
        """The entry for ``name``.

        Raises:
            RecipeError: no such plugin; the message lists the registered names.
        """
        self._load()
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            where = f"{path}: " if path else ""
            raise RecipeError(f"{where}{name!r} is not one of {', '.join(sorted(self._entries))} ({self.what}s)")
        return entry


def parse_options(cls: type, raw: Mapping[str, Any], path: str, base: Any = None,
                  also_allowed: tuple[str, ...] = ()) -> Any:
    """An instance of the options dataclass ``cls`` from recipe keys, overlaid on ``base``.

    Types come from the field annotations (bool, int, float, str, tuple of floats); intervals from
    :func:`bounded`. Every error names the key's full path. ``also_allowed`` names keys the caller
    handles itself (listed in the unknown-key message, never passed in ``raw``).

    Raises:
        RecipeError: an unknown key, a wrong type, or a value outside its interval.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in raw if k not in fields]
    if unknown:
        allowed = (*also_allowed, *fields)
        raise RecipeError(f"{path}: unknown key {unknown[0]!r}; allowed keys are {', '.join(allowed) or 'none'}")
    updates = {}
    for key, value in raw.items():
        field_path = f"{path}.{key}" if path else key
        updates[key] = _convert(value, hints[key], fields[key].metadata.get("bounds"), field_path)
    start = base if base is not None else cls()
    return dataclasses.replace(start, **updates) if updates else start


def options_dict(options: Any) -> dict[str, Any]:
    """Plain-Python form of an options instance (tuples as lists), for configs and reports."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(options).items()}


def _convert(value: Any, hint: Any, bounds: Bounds | None, path: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{path}: expected a string, got {value!r}")
        return value
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            raise RecipeError(f"{path}: expected a list of {len(args)} numbers, got {value!r}")
        elem = args[0]
        return tuple(_convert(v, elem, bounds, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{path}: expected an integer, got {value!r}")
        number: float = value
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{path}: expected a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise RecipeError(f"{path}: expected a finite number, got {value!r}")
    else:  # pragma: no cover - a plugin declared a type this parser does not know
        raise TypeError(f"{path}: option type {hint!r} is not supported by slimkit's recipe parser")
    if bounds is not None and not bounds.contains(number):
        raise RecipeError(f"{path}: {value!r} is outside {bounds}")
    return number
