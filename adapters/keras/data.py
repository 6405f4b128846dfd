"""What Keras models take and give: declared input shape, one output, and the training data kinds
(numpy arrays, tf.data datasets, PyDatasets) checked before they reach ``fit``."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np

from slimkit.data import as_inputs, check_finite, head, leaves
from slimkit.errors import DataError, UnsupportedModelError
from slimkit.labels import prepare_labels

from .models import describe, format_shape, one_line


@dataclass(frozen=True)
class DeclaredInput:
    """One input a Keras model declares: its name, shape (batch axis included) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


def declared_inputs(model: Any) -> list[DeclaredInput] | None:
    """The model's declared inputs in call order, or None for a model without (subclassed).

    Raises:
        UnsupportedModelError: the model has several outputs.
    """
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) > 1:
        raise UnsupportedModelError(
            f"Keras model {describe(model)} has {len(outputs)} outputs; slimkit supports models with one output"
        )
    try:
        inputs = model.inputs
    except AttributeError:  # Keras 3 subclassed models have no ``inputs``
        inputs = None
    if not inputs:
        return None
    return [DeclaredInput(str(getattr(t, "name", f"input_{i}")).split(":")[0],
                          tuple(None if d is None else int(d) for d in t.shape),
                          str(getattr(t.dtype, "name", t.dtype))) for i, t in enumerate(inputs)]


def input_spec(model: Any, feature: str = "this") -> tuple[tuple[int | None, ...] | None, str | None]:
    """The declared shape and dtype of a single-input model, or (None, None) without declared inputs.

    Raises:
        UnsupportedModelError: the model has several inputs (``feature`` names what needs one) or
            several outputs.
    """
    declared = declared_inputs(model)
    if declared is None:
        return None, None
    if len(declared) != 1:
        raise UnsupportedModelError(
            f"Keras model {describe(model)} has {len(declared)} inputs; {feature} supports Keras models with one "
            "input"
        )
    return declared[0].shape, declared[0].dtype


def aligned(declared: list[DeclaredInput], x: Any, what: str) -> list[np.ndarray]:
    """The arrays of model inputs ``x`` in the order of the declared inputs.

    Raises:
        DataError: ``x`` has another number of inputs, or names that are not the model's.
    """
    names = [d.name for d in declared]
    if isinstance(x, dict):
        if set(x) != set(names):
            raise DataError(f"{what}: the model's inputs are named {names}, got {sorted(x)}")
        return [x[n] for n in names]
    arrays = list(x) if isinstance(x, (tuple, list)) else [x]
    if len(arrays) != len(declared):
        raise DataError(f"{what}: the model takes {len(declared)} input(s) {names}, got {len(arrays)}")
    return arrays


def keras_inputs(x: Any) -> Any:
    """Model inputs in the form Keras calls take: one array, a list, or a dict."""
    if isinstance(x, (tuple, list)):
        return list(x) if len(x) != 1 else x[0]
    return x


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
    out = model(keras_inputs(head(as_inputs(x, "inputs"), 1)), training=False)
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


def check_dataset(model: Any, data: Any, check_input: Callable[[np.ndarray, str], None],
                  loss: str | None = None) -> None:
    """Checks that a tf.data.Dataset yields batched (x, y) pairs of the model's input shape, and its
    first batch's values (:func:`check_first_batch`)."""
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise DataError(f"train_data: the tf.data.Dataset must yield (x, y) pairs, it yields {spec}")
    _check_shapes(model, spec, check_input)
    check_first_batch(model, data, loss)


def check_first_batch(model: Any, data: Any, loss: str | None = None) -> None:
    """Checks the values of a tf.data.Dataset's first batch: no NaN or infinity in x or y, and labels
    that fit ``loss`` (:func:`slimkit.labels.prepare_labels`). Without ``loss``, integer labels shaped
    like the output without its class axis are class ids, checked to lie in the model's classes
    (what Keras would otherwise stop on with a raw InvalidArgumentError mid-epoch).

    Only the first batch is read: a dataset is a stream, and reading it all would cost an epoch.

    Raises:
        DataError: a non-finite value, or labels that do not fit; the message names ``train_data``.
    """
    import tensorflow as tf  # loaded already: data is a tf.data.Dataset

    for element in data.take(1):
        x = tf.nest.map_structure(np.asarray, element[0])
        y = np.asarray(element[1])
        check_finite(x, "train_data (first tf.data batch) x")
        check_finite(y, "train_data (first tf.data batch) y")
        if isinstance(x, dict) or (isinstance(x, (tuple, list)) and len(x) != 1):
            return  # several inputs: output_shape below runs single-input models only
        x = x[0] if isinstance(x, (tuple, list)) else x
        out = output_shape(model, x)
        if loss is None:
            # one output is a regression or a binary score, never a choice among classes
            ids = y.dtype.kind in "iu" and bool(out) and out[-1] != 1 and \
                (y.ndim - 1 == len(out) - 1 or (y.ndim - 1 == len(out) and y.shape[-1] == 1))
            if not ids:
                return
            loss = "sparse_categorical_crossentropy"
        prepare_labels(y, loss, out, len(y), "train_data (first tf.data batch)")


def _check_shapes(model: Any, spec: tuple[Any, ...], check_input: Callable[[np.ndarray, str], None]) -> None:
    """The dataset's declared input shape against the model's."""
    shape, _ = input_spec(model, "training on a tf.data.Dataset")
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


def check_input(model: Any, x: Any, what: str, good: set[tuple[Any, ...]]) -> None:
    """Raises DataError naming ``what`` if ``x`` cannot be fed to ``model``.

    Checks against the declared input shape where the model has one (Sequential, Functional); a
    subclassed model is run once on ``x[:1]`` per input shape and dtype (remembered in ``good``).

    Raises:
        DataError: ``x`` is not a non-empty numeric numpy array of the model's input shape.
        UnsupportedModelError: the model has several inputs or outputs.
    """
    x = as_inputs(x, what)
    declared = declared_inputs(model)
    if declared is not None:
        for d, a in zip(declared, aligned(declared, x, what)):
            if a.ndim != len(d.shape) or any(e is not None and e != g for e, g in zip(d.shape[1:], a.shape[1:])):
                where = f"{what}" if len(declared) == 1 else f"{what} input {d.name!r}"
                raise DataError(f"{where}: expected shape {format_shape(d.shape)}, got {tuple(a.shape)}")
        return
    key = tuple((tuple(a.shape[1:]), a.dtype.str) for a in leaves(x))
    if key in good:
        return
    try:
        out = model(keras_inputs(head(x, 1)), training=False)
    except Exception as exc:  # any failure to run on this shape is the data's fault
        shapes = [tuple(a.shape) for a in leaves(x)]
        raise DataError(f"{what}: the model cannot run on inputs of shape "
                        f"{shapes[0] if len(shapes) == 1 else shapes} ({one_line(exc)})") from exc
    single_output(model, out)
    good.add(key)
