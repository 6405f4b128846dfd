"""Reading the command line's model and data files.

Models: a framework's own model file read safely (Keras ``.keras`` in safe mode, legacy ``.h5``), a
folder slimkit saved, a PyTorch state dict (``weights_only=True``) onto the architecture ``--factory``
builds, or, only with ``--trust-model-file``, a file whose loading may run code (torch.export ``.pt2``,
a pickled module). The adapters read the files (``SavingAdapter``); this module picks the reader and
imports no framework itself: the adapter of the file's framework is imported when a file needs it.

Data: ``.npz`` (``x`` and optional ``y``, or arrays named as the model's inputs), ``.npy`` (inputs only),
or ``module:function`` returning what :func:`slimkit.compress` takes.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from slimkit.errors import DataError, SlimkitError, UnsupportedModelError

#: Which framework's adapter reads a suffix: imported first so that the registry, which asks adapters of
#: loaded frameworks first, does not import every framework to find the one that knows the suffix.
_FRAMEWORK_OF = {".keras": "keras", ".h5": "keras", ".pt": "torch", ".pth": "torch", ".pt2": "torch",
                 ".bin": "torch", ".safetensors": "torch"}

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

SAVED_MODEL_HELP = (
    "is a TensorFlow SavedModel folder, which Keras 3 loads only as an opaque layer (keras.layers.TFSMLayer) "
    "without the layers slimkit compresses. Convert it where it was made: load the model with the Keras "
    "that saved it (tf.keras.models.load_model) and save it as one file, model.save('model.keras') (or "
    "'model.h5'), then pass that file")


@dataclass
class LoadedModel:
    """A model read from the command line, and what is needed to read its saved copy back."""

    model: Any
    path: Path
    #: for PyTorch: the architecture slimkit.load applies a saved folder to (None for Keras)
    architecture: Any = None


def import_callable(spec: str, option: str, error: type[SlimkitError]) -> Callable[..., Any]:
    """The callable ``module:name`` (``name`` may be dotted) names; the current folder is importable.

    Raises:
        ``error``: the spec is malformed, the module cannot be imported or has no such callable.
    """
    if not _SPEC.match(spec):
        raise error(f"{option} {spec!r}: expected module:callable, as package.module:build_model")
    module_name, attr = spec.split(":", 1)
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` does: modules beside the user
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{option} {spec}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # the module itself failed while importing
        raise error(f"{option} {spec}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise error(f"{option} {spec}: module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise error(f"{option} {spec}: {attr} is a {type(target).__name__}, not a callable")
    return target


def _call(fn: Callable[..., Any], spec: str, option: str, error: type[SlimkitError]) -> Any:
    try:
        return fn()
    except SlimkitError:
        raise
    except Exception as exc:
        raise error(f"{option} {spec}: calling it raised {type(exc).__name__}: {exc}") from exc


def _preload(framework: str | None) -> None:
    from slimkit import registry

    for modules, module_name, _ in registry._ADAPTERS:
        if framework in modules:
            try:
                importlib.import_module(module_name)
            except ImportError:
                pass  # not installed: the registry then says no adapter reads the file


def load_model(spec: str, factory: str | None = None, trust: bool = False, option: str = "model") -> LoadedModel:
    """The model in file or folder ``spec``.

    Args:
        spec: the path.
        factory: ``module:callable`` building the architecture (PyTorch state dicts and saved folders).
        trust: also read files whose loading may run code (``.pt2``, pickled modules).
        option: the command-line name of the argument, for messages.

    Raises:
        UnsupportedModelError: the file is missing, damaged, of a kind slimkit does not read, or needs
            ``--factory`` / ``--trust-model-file``; the message names it and what to do.
    """
    path = Path(spec).expanduser()
    if not path.exists():
        raise UnsupportedModelError(f"{option} {spec}: no such file or folder")
    build = import_callable(factory, "--factory", UnsupportedModelError) if factory else None
    try:
        if path.is_dir():
            return _load_folder(path, build, factory, option)
        return _load_file(path, build, factory, trust, option)
    except DataError as exc:  # a damaged or unfitting model file is the model's fault here, not the data's
        raise UnsupportedModelError(f"{option} {exc}" if str(exc).startswith(str(path)) else f"{option}: {exc}") \
            from exc


def _architecture(build: Callable[..., Any] | None, factory: str | None) -> Any:
    return None if build is None else _call(build, factory or "", "--factory", UnsupportedModelError)


def _load_folder(path: Path, build: Callable[..., Any] | None, factory: str | None, option: str) -> LoadedModel:
    from slimkit.saving import MANIFEST, load

    if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
        raise UnsupportedModelError(f"{option} {path} {SAVED_MODEL_HELP}")
    if not (path / MANIFEST).is_file():
        raise UnsupportedModelError(f"{option} {path} is a folder, but neither a folder slimkit saved (no {MANIFEST}) "
                                    "nor a SavedModel; pass a model file")
    try:
        framework = json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("framework")
    except (ValueError, OSError, AttributeError):
        framework = None  # slimkit.load reports the damage
    _preload(framework)
    architecture = _architecture(build, factory)
    if framework == "torch" and architecture is None:
        raise UnsupportedModelError(f"{option} {path} holds a PyTorch model; PyTorch architectures are code, so pass "
                                    "--factory module:callable returning the model as it was before compression")
    return LoadedModel(load(path, model=architecture), path, architecture)


def _load_file(path: Path, build: Callable[..., Any] | None, factory: str | None, trust: bool,
               option: str) -> LoadedModel:
    from slimkit.registry import adapter_for_file

    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raise UnsupportedModelError(f"{option} {path}: an ONNX file is what slimkit deploys, not a model it compresses; "
                                    "pass the framework's model (.keras, .h5, a PyTorch state dict with --factory, "
                                    "a folder slimkit saved). `slimkit bench` measures ONNX files")
    _preload(_FRAMEWORK_OF.get(suffix))
    safe = adapter_for_file(path, "model_file_suffixes")
    if safe is not None:
        return LoadedModel(safe.load_file(path), path)
    weights = adapter_for_file(path, "weights_file_suffixes")
    if build is not None and weights is not None:
        architecture = _architecture(build, factory)
        return LoadedModel(weights.load_weights_file(path, architecture), path, architecture)
    trusted = adapter_for_file(path, "trusted_file_suffixes")
    if trusted is not None and trust:
        model = trusted.load_trusted_file(path)
        return LoadedModel(model, path, model)
    if trusted is not None and weights is None:
        raise UnsupportedModelError(
            f"{option} {path}: loading a {suffix} file can run code stored in it (torch.export.load honours the "
            "file's own pickle settings), so slimkit reads it only with --trust-model-file; pass that flag if you "
            "trust the file's author, or save a state dict (torch.save(model.state_dict(), 'model.pt')) and pass "
            "it with --factory")
    if weights is not None:
        raise UnsupportedModelError(
            f"{option} {path}: slimkit reads a {suffix} file as a state dict (weights only) onto the architecture "
            "--factory module:callable builds; for a whole pickled model you trust, pass --trust-model-file")
    if build is not None:
        raise UnsupportedModelError(f"{option} {path}: --factory applies to PyTorch state dicts (.pt, .pth, .bin, "
                                    ".safetensors), not to {suffix or 'suffix-less'} files")
    raise UnsupportedModelError(
        f"{option} {path}: slimkit does not read {suffix or 'suffix-less'} model files; it reads Keras .keras and "
        ".h5 files, PyTorch state dicts (.pt, .pth, .bin, .safetensors) with --factory, torch.export .pt2 files "
        "with --trust-model-file, and folders slimkit saved")


def load_data(spec: str, option: str) -> Any:
    """``(x, y)`` from an ``.npz`` file with ``y``; ``x`` alone from ``.npy`` or an ``.npz`` without ``y``
    (``x`` a dict of named arrays when the file names the model's inputs); what ``module:function``
    returns, as it returns it.

    Raises:
        DataError: the file is missing or unreadable, holds pickled objects, or names no inputs.
    """
    path = Path(spec).expanduser()
    if not path.exists() and _SPEC.match(spec):
        fn = import_callable(spec, option, DataError)
        return _call(fn, spec, option, DataError)
    if not path.is_file():
        raise DataError(f"{option} {spec}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise DataError(f"{option} {spec}: slimkit reads data from .npz files (arrays x and y, or named after the "
                        "model's inputs), .npy files (inputs), or module:function")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{option} {spec}: not a readable {suffix} file ({exc})") from None
    if suffix == ".npy":
        return loaded
    with loaded:
        try:
            arrays = {key: loaded[key] for key in loaded.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise DataError(f"{option} {spec}: an array cannot be read ({exc})") from None
    y = arrays.pop("y", None)
    if not arrays:
        raise DataError(f"{option} {spec}: the file has no inputs; name them x (or after the model's inputs) "
                        f"besides y")
    x = arrays.pop("x") if "x" in arrays and len(arrays) == 1 else arrays
    if isinstance(x, dict) and len(x) == 1:
        x = next(iter(x.values()))
    return x if y is None else (x, y)


def inputs_of(data: Any, option: str, count: int) -> Any:
    """Up to ``count`` input samples of data as :func:`load_data` gives it: ``x`` of an ``(x, y)`` pair, the
    inputs themselves otherwise; None for framework loaders (their samples are not read ahead)."""
    from slimkit.data import first_inputs, is_array_pair

    return first_inputs(data, option, count, labelled=is_array_pair(data))


def sample_for(model: Any, data: Any, shape: tuple[int, ...] | None, count: int = 16) -> Any:
    """Sample inputs for tracing, export and measuring: the first ``count`` of ``data``, else random
    normal inputs of ``shape`` (seeded), else of the model's own static input shapes (Keras models
    declare them; read by attribute, no framework imported).

    Raises:
        DataError: none of these gives inputs.
    """
    if data is not None:
        x = inputs_of(data, "--data", count)
        if x is not None:
            return x
    rng = np.random.default_rng(0)
    if shape is not None:
        return rng.standard_normal((count, *shape)).astype(np.float32)
    declared = [tuple(getattr(t, "shape", ()) or ()) for t in (getattr(model, "inputs", None) or ())]
    if len(declared) == 1 and len(declared[0]) >= 2 and all(isinstance(d, int) for d in declared[0][1:]):
        return rng.standard_normal((count, *declared[0][1:])).astype(np.float32)
    raise DataError("sample inputs needed: pass --data FILE (or module:function), or --input-shape DIMS for random "
                    "inputs (the model declares no fixed input shape)")
