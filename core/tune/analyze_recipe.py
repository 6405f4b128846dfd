"""The recipe's ``analyze:`` section (per-layer sensitivity settings)."""

from __future__ import annotations

from typing import Any

from slimkit.errors import NotSupportedYetError
from slimkit.recipe import LayerSelector


def parse_analyze(raw: Any, path: str, layers: LayerSelector) -> Any:
    """The ``analyze:`` settings, or None when the section is absent."""
    if raw is None:
        return None
    raise NotSupportedYetError(f"{path}: sensitivity analysis is not supported yet")
