"""The recipe's ``tune:`` section (the search over the stages' settings)."""

from __future__ import annotations

from typing import Any

from slimkit.errors import NotSupportedYetError


def parse_tune(raw: Any, path: str, stages: tuple[Any, ...]) -> Any:
    """The ``tune:`` settings, or None when the section is absent."""
    if raw is None:
        return None
    raise NotSupportedYetError(f"{path}: accuracy-driven tuning is not supported yet")
