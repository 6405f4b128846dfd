"""``result.save(path)`` and ``slimkit.load(path)``: a compressed model as a folder that loads safely.

The folder holds the framework's own files (Keras: one ``.keras`` file read in safe mode; PyTorch:
the weights as safetensors plus an architecture record, replayed on the architecture the caller
passes) and ``slimkit.json``, the manifest naming the framework, the format version and the files.
Nothing in the folder is executed or unpickled when it is loaded.

Writing: the folder is written beside its destination, in a hidden folder named
``.<name>.slimkit-save-<pid>-<random>``, and renamed into place when complete, so an interrupted save
leaves no half-written model at ``path``. A folder slimkit saved before is replaced (``overwrite``,
the default): it is renamed aside first and removed after the new one is in place, so ``path`` holds
the old model or the new one, except for the instant between two renames, when both exist beside
it. An empty folder is replaced too; anything else at ``path`` (a file, a folder with other
contents) is refused. Hidden folders left by a save that was killed are removed by the next save
into the same directory once their writer's process is gone (the process id is in the name; a
save still running in another process keeps its folder).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from slimkit.adapter import require
from slimkit.adapter.saving import SavingAdapter
from slimkit.errors import DataError, ExportError, SlimkitError, UnsupportedModelError
from slimkit.registry import adapter_class, adapter_for, adapter_named

MANIFEST = "slimkit.json"
#: 2: PyTorch folders record module classes and fake-quant plans (format 1 folders still load).
FORMAT = 2
_TEMP = ".{name}.slimkit-save-"


def save(model: Any, path: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Writes ``model`` into the folder ``path``; returns ``path``.

    Args:
        model: a model of any adapter with the saving capability (pruned, quantized or plain).
        path: the folder to create. A folder slimkit saved there before is replaced (renamed aside,
            removed once the new one is in place); so is an empty folder.
        overwrite: False refuses to replace a folder slimkit saved.

    Raises:
        ExportError: ``path`` exists and is neither a folder slimkit saved nor empty, its parent
            cannot be written, or the model cannot be written; the message names the path or layer.
        UnsupportedModelError: the model's adapter cannot save.
    """
    from slimkit import __version__

    target = Path(path)
    try:
        _check_target(target, overwrite)
    except (OSError, ValueError) as exc:  # unreadable folder, a NUL in the path, ...
        raise ExportError(f"save: cannot use {str(path)!r} as the model folder ({exc})") from None
    adapter = require(adapter_for(model), SavingAdapter, "save")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(parent, target.name)
        work = Path(tempfile.mkdtemp(prefix=f"{_TEMP.format(name=target.name)}{os.getpid()}-", dir=parent))
    except (OSError, ValueError) as exc:  # not writable, a file in the way, a NUL in the path
        raise ExportError(f"save: cannot write into {str(parent)!r} ({getattr(exc, 'strerror', None) or exc})") \
            from None
    try:
        entry = adapter.save_files(work)
        manifest = {"format": FORMAT, "slimkit": __version__, "framework": adapter.framework, "model": entry}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _move_into_place(work, target)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, SlimkitError) or not isinstance(exc, Exception):
            raise
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        raise ExportError(f"save: writing {target} failed ({detail})") from exc
    return target


def _check_target(target: Path, overwrite: bool) -> None:
    """ExportError unless ``target`` is absent, an empty folder, or a folder slimkit saved (and ``overwrite``)."""
    blocking = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ExportError(f"save: {blocking} is a file, so the folder {target} cannot be created under it")
    if target.is_symlink():
        raise ExportError(f"save: {target} is a symbolic link; slimkit replaces only model folders it saved, so "
                          "pass the folder's real path")
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if not (target.is_dir() and (target / MANIFEST).is_file()):
        raise ExportError(f"save: {target} exists and is not a model folder slimkit saved; choose another path")
    if not overwrite:
        raise ExportError(f"save: {target} exists (pass overwrite=True to replace it)")


