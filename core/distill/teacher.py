"""Teachers: a model object of the student's framework, an ONNX file run in onnxruntime, a framework
model file (``.keras``, loaded safely), or a folder slimkit saved. Each gives numpy outputs (and, where
it can, layer outputs for hints); the teacher runs in inference mode and is never changed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.data import PROBE_BATCH, head, leaves, take
from slimkit.errors import DataError, NotSupportedYetError, RecipeError, SlimkitError, UnsupportedModelError


class Teacher:
    """What the distillation objective asks of a teacher. ``label`` names it in messages."""

    label: str = "teacher"

    def outputs(self, x: Any) -> np.ndarray:
        """The teacher's outputs for the student's inputs ``x`` (numpy, any input form)."""
        raise NotImplementedError

    def features(self, x: Any, names: list[str]) -> dict[str, np.ndarray]:
        """Outputs of the named teacher layers, channels on axis 1."""
        raise NotImplementedError

    def check_layer(self, name: str, field: str, sample: Any) -> None:
        """Raises RecipeError naming ``field`` when the teacher has no layer ``name`` (``sample``: inputs
        to read it on)."""
        raise NotImplementedError


class AdapterTeacher(Teacher):
    """A framework model through its adapter (the user's object itself: it is only run, in inference
    mode, as :func:`slimkit.compress` runs the user's model for its metrics)."""

    def __init__(self, adapter: Any, label: str) -> None:
        self.adapter, self.label = adapter, label

    def outputs(self, x: Any) -> np.ndarray:
        return np.asarray(self.adapter.predict(x, PROBE_BATCH))

    def features(self, x: Any, names: list[str]) -> dict[str, np.ndarray]:
        return self.adapter.layer_outputs(x, names)

    def check_layer(self, name: str, field: str, sample: Any) -> None:
        from slimkit.adapter import StructureAdapter, require

        require(self.adapter, StructureAdapter, f"{field}: hints from the {self.label}")
        try:
            self.adapter.layer_outputs(head(sample, 1), [name])
        except KeyError:
            raise RecipeError(no_layer(field, name, self.label, self.adapter)) from None


class OnnxTeacher(Teacher):
    """An ONNX file run in onnxruntime (CPU). Its first output is the teacher's output.

    A file exported from the other framework takes its images with the channels on the other side
    (NHWC for Keras, NCHW for PyTorch): when the file's input shape fits the student's inputs only with
    axis 1 and the last axis swapped, they are transposed on the way in (so one ONNX teacher serves a
    Keras and a PyTorch student alike); any other mismatch is a DataError.
    """

    def __init__(self, path: Path) -> None:
        from slimkit.deploy import load_runtime

        self.path = path
        self.label = f"teacher file {path}"
        self._runtime = load_runtime()
        try:
            self._session = self._runtime.session(str(path))
        except SlimkitError as exc:
            raise DataError(f"teacher: {path} cannot be run by onnxruntime ({exc})") from None
        self._inputs = self._session.get_inputs()

    def _adapted(self, x: Any) -> Any:
        arrays = leaves(x)
        if len(arrays) != len(self._inputs):
            raise DataError(f"teacher: {self.path} takes {len(self._inputs)} input(s) "
                            f"({', '.join(i.name for i in self._inputs)}); the student's data has {len(arrays)}")
        out = []
        for spec, a in zip(self._inputs, arrays):
            want = [d if isinstance(d, int) else None for d in spec.shape]
            if _fits(a.shape, want):
                out.append(a)
            elif a.ndim >= 3 and _fits(np.moveaxis(a, 1, -1).shape, want):
                out.append(np.ascontiguousarray(np.moveaxis(a, 1, -1)))
            elif a.ndim >= 3 and _fits(np.moveaxis(a, -1, 1).shape, want):
                out.append(np.ascontiguousarray(np.moveaxis(a, -1, 1)))
            else:
                raise DataError(f"teacher: {self.path} input {spec.name!r} has shape {spec.shape}; the student's "
                                f"inputs have shape {tuple(a.shape)}, which does not fit it (channels moved "
                                "either way included)")
        if isinstance(x, dict):
            return dict(zip(x, out))
        return tuple(out) if len(out) > 1 else out[0]

    def outputs(self, x: Any) -> np.ndarray:
        x = self._adapted(x)
        n = leaves(x)[0].shape[0]
        parts = []
        for start in range(0, n, PROBE_BATCH):
            chunk = take(x, slice(start, start + PROBE_BATCH))
            feed = self._runtime.feed(self._inputs, chunk, str(self.path))
            try:
                parts.append(np.asarray(self._session.run(None, feed)[0]))
            except Exception as exc:  # onnxruntime's own exception types
                raise DataError(f"teacher: onnxruntime failed to run {self.path} on the student's inputs: "
                                f"{type(exc).__name__}: {exc}") from None
        return np.concatenate(parts, axis=0)

    def features(self, x: Any, names: list[str]) -> dict[str, np.ndarray]:
        raise NotSupportedYetError(f"hints: an ONNX teacher ({self.path}) gives its outputs only; hints need a "
                                   "teacher model of the student's framework")

    def check_layer(self, name: str, field: str, sample: Any) -> None:
        raise NotSupportedYetError(f"{field}: hints from an ONNX teacher ({self.path}) are not supported yet; "
                                   "pass the teacher model (compress(..., teacher=model)) or a model file of the "
                                   "student's framework")


def no_layer(field: str, name: str, label: str, adapter: Any) -> str:
    """The message for a hint naming no layer of ``adapter``'s model."""
    known = [info.name for info in adapter.layers()]
    return (f"{field}: the {label} has no layer named {name!r}; its layers: {', '.join(known[:12])}"
            f"{', ...' if len(known) > 12 else ''}")


def _fits(shape: tuple[int, ...], want: list[int | None]) -> bool:
    return len(shape) == len(want) and all(w is None or w == s for s, w in zip(shape[1:], want[1:]))


def load_teacher(spec: str | None, given: Any, student_cls: type, field: str, recipe_file: str | None) -> Teacher:
    """The teacher a distill setting names: a file (``spec``), else the object passed to compress.

    Args:
        spec: the recipe's ``teacher`` (a file), or None.
        given: ``compress(..., teacher=...)``: a model of the student's framework, or a file name.
        student_cls: the student's adapter class.
        field: the recipe path of the distill setting, for messages.
        recipe_file: the recipe's own file; relative teacher files are looked up beside it as well.

    Raises:
        RecipeError: no teacher, a teacher of another framework, or a file of an unknown kind.
        DataError: the file is missing or cannot be loaded.
    """
    if spec is None and isinstance(given, (str, os.PathLike)):
        spec = os.fspath(given)
    if spec is None:
        if given is None:
            raise RecipeError(f"{field}.teacher: no teacher: name a file in the recipe (teacher: teacher.onnx) or "
                              "pass compress(..., teacher=model)")
        from slimkit.registry import adapter_class

        try:
            cls = adapter_class(given)
        except UnsupportedModelError:
            raise RecipeError(f"{field}.teacher: compress(teacher=...) got a {type(given).__qualname__}, not a model "
                              "or a file name") from None
        if cls is not student_cls:
            raise RecipeError(f"{field}.teacher: the teacher is a {cls.framework} model and the student a "
                              f"{student_cls.framework} model; a teacher object must be of the student's framework. "
                              "Export the teacher to ONNX (slimkit.export_onnx(teacher, 'teacher.onnx', sample=x)) "
                              "and name the file: teacher: teacher.onnx")
        return AdapterTeacher(cls(given), f"teacher ({cls.framework} {type(given).__name__})")
    path = _resolve(spec, recipe_file, field)
    if path.suffix.lower() == ".onnx":
        return OnnxTeacher(path)
    if path.is_dir():
        from slimkit.saving import load

        model = load(path)
        return _file_teacher(model, student_cls, path, field)
    from slimkit.registry import adapter_for_file

    cls = adapter_for_file(path)
    if cls is None:
        raise RecipeError(f"{field}.teacher: {path}: slimkit reads teachers from ONNX files (.onnx), folders "
                          "slimkit saved, and model files an adapter loads safely (.keras)")
    return _file_teacher(cls.load_file(path), student_cls, path, field)


def _file_teacher(model: Any, student_cls: type, path: Path, field: str) -> Teacher:
    from slimkit.registry import adapter_class

    cls = adapter_class(model)
    if cls is not student_cls:
        raise RecipeError(f"{field}.teacher: {path} holds a {cls.framework} model and the student is a "
                          f"{student_cls.framework} model; export the teacher to ONNX and name the .onnx file")
    return AdapterTeacher(cls(model), f"teacher file {path}")


def _resolve(spec: str, recipe_file: str | None, field: str) -> Path:
    path = Path(spec).expanduser()
    candidates = [path]
    if not path.is_absolute() and recipe_file is not None:
        candidates.append(Path(recipe_file).parent / path)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    where = " or ".join(str(c) for c in candidates)
    raise DataError(f"{field}.teacher: {where} does not exist")
