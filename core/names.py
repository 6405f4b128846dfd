"""Unique names for what slimkit adds to a model or graph (layers, tensors, nodes)."""

from __future__ import annotations


def unique_name(base: str, taken: set[str], sep: str = "_") -> str:
    """``base``, or ``base{sep}1``, ``base{sep}2``... whichever is not in ``taken``; adds it to ``taken``."""
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}{sep}{n}"
    taken.add(name)
    return name
