"""User data before it reaches a framework: model inputs of any form, checked with clear DataErrors.

A model's input (``x``) is one array, a tuple/list of arrays (positional inputs), or a dict of named
arrays (Keras input names; PyTorch ``forward`` keyword arguments, as a tokenizer returns them). Every
array has the samples on its first axis, the same number in each. Integer arrays (token ids,
attention masks) stay integers; floating arrays of any width, uint8 arrays (image pixels, converted
as they are, not scaled) and other numbers become the model's float type when a framework consumes
them (the adapters convert). NaN and infinities are refused where data enters (:func:`as_arrays`,
:func:`first_inputs`): no model can train, calibrate or be measured on them. Core only slices and counts them
with the helpers here, whatever their form.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from slimkit.errors import DataError

#: Model inputs: one array, positional arrays, or named arrays.
Inputs = Any

#: Inputs per forward pass when slimkit runs a model on its own probes (the quantize stage's fidelity
#: check and fallback trials, export verification): memory, not throughput, matters there, and a fake-
#: quantized model's many elementwise temporaries grow with the batch (PyTorch MobileNetV2 1.4 at 224:
#: 1.43 GB peak with all 16 probe inputs in one pass, 0.89 GB with 4, and no slower).
PROBE_BATCH = 4


def is_array_pair(data: Any) -> bool:
    """True for an ``(x, y)`` tuple or list of two items (as opposed to a framework loader)."""
    return isinstance(data, (tuple, list)) and len(data) == 2


def leaves(x: Inputs) -> list[np.ndarray]:
    """The arrays of ``x`` in order (dict values in key order)."""
    if isinstance(x, dict):
        return list(x.values())
    if isinstance(x, (tuple, list)):
        return list(x)
    return [x]


def map_inputs(x: Inputs, fn: Callable[[np.ndarray], Any]) -> Inputs:
    """``x`` with ``fn`` applied to every array, in the same form."""
    if isinstance(x, dict):
        return {k: fn(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(fn(v) for v in x)
    return fn(x)


def n_samples(x: Inputs) -> int:
    """Number of samples (the first axis, the same in every array)."""
    first = leaves(x)[0]
    return int(np.shape(first)[0]) if np.ndim(first) else 0


def take(x: Inputs, index: Any) -> Inputs:
    """The samples ``index`` (a slice or an index array) of every array of ``x``."""
    return map_inputs(x, lambda a: a[index])


def head(x: Inputs, count: int) -> Inputs:
    """The first ``count`` samples of ``x``."""
    return take(x, slice(0, count))


def concat(parts: list[Inputs]) -> Inputs:
    """Samples of several batches of the same form, joined."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate(parts)


def at_least_two(x: Inputs) -> Inputs:
    """``x``, or a single sample twice: more than one row checks an exported model's batch axis."""
    return x if n_samples(x) > 1 else concat([x, x])


def all_finite(x: Inputs) -> bool:
    """No NaN or infinity in any floating array of ``x``."""
    return all(np.all(np.isfinite(a)) for a in leaves(x) if np.issubdtype(np.asarray(a).dtype, np.floating))


def is_integer(a: np.ndarray) -> bool:
    """Integer (or boolean) data: token ids, masks; these keep their type.

    uint8 is not: it holds image pixels (no vocabulary fits in 256 ids), which models take as floats,
    as Keras casts them to a declared float input.
    """
    dtype = np.asarray(a).dtype
    return dtype.kind in "bi" or (dtype.kind == "u" and dtype.itemsize > 1)


def count_nonfinite(x: Inputs) -> tuple[int, int]:
    """(NaN count, infinity count) over the floating arrays of ``x``."""
    nans = infs = 0
    for a in leaves(x):
        a = np.asarray(a)
        if a.dtype.kind == "f":
            finite = np.isfinite(a)
            if not finite.all():
                n = int(np.count_nonzero(np.isnan(a)))
                nans, infs = nans + n, infs + int(a.size - np.count_nonzero(finite)) - n
    return nans, infs


def check_finite(x: Inputs, what: str) -> None:
    """Raises DataError naming ``what`` and the count if any floating array of ``x`` holds NaN or infinity.

    Raises:
        DataError: a NaN or infinite value; the message says how many of each and of how many values.
    """
    nans, infs = count_nonfinite(x)
    if nans or infs:
        total = sum(int(np.size(a)) for a in leaves(x))
        found = " and ".join(f"{n} {kind}" for n, kind in ((nans, "NaN"), (infs, "infinite")) if n)
        raise DataError(f"{what}: holds {found} value(s) (of {total}); slimkit cannot train, calibrate or "
                        "evaluate on non-finite numbers: drop or impute them first")


