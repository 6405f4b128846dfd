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
