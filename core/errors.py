"""Errors raised by slimkit. Every message names the field, layer, file or value at fault."""

from __future__ import annotations


class SlimkitError(Exception):
    """Base class of every error slimkit raises on purpose."""


class RecipeError(SlimkitError, ValueError):
    """A recipe is malformed: unknown key, wrong type, out-of-range value, or selector matching nothing."""


class NotSupportedYetError(RecipeError):
    """A recipe asks for a feature that is specified but not implemented in this version."""


class DataError(SlimkitError, ValueError):
    """Training, calibration or evaluation data does not fit the model (shape, dtype, emptiness)."""


class UnsupportedModelError(SlimkitError, TypeError):
    """The model object, or one of its layers, is of a kind slimkit cannot handle."""


class ExportError(SlimkitError, RuntimeError):
    """Export failed, or the exported file disagrees with the framework's own output."""


class PluginError(SlimkitError, RuntimeError):
    """A registered plugin (criterion, method, observer, ...) returned something slimkit cannot use."""


class SlimkitWarning(UserWarning):
    """Something was left undone on purpose (a channel group left whole, say); the message says why."""
