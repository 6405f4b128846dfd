"""The saving capability: writing a model into a folder and reading it back without running code
from the files (no pickle, Keras safe mode)."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any


class SavingAdapter(abc.ABC):
    """Saves the adapter's model into a folder and loads such a folder back."""

    #: Suffixes of the framework's own model files that :meth:`load_file` reads safely (teachers).
    model_file_suffixes: tuple[str, ...] = ()

    @classmethod
    def load_file(cls, path: Path) -> Any:
        """A model from one of the framework's own files (``model_file_suffixes``), loaded safely.

        Raises:
            DataError: the file cannot be loaded safely; the message names it.
        """
        raise NotImplementedError

    #: Suffixes of files holding weights only (PyTorch state dicts), read onto an architecture the caller
    #: builds, without running code from the file.
    weights_file_suffixes: tuple[str, ...] = ()

    @classmethod
    def load_weights_file(cls, path: Path, model: Any) -> Any:
        """A copy of ``model`` (an instance of the architecture) holding the weights in ``path``.

        Nothing in the file is executed or unpickled beyond tensors; ``model`` is not modified.

        Raises:
            DataError: the file is damaged, holds more than weights, or does not fit ``model``; the
                message names the file and the weights at fault.
        """
        raise NotImplementedError

    #: Suffixes of model files whose loading may run code stored in them (torch.export's ``.pt2``): read
    #: only by :meth:`load_trusted_file`, which callers reach only when the user says the file is trusted.
    trusted_file_suffixes: tuple[str, ...] = ()

    @classmethod
    def load_trusted_file(cls, path: Path) -> Any:
        """A model from a file that may run code when loaded (a program or a pickled model object).

        Call it only for files the user trusts: loading can execute whatever the file's author put in it.

        Raises:
            DataError: the file cannot be loaded or holds no model; the message names it.
        """
        raise NotImplementedError

    @abc.abstractmethod
    def save_files(self, folder: Path) -> dict[str, Any]:
        """Writes the model's files into the (new, empty) ``folder``; returns what :meth:`load_files`
        needs to read them back (JSON-serialisable), which goes into the folder's manifest.

        Raises:
            ExportError: the model cannot be written; the message names the layer or object.
        """

    @classmethod
    @abc.abstractmethod
    def load_files(cls, folder: Path, entry: dict[str, Any], model: Any = None) -> Any:
        """The model saved in ``folder`` (``entry``: what :meth:`save_files` returned).

        Args:
            folder: the saved folder.
            entry: the manifest's framework entry.
            model: an instance of the architecture, for frameworks whose files hold no code
                (PyTorch); it is not modified.

        Raises:
            DataError: the files do not fit ``model`` or are damaged; the message names the file.
        """