def as_inputs(x: Any, what: str) -> Inputs:
    """Validates model inputs and returns them as numpy arrays in the same form.

    Raises:
        DataError: no samples, a non-numeric array, arrays with different numbers of samples, or
            an input that is not an array; the message names ``what`` and the input.
    """
    if isinstance(x, dict):
        if not x:
            raise DataError(f"{what}: an empty dict of inputs")
        arrays: Inputs = {str(k): _array(v, f"{what}[{k!r}]") for k, v in x.items()}
    elif isinstance(x, (tuple, list)) and x and all(_is_arraylike(v) for v in x) and not _is_numeric_sequence(x):
        arrays = tuple(_array(v, f"{what}[{i}]") for i, v in enumerate(x))
    else:
        arrays = _array(x, what)
    counts = {np.shape(a)[0] if np.ndim(a) else 0 for a in leaves(arrays)}
    if 0 in counts:
        shapes = [tuple(np.shape(a)) for a in leaves(arrays)]
        raise DataError(f"{what}: no samples (x has shape {shapes[0] if len(shapes) == 1 else shapes})")
    if len(counts) > 1:
        raise DataError(f"{what}: the inputs have different numbers of samples {sorted(counts)}")
    return arrays


def as_arrays(data: Any, what: str, need_labels: bool) -> tuple[Inputs, np.ndarray | None]:
    """Validates numpy data: ``(x, y)`` with matching, non-zero lengths when ``need_labels``, else
    model inputs ``x`` alone (a pair of arrays is then two positional inputs).

    Raises:
        DataError: empty data, mismatched lengths, non-numeric arrays or missing labels; the message
            names ``what`` (``train_data``, ``eval_data``, ...).
    """
    if not need_labels:
        x, y = as_inputs(data, what), None
    elif without_labels(data):
        raise DataError(f"{what}: y is None, but labels are needed here (fine-tuning or a labelled metric); "
                        "pass (x, y)")
    elif is_array_pair(data):
        x, y = as_inputs(data[0], what), np.asarray(data[1])
    else:
        raise DataError(f"{what}: expected an (x, y) tuple of arrays, got {type(data).__name__}")
    if y is not None and (y.ndim == 0 or len(y) != n_samples(x)):
        raise DataError(f"{what}: x has {n_samples(x)} samples but y has {len(y) if y.ndim else 0}")
    check_finite(x, f"{what} x" if y is not None else what)
    if y is not None:
        check_finite(y, f"{what} y")
    return x, y


def first_inputs(data: Any, what: str, count: int, labelled: bool) -> Inputs | None:
    """Up to ``count`` input samples of numpy data (``(x, y)`` when ``labelled``, else ``x``), or
    None for framework loaders (tf.data, DataLoader), whose samples are not read ahead."""
    if data is None:
        return None
    if labelled and without_labels(data):  # (x, None): inputs only, fine where nothing trains
        x = as_inputs(data[0], what)
        check_finite(x, what)
    elif labelled:
        if not is_array_pair(data):
            return None
        x, _ = as_arrays(data, what, need_labels=True)
    elif isinstance(data, (np.ndarray, dict, tuple, list)):
        x = as_inputs(data, what)
        check_finite(x, what)
    else:
        return None
    return head(x, count)


def without_labels(data: Any) -> bool:
    """``(x, None)``: a pair whose labels were left out (fine where nothing needs them)."""
    return isinstance(data, tuple) and len(data) == 2 and data[1] is None


def _is_arraylike(v: Any) -> bool:
    return isinstance(v, np.ndarray) or (hasattr(v, "__array__") and hasattr(v, "shape"))


def _is_numeric_sequence(x: Any) -> bool:
    """A list of numbers or of equal-length rows (one array written as a list), not several inputs."""
    return all(isinstance(v, (int, float, np.number)) for v in x)


def _array(v: Any, what: str) -> np.ndarray:
    try:
        a = np.asarray(v)
    except Exception as exc:  # ragged lists and objects numpy cannot hold as one array
        raise DataError(f"{what}: cannot be read as an array ({exc})") from exc
    if a.dtype.kind not in "biuf":
        raise DataError(f"{what}: x must be numeric, got dtype {a.dtype}")
    return a


def first_sample(calib_data: Any, train_data: Any, eval_data: Any, count: int) -> Inputs | None:
    """The first ``count`` inputs for calibration, tracing and verification: from ``calib_data``, else the
    training data's inputs, else the evaluation data's; None when none is numpy data."""
    sample = first_inputs(calib_data, "calib_data", count, labelled=False)
    if sample is None:
        sample = first_inputs(train_data, "train_data", count, labelled=True)
    if sample is None:
        sample = first_inputs(eval_data, "eval_data", count, labelled=True)
    return sample

