"""``result.save(path)`` and ``slimkit.load(path)``: a compressed model as a folder that loads safely.

The folder holds the framework's own files (Keras: one ``.keras`` file read in safe mode; PyTorch:
the weights as safetensors plus the pruned layers' shapes, applied to the architecture the caller
passes) and ``slimkit.json``, the manifest naming the framework, the format version and the files.
Nothing in the folder is executed or unpickled when it is loaded. The folder is written next to its
destination and moved into place when complete, so an interrupted save leaves no half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from slimkit.adapter import require
from slimkit.adapter.saving import SavingAdapter
from slimkit.errors import DataError, ExportError
from slimkit.registry import adapter_class, adapter_for, adapter_named

MANIFEST = "slimkit.json"
FORMAT = 1


def save(model: Any, path: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Writes ``model`` into the folder ``path`` (created; replaced if ``overwrite``).

    Raises:
        ExportError: ``path`` exists and is not a folder slimkit saved, or the model cannot be written.
    """
    from slimkit import __version__

    target = Path(path)
    if target.exists() and not (target.is_dir() and (target / MANIFEST).is_file()):
        raise ExportError(f"save: {target} exists and is not a model folder slimkit saved; choose another path")
    if target.exists() and not overwrite:
        raise ExportError(f"save: {target} exists (pass overwrite=True to replace it)")
    adapter = require(adapter_for(model), SavingAdapter, "save")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        entry = adapter.save_files(work)
        manifest = {"format": FORMAT, "slimkit": __version__, "framework": adapter.framework, "model": entry}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def load(path: str | os.PathLike[str], model: Any = None) -> Any:
    """The model saved by :func:`save` in folder ``path``.

    Args:
        path: the folder.
        model: PyTorch only: an instance of the model's architecture as it was before compression
            (PyTorch modules are code, which slimkit does not store); the saved structure and weights
            are applied to a copy of it.

    Raises:
        DataError: ``path`` is no slimkit model folder, its manifest is damaged or from a newer
            format, or the files do not fit ``model``.
    """
    folder = Path(path)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"load: {folder} has no {MANIFEST}; it is not a model folder slimkit saved")
    try:
        manifest = json.loads(manifest_path.read_text())
        framework, entry, version = manifest["framework"], manifest["model"], int(manifest["format"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"load: {manifest_path} is damaged ({type(exc).__name__}: {exc})") from None
    if version > FORMAT:
        raise DataError(f"load: {manifest_path} has format {version}; this slimkit reads format {FORMAT} or older")
    cls = adapter_named(str(framework))
    if cls is None or not issubclass(cls, SavingAdapter):
        raise DataError(f"load: {manifest_path} holds a {framework!r} model, which no installed adapter loads")
    if model is not None and adapter_class(model) is not cls:
        raise DataError(f"load: {manifest_path} holds a {framework!r} model; the architecture given is a "
                        f"{type(model).__qualname__}")
    return cls.load_files(folder, entry, model)