def _move_into_place(work: Path, target: Path) -> None:
    """Renames ``work`` to ``target``; an existing ``target`` is renamed aside first and removed after."""
    if not target.exists():
        os.replace(work, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f"{_TEMP.format(name=target.name)}{os.getpid()}-old-", dir=target.parent))
    os.replace(target, aside / "model")
    try:
        os.replace(work, target)
    except BaseException:
        os.replace(aside / "model", target)  # the old model back where it was
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale(parent: Path, name: str) -> None:
    """Removes hidden save folders for ``name`` in ``parent`` whose writing process no longer runs."""
    pattern = re.compile(re.escape(_TEMP.format(name=name)) + r"(\d+)-")
    for entry in parent.iterdir():
        found = pattern.match(entry.name)
        if found and entry.is_dir() and not entry.is_symlink() and not _alive(int(found.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or a platform that cannot tell: keep its folder
    return True


def load(path: str | os.PathLike[str], model: Any = None) -> Any:
    """The model saved by :func:`save` in folder ``path``.

    Args:
        path: the folder.
        model: PyTorch only: the model's architecture as it was before compression, an instance or a
            function (or class) returning one (PyTorch modules are code, which slimkit does not
            store). The saved structure, quantization and weights are applied to a copy of it; the
            instance given is not modified.

    Raises:
        DataError: ``path`` is no slimkit model folder, its manifest is damaged or from a newer
            format, or the files do not fit ``model``; the message names the file, field or layer.
    """
    folder = Path(path)
    manifest_path = folder / MANIFEST
    try:
        found = manifest_path.is_file()
    except (OSError, ValueError) as exc:
        raise DataError(f"load: cannot use {str(path)!r} as a model folder ({exc})") from None
    if not found:
        raise DataError(f"load: {folder} has no {MANIFEST}; it is not a model folder slimkit saved")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        framework, entry, version = manifest["framework"], manifest["model"], manifest["format"]
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(f"load: {manifest_path} is damaged ({type(exc).__name__}: {exc})") from None
    if type(version) is not int or not isinstance(framework, str) or not isinstance(entry, dict):
        raise DataError(f"load: {manifest_path} is damaged: format must be an integer, framework a string and "
                        "model an object")
    if version > FORMAT:
        raise DataError(f"load: {manifest_path} has format {version}; this slimkit reads format {FORMAT} or older")
    cls = adapter_named(framework)
    if cls is None or not issubclass(cls, SavingAdapter):
        raise DataError(f"load: {manifest_path} holds a {framework!r} model, which no installed adapter loads")
    if model is not None:
        model = _architecture(model, cls, manifest_path)
    try:
        return cls.load_files(folder, entry, model)
    except SlimkitError:
        raise
    except Exception as exc:  # a framework failing on files it was given: still the folder's fault
        raise DataError(f"load: {folder} could not be loaded ({type(exc).__name__}: {exc})") from exc


def _architecture(model: Any, cls: type, manifest_path: Path) -> Any:
    """``model``, or what it returns when it is a factory; DataError unless it is a model of ``cls``."""
    try:
        found = adapter_class(model)
    except UnsupportedModelError:
        if not callable(model):
            raise DataError(f"load: model= must be a {cls.framework} model or a function returning one, not "
                            f"{type(model).__qualname__}") from None
        try:
            model = model()
        except Exception as exc:
            raise DataError(f"load: the factory passed as model= raised {type(exc).__name__}: {exc}") from exc
        try:
            found = adapter_class(model)
        except UnsupportedModelError:
            raise DataError(f"load: the factory passed as model= returned a {type(model).__qualname__}, not a "
                            f"{cls.framework} model") from None
    if found is not cls:
        raise DataError(f"load: {manifest_path} holds a {cls.framework!r} model; the architecture given is a "
                        f"{type(model).__qualname__}")
    return model


def _load_imported_adapters() -> None:
    """Imports the adapter of every framework the program imported before slimkit (cheap then), so that
    what an adapter registers with its framework on import is in place for the framework's own loaders:
    after ``import keras; import slimkit``, ``keras.saving.load_model`` reads a quantized ``.keras`` file
    slimkit saved, in safe mode. Frameworks not imported stay unimported."""
    from slimkit import registry

    for modules, module_name, _ in registry._ADAPTERS:
        if any(m in sys.modules for m in modules):
            try:
                importlib.import_module(module_name)
            except Exception:  # a broken framework install must not break import slimkit; using it reports
                pass


_load_imported_adapters()
