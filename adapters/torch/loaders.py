"""DataLoader batches as fine-tuning takes them: split into inputs and labels, converted, checked.

A batch is ``(x, y)``; a longer tuple or list ``(x1, ..., xk, y)`` (the last item is the labels, the
others positional inputs); or a dict (a tokenizer's output with labels) whose ``labels`` (or
``label``) entry is the labels and whose other entries are ``forward`` keyword arguments. Inputs
follow slimkit's data rules (:mod:`slimkit.data`): float64 and uint8 tensors become the model's float
type, integers and booleans stay. Labels are checked and converted per batch by
:func:`slimkit.labels.prepare_labels`, as numpy labels are, so a class id out of range or a target
of the wrong shape is a DataError naming the batch rather than an error deep in the loss. The first
batch's inputs are run through the model once (two samples) to check their form; every batch's
inputs are checked for NaN and infinity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from slimkit.data import leaves, map_inputs
from slimkit.errors import DataError
from slimkit.labels import prepare_labels

from slimkit.adapters.torch.inputs import call, first_tensor, misfit, model_device, to_tensors
from slimkit.adapters.torch.isolation import inference

#: Dict batch keys that hold the labels (the first present wins; transformers' convention first).
LABEL_KEYS = ("labels", "label")


def loader_length(loader: Any, what: str = "train_data") -> int:
    """Batches per epoch of a DataLoader.

    Raises:
        DataError: the loader has no length (an IterableDataset without ``__len__``) or no batch.
    """
    try:
        n = len(loader)
    except TypeError as exc:
        raise DataError(
            f"{what}: the DataLoader has no length (its dataset is an IterableDataset without __len__); "
            "slimkit needs the number of batches per epoch for its schedules: give the dataset a __len__"
        ) from exc
    if n == 0:
        raise DataError(f"{what}: the DataLoader yields no batch")
    return n


def split_batch(batch: Any, where: str) -> tuple[Any, Any]:
    """``(inputs, labels)`` of one DataLoader batch (forms in the module docstring).

    Raises:
        DataError: a batch of inputs only, or a dict batch without a label key; ``where`` names it.
    """
    if isinstance(batch, Mapping):
        keys = [k for k in LABEL_KEYS if k in batch]
        if not keys:
            raise DataError(
                f"{where}: a dict batch with keys {sorted(map(str, batch))} and no labels; fine-tuning needs "
                f"the labels under one of {list(LABEL_KEYS)} (the other keys are the model's inputs)"
            )
        inputs = {str(k): v for k, v in batch.items() if k not in LABEL_KEYS}
        if not inputs:
            raise DataError(f"{where}: a dict batch with labels ({keys[0]!r}) but no inputs")
        return inputs, batch[keys[0]]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return (batch[0] if len(batch) == 2 else tuple(batch[:-1])), batch[-1]
    form = type(batch).__name__ + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    raise DataError(
        f"{where}: the DataLoader yields batches of inputs only ({form}); fine-tuning needs (inputs, labels) "
        "batches: a dataset whose items are (x, y) pairs, or dicts with a 'labels' entry"
    )


def _tensor(a: Any, where: str) -> Any:
    """A batch item as a tensor or numpy array :func:`.inputs.to_tensor` can convert."""
    if isinstance(a, torch.Tensor):
        return a
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and objects
        raise DataError(f"{where}: cannot be read as an array ({exc})") from exc
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: must be numeric, got {type(a).__name__} of dtype {arr.dtype}")
    return arr


def _labels_numpy(y: Any, where: str) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu()
        return (y.float() if y.dtype in (torch.float16, torch.bfloat16) else y).numpy()
    return _tensor(y, where) if not isinstance(y, np.ndarray) else y


def _nonfinite(x: Any) -> int:
    """Number of NaN and infinite values over the floating tensors of ``x``."""
    return sum(int((~torch.isfinite(t)).sum()) for t in leaves(x) if t.is_floating_point())


class CheckedLoader:
    """A DataLoader yielding ``(inputs, labels)`` tensor batches in the training loop's form.

    Args:
        loader: the user's DataLoader.
        model: the model the batches are for (its device and float type; run once on the first batch).
        loss: the recipe's loss, against which labels are checked.
        what: the data's argument name in messages.
    """

    def __init__(self, loader: Any, model: nn.Module, loss: str, what: str = "train_data") -> None:
        self.loader, self.model, self.loss, self.what = loader, model, loss, what
        self._out_shape: tuple[int, ...] | None = None
        self._length = loader_length(loader, what)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        device = model_device(self.model)
        for index, batch in enumerate(self.loader):
            where = f"{self.what} (DataLoader batch {index})"
            x, y = split_batch(batch, where)
            x = to_tensors(map_inputs(x, lambda a: _tensor(a, f"{where} inputs")), self.model)
            bad = _nonfinite(x)
            if bad:
                raise DataError(f"{where}: the inputs hold {bad} NaN or infinite value(s); slimkit cannot train "
                                "on non-finite numbers")
            if self._out_shape is None:
                self._out_shape = self._first_check(x, where)
            n = int(leaves(x)[0].shape[0]) if leaves(x)[0].dim() else 0
            labels = prepare_labels(_labels_numpy(y, f"{where} labels"), self.loss, self._out_shape, n, where)
            yield x, torch.from_numpy(labels).to(device)

    def _first_check(self, x: Any, where: str) -> tuple[int, ...]:
        """The model's output shape past the batch axis on two samples of the first batch.

        Raises:
            DataError: the model cannot run on the inputs (wrong layout, shape or names).
        """
        sample = map_inputs(x, lambda t: t[:2])
        try:
            with inference(self.model), torch.no_grad():
                out = first_tensor(call(self.model, sample), type(self.model).__name__)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise misfit(where, [tuple(t.shape) for t in leaves(x)], self.model, exc) from exc
        return tuple(out.shape[1:])
