"""What Keras models take and give: declared input shape, one output, and the training data kinds
(numpy arrays, tf.data datasets, PyDatasets) checked before they reach ``fit``."""

from __future__ import annotations

import math
import sys
from types import ModuleType
from typing import Any, Callable

import numpy as np

from slimkit.errors import DataError, UnsupportedModelError

from .models import describe, format_shape, one_line


def input_spec(model: Any) -> tuple[tuple[int | None, ...] | None, str | None]:
    """The declared input shape and dtype, or (None, None) for a model without declared inputs.

    Raises:
        UnsupportedModelError: the model has several inputs or several outputs.
    """
    try:
        inputs = model.inputs
    except AttributeError:  # Keras 3 subclassed models have no ``inputs``
        inputs = None
    if not inputs:
        return None, None
    if len(inputs) != 1:
        raise UnsupportedModelError(
            f"Keras model {describe(model)} has {len(inputs)} inputs; slimkit supports "
            "models with one input and one output"
        )
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) > 1:
        raise UnsupportedModelError(
            f"Keras model {describe(model)} has {len(outputs)} outputs; slimkit supports "
            "models with one input and one output"
        )
    shape = tuple(None if d is None else int(d) for d in inputs[0].shape)
    dtype = inputs[0].dtype
    return shape, str(getattr(dtype, "name", dtype))

def single_output(model: Any, out: Any) -> None:
    if isinstance(out, (list, tuple, dict)):
        raise UnsupportedModelError(
            f"Keras model {describe(model)} returns a {type(out).__name__} of outputs; "
            "slimkit supports models with one input and one output"
        )

def output_shape(model: Any, x: np.ndarray) -> tuple[int | None, ...]:
    """The model's output shape past the batch axis."""
    outputs = getattr(model, "outputs", None)
    if outputs:
        return tuple(None if d is None else int(d) for d in outputs[0].shape[1:])
    out = model(x[:1], training=False)
    single_output(model, out)
    return tuple(int(d) for d in out.shape[1:])

def split_data(k: ModuleType, data: Any) -> tuple[str, Any, Any]:
    """Classifies training data: ("arrays", x, y), ("dataset", None, None) or ("sequence", None, None)."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise DataError(f"train_data: expected a pair (x, y), got a {type(data).__name__} of {len(data)}")
        return "arrays", data[0], data[1]
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(data, tf.data.Dataset):
        return "dataset", None, None
    pydataset = getattr(k.utils, "PyDataset", None) or getattr(k.utils, "Sequence", None)
    if pydataset is not None and isinstance(data, pydataset):
        return "sequence", None, None
    raise DataError(
        f"train_data: expected (x, y) numpy arrays, a tf.data.Dataset or a keras.utils.PyDataset, "
        f"got {type(data).__module__}.{type(data).__qualname__}"
    )


def check_dataset(model: Any, data: Any, check_input: Callable[[np.ndarray, str], None]) -> None:
    """Checks that a tf.data.Dataset yields batched (x, y) pairs of the model's input shape."""
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise DataError(f"train_data: the tf.data.Dataset must yield (x, y) pairs, it yields {spec}")
    shape, _ = input_spec(model)
    x_shape = getattr(spec[0], "shape", None)
    if x_shape is None or x_shape.rank is None:
        return
    got = tuple(x_shape.as_list())
    if shape is None:
        # No declared input: run the model once on zeros of the dataset's batch shape.
        zeros = np.zeros(tuple(1 if d is None else d for d in got), dtype=spec[0].dtype.as_numpy_dtype)
        try:
            check_input(zeros, "train_data")
        except DataError as exc:
            raise DataError(
                f"train_data: the model cannot run on the tf.data.Dataset's inputs of shape {got} "
                f"({one_line(exc.__cause__ or exc)}); is the dataset batched (.batch(n))?"
            ) from exc
        return
    if len(got) == len(shape) - 1:
        raise DataError(
            f"train_data: the tf.data.Dataset yields single samples of shape {got}; "
            "batch it with .batch(batch_size)"
        )
    if len(got) != len(shape) or any(
        e is not None and g is not None and e != g for e, g in zip(shape[1:], got[1:])
    ):
        raise DataError(
            f"train_data: the tf.data.Dataset yields inputs of shape {got}, "
            f"expected {format_shape(shape)}"
        )


def num_batches(k: ModuleType, data: Any, batch_size: int) -> int:
    """Steps per epoch over ``data``: ceil(len(x) / batch_size) for (x, y), a dataset's length otherwise.

    Raises:
        DataError: ``data`` is empty, of unknown or infinite length, or of an unsupported type.
    """
    kind, x, _ = split_data(k, data)
    if kind == "arrays":
        if len(x) == 0:
            raise DataError(f"train_data: no samples (x has shape {np.shape(x)})")
        return math.ceil(len(x) / int(batch_size))
    if kind == "dataset":
        import tensorflow as tf  # loaded already: data is a tf.data.Dataset

        n = int(data.cardinality())
        if n in (int(tf.data.INFINITE_CARDINALITY), int(tf.data.UNKNOWN_CARDINALITY)):
            raise DataError(
                "train_data: the tf.data.Dataset has "
                f"{'infinite' if n == int(tf.data.INFINITE_CARDINALITY) else 'unknown'} length; "
                "pass a finite, batched dataset (use .take(n), or .apply(tf.data.experimental."
                "assert_cardinality(n)) after operations such as filter)"
            )
    else:
        n = len(data)
    if n == 0:
        raise DataError("train_data: the dataset is empty")
    return n


def check_input(model: Any, x: np.ndarray, what: str, good: set[tuple[tuple[int, ...], str]]) -> None:
    """Raises DataError naming ``what`` if ``x`` cannot be fed to ``model``.

    Checks against the declared input shape where the model has one (Sequential, Functional); a
    subclassed model is run once on ``x[:1]`` per input shape and dtype (remembered in ``good``).

    Raises:
        DataError: ``x`` is not a non-empty numeric numpy array of the model's input shape.
        UnsupportedModelError: the model has several inputs or outputs.
    """
    if not isinstance(x, np.ndarray):
        raise DataError(f"{what}: expected a numpy array, got {type(x).__module__}.{type(x).__qualname__}")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{what}: expected numbers, got an array of dtype {x.dtype}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{what}: no samples (shape {tuple(x.shape)})")
    shape, _ = input_spec(model)
    if shape is not None:
        if x.ndim != len(shape) or any(e is not None and e != a for e, a in zip(shape[1:], x.shape[1:])):
            raise DataError(f"{what}: expected shape {format_shape(shape)}, got {tuple(x.shape)}")
        return
    key = (tuple(x.shape[1:]), x.dtype.str)
    if key in good:
        return
    try:
        out = model(x[:1], training=False)
    except Exception as exc:  # any failure to run on this shape is the data's fault
        raise DataError(f"{what}: the model cannot run on inputs of shape {tuple(x.shape)} ({one_line(exc)})") from exc
    single_output(model, out)
    good.add(key)
