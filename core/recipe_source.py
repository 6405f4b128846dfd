"""Reading a recipe's source: a file's bytes, a YAML document, or a mapping, into plain Python values.

What is refused here, with a RecipeError naming the file, line or field:

* files that cannot be read, or whose bytes are not UTF-8 text. A byte-order mark decides the
  encoding when there is one (UTF-8, UTF-16 or UTF-32, as YAML 1.1 itself allows); without one
  the file must be UTF-8, the encoding YAML recipes are written in;
* YAML errors, and duplicate keys in one mapping (YAML forbids them; PyYAML would keep the last);
* integers beyond int64 (``10**400`` would overflow a float conversion later);
* values nested deeper than :data:`MAX_DEPTH` or holding more than :data:`MAX_NODES` values, counted
  through YAML aliases and Python references alike (a recipe is a few levels deep; without a bound
  a deep document exhausts the interpreter's recursion and an alias bomb its memory).
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from slimkit.errors import RecipeError
from slimkit.reprs import short_repr

#: Deepest nesting of mappings and lists accepted (a full recipe nests 8 levels).
MAX_DEPTH = 32

#: Largest integer magnitude in a recipe (int64); each field has its own, smaller bound.
MAX_INT = 2**63 - 1

#: Most values (mappings, lists and scalars) a recipe may hold, aliases counted each time they appear.
MAX_NODES = 100_000

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),  # before UTF-16: they share a prefix
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)


def read_file(path: Path) -> str:
    """The text of recipe file ``path``: decoded by its byte-order mark, else as UTF-8."""
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}" if not path.exists() else
                          f"recipe file {path} is not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecipeError(f"recipe file {path} cannot be read: {exc.strerror or exc}") from exc
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    if encoding is None and b"\x00" in data:
        at = data.index(b"\x00")
        raise RecipeError(f"recipe file {path} is not valid UTF-8 text: it holds NUL bytes (byte {at}), as UTF-16 "
                          "or UTF-32 without a byte-order mark does; save it as UTF-8")
    encoding = encoding or "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise RecipeError(
            f"recipe file {path} is not valid {encoding.upper()} text (byte {exc.start}, line {line}: "
            f"{data[exc.start:exc.start + 4]!r}); save it as UTF-8"
        ) from exc


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing duplicate keys and absurd nesting while composing."""

    origin = "recipe"

    def compose_node(self, parent: Any, index: Any) -> Any:
        depth = getattr(self, "_depth", 0)
        if depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise RecipeError(f"{self.origin} line {mark.line + 1}: values nested more than {MAX_DEPTH} levels deep")
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base``: explicit keys may override it
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise RecipeError(f"{self.origin} line {line}: duplicate key {key!r} (first at line {first}); "
                                      "keys must be unique in a mapping")
                seen[key] = line
        return super().construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def parse_yaml(text: str, origin: str = "recipe") -> Any:
    """The value of YAML document ``text`` (safe tags only); ``origin`` names it in messages."""
    loader = None
    try:
        loader = _StrictLoader(text)  # its reader checks the characters already
        loader.origin = origin
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise RecipeError(f"{origin} is not valid YAML: {exc}") from exc
    except RecursionError as exc:  # a guard for structures the depth bound did not see
        raise RecipeError(f"{origin} is nested too deeply (more than {MAX_DEPTH} levels are refused)") from exc
    finally:
        if loader is not None:
            loader.dispose()


def check_size(value: Any) -> None:
    """Refuses values nested deeper than :data:`MAX_DEPTH` or larger than :data:`MAX_NODES`, without
    recursing (a self-referencing dict is refused, not followed forever)."""
    stack: list[tuple[Any, str, int]] = [(value, "recipe", 0)]
    count = 0
    while stack:
        item, path, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise RecipeError(f"recipe holds more than {MAX_NODES} values (YAML aliases counted each time they "
                              "appear); a recipe is a few dozen")
        if depth > MAX_DEPTH:
            raise RecipeError(f"{path}: values nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_INT:
            # Python's integers are unbounded; float() of one past 1.8e308 raises OverflowError.
            raise RecipeError(f"{path}: the integer {short_repr(item, 40)} ({len(str(abs(item)))} digits) is too "
                              f"large; recipe integers are at most 2**63 - 1")
        if isinstance(item, Mapping):
            stack.extend((v, f"{path}.{k}" if depth else str(k), depth + 1) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))


def is_path(source: Any) -> bool:
    """Whether ``source`` names a recipe file (a path object, or one line ending in .yaml/.yml)."""
    return isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml")))
