"""Saving a Keras model as one ``.keras`` file, loaded back in Keras' safe mode (no lambda code runs)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from slimkit.errors import DataError, ExportError

FILE = "model.keras"


def save_files(model: Any, k: ModuleType, folder: Path) -> dict[str, Any]:
    """Writes ``model`` to ``folder/model.keras``; returns the manifest entry."""
    try:
        model.save(str(folder / FILE))
    except Exception as exc:  # Keras raises many types for objects it cannot serialise
        raise ExportError(f"save: Keras could not write {FILE} of model {model.name!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    return {"file": FILE, "keras": k.__name__}


def load_files(folder: Path, entry: dict[str, Any]) -> Any:
    """The model in ``folder``, read with ``safe_mode=True``."""
    import importlib

    path = folder / str(entry.get("file", FILE))
    name = str(entry.get("keras", "keras"))
    if name not in ("keras", "tf_keras"):
        raise DataError(f"load: {folder} names Keras module {name!r}; slimkit loads keras or tf_keras files")
    k = importlib.import_module(name)
    try:
        return k.models.load_model(str(path), safe_mode=True)
    except Exception as exc:
        raise DataError(f"load: {path} cannot be loaded safely by {name}: {type(exc).__name__}: {exc}") from None
