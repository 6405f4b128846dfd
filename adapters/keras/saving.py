"""Saving a Keras model as one ``.keras`` file, loaded back in Keras' safe mode (no lambda code runs).

A compressed Keras model holds only Keras layers and slimkit's fake-quant layers (``FakeQuant``,
``QuantLayer``: registered serializables of package ``slimkit`` whose configs are plain values), so
the ``.keras`` file needs no code beyond them. Keras finds registered classes only once their module
is imported: this module registers them when it is imported with Keras 3 loaded (the adapter imports
it; ``import slimkit`` imports the adapter of a framework already imported), and :func:`load_files`
registers them before reading a file. So ``slimkit.load(path)`` needs no import by the user, and a
plain ``keras.saving.load_model(path)`` works after ``import keras; import slimkit``.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

from slimkit.errors import DataError, ExportError

FILE = "model.keras"


def register_serializables() -> bool:
    """Registers slimkit's Keras layer classes with Keras 3 if it is imported (again, if they were removed
    from Keras' registry); True if registered."""
    keras = sys.modules.get("keras")
    if keras is None or not str(getattr(keras, "__version__", "0")).startswith("3"):
        return False  # tf_keras files hold no slimkit layers (fake quantization needs Keras 3)
    layers = importlib.import_module("slimkit.adapters.keras.quant_layers")  # registers on first import
    registered = keras.saving.get_custom_objects()
    for cls in (layers.FakeQuant, layers.QuantLayer):
        if keras.saving.get_registered_name(cls) not in registered:
            keras.saving.register_keras_serializable(package="slimkit")(cls)
    return True


def save_files(model: Any, k: ModuleType, folder: Path) -> dict[str, Any]:
    """Writes ``model`` to ``folder/model.keras``; returns the manifest entry.

    Raises:
        ExportError: Keras cannot serialise the model; the message has Keras' reason.
    """
    try:
        with _without_slimkit_training(model):
            model.save(str(folder / FILE))
    except Exception as exc:  # Keras raises many types for objects it cannot serialise
        raise ExportError(f"save: Keras could not write {FILE} of model {model.name!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    return {"file": FILE, "keras": k.__name__}


@contextlib.contextmanager
def _without_slimkit_training(model: Any) -> Iterator[None]:
    """Hides the compile state slimkit's fine-tuning left on ``model`` (its optimizer, loss and metrics)
    while it is saved, and puts it back after.

    That state is slimkit's training run, not the model: saved, it would make the file unreadable without
    slimkit's optimizer class, even for a model with no slimkit layer (pruned models load with plain
    Keras). A model compiled with another optimizer (a user's ``fit_fn``) is saved as it is.
    """
    optimizer = getattr(model, "optimizer", None)
    ours = optimizer is not None and type(optimizer).__module__.startswith("slimkit")
    if not ours or not hasattr(model, "compiled"):  # Keras 3 only; tf_keras never gets slimkit's optimizer saved
        yield
        return
    compiled = model.compiled
    model.compiled, model.optimizer = False, None
    try:
        yield
    finally:
        model.compiled, model.optimizer = compiled, optimizer


def load_files(folder: Path, entry: dict[str, Any]) -> Any:
    """The model in ``folder``, read with ``safe_mode=True`` (slimkit's layers registered first).

    Raises:
        DataError: the entry names another file or module than slimkit writes, or Keras cannot read
            the file in safe mode; the message names the file.
    """
    file, name = entry.get("file", FILE), entry.get("keras", "keras")
    if not isinstance(file, str) or not file or Path(file).name != file or file in (".", ".."):
        raise DataError(f"load: {folder / 'slimkit.json'} is damaged: field model.file must name a file in the "
                        f"folder, not {file!r}")
    if name not in ("keras", "tf_keras"):
        raise DataError(f"load: {folder} names Keras module {name!r}; slimkit loads keras or tf_keras files")
    path = folder / file
    try:
        k = importlib.import_module(name)
    except ImportError as exc:
        raise DataError(f"load: {path} needs {name}, which cannot be imported ({exc})") from None
    if name == "keras":
        register_serializables()
    try:
        return k.models.load_model(str(path), safe_mode=True)
    except Exception as exc:
        raise DataError(f"load: {path} cannot be loaded safely by {name}: {type(exc).__name__}: {exc}") from None


register_serializables()
