"""slimkit: prune, quantize and distill Keras and PyTorch models with one recipe, deploy through ONNX.

Public API::

    import slimkit
    recipe = slimkit.Recipe.load("recipe.yaml")
    result = slimkit.compress(model, recipe, train_data=(x, y), eval_data=(xv, yv))
    result.export_onnx("model.onnx")
"""

from __future__ import annotations

import os
import sys
from typing import Any

# TensorFlow reads its C++ log level once, when it loads: imported before it, slimkit keeps the runtime's
# informational lines (device lists, "Starting new session" at every export) out of the output. Warnings
# and errors still show, and a level the user set is kept. See README "Progress and logging".
if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from slimkit.adapter import LayerInfo, ModelAdapter, StepCallback, TrainHooks
from slimkit.compress import CompressionResult, compress
from slimkit.errors import (
    DataError,
    ExportError,
    NotSupportedYetError,
    RecipeError,
    SlimkitError,
    SlimkitWarning,
    UnsupportedModelError,
)
from slimkit.export import export_onnx as _export_onnx
from slimkit.optim import OPTIMIZERS, UpdateRule
from slimkit.plugins import NoOptions, bounded
from slimkit.native_logs import filtered_stderr as quiet_native_logs
from slimkit.progress import get_verbosity, set_verbosity
from slimkit.pruning.criteria import CRITERIA, Criterion, CriterionData, member_slices
from slimkit.pruning.methods import PRUNING_METHODS, PruneContext, Pruner, PruningMethod
from slimkit.quant.methods import QUANT_METHODS, QuantContext, QuantMethod, QuantOutcome
from slimkit.quant.observers import OBSERVERS
from slimkit.recipe import OnnxExport, QuantizeStage, Recipe
from slimkit.report import FileRow, LayerRow, QuantExportRow, QuantRow, Report, StageRow
from slimkit.saving import load, save
from slimkit.tune.sensitivity import sensitivity
from slimkit.tune.sensitivity_report import Sensitivity, SensitivityRow

__version__ = "0.3.0"


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    sample: Any,
    opset: int = 17,
    verify: bool = True,
    tolerance: float = 1e-3,
) -> FileRow:
    """Exports any supported model to ONNX, verified against the framework in onnxruntime.

    Args:
        model: a keras.Model or torch.nn.Module (not modified).
        path: destination file; written atomically, never left half-written.
        sample: input samples (batch first) in the framework's layout.
        opset: ONNX opset.
        verify: compare onnxruntime's output with the framework's and raise above ``tolerance``.
        tolerance: allowed max abs difference, relative to max(1, max |framework output|).

    Returns:
        The file's sizes and the measured max abs difference.
    """
    return _export_onnx(model, path, sample, OnnxExport(opset=opset, verify=verify, tolerance=tolerance))


def register_criterion(name: str, options: type = NoOptions) -> Any:
    """Decorator registering a channel-importance criterion (a :class:`Criterion` subclass) under
    ``name``; recipes then name it in ``prune.criterion`` and it runs on every framework."""
    return CRITERIA.register(name, options)


def register_pruning_method(name: str, options: type = NoOptions) -> Any:
    """Decorator registering a :class:`PruningMethod` under ``name`` (``prune.method``); ``options``
    is its frozen dataclass of recipe keys."""
    return PRUNING_METHODS.register(name, options)


def register_quant_method(name: str, options: type = NoOptions) -> Any:
    """Decorator registering a :class:`QuantMethod` under ``name`` (``quantize.method``)."""
    return QUANT_METHODS.register(name, options)


def register_observer(name: str, options: type = NoOptions) -> Any:
    """Decorator registering a calibration observer under ``name`` (``activations.calibration``); the
    class needs ``update(x)``, ``range()`` and a classmethod ``build(options, settings)``; a class attribute
    ``keeps_batches = False`` (update keeps no reference to ``x``) lets calibration pass views without copying."""
    return OBSERVERS.register(name, options)


def register_optimizer(name: str, options: type = NoOptions) -> Any:
    """Decorator registering an :class:`UpdateRule` under ``name`` (``fine_tune.optimizer``)."""
    return OPTIMIZERS.register(name, options)


__all__ = [
    "CompressionResult", "DataError", "ExportError", "FileRow", "LayerInfo", "LayerRow", "ModelAdapter", "StepCallback",
    "NotSupportedYetError", "QuantExportRow", "QuantRow", "QuantizeStage", "RecipeError", "Recipe", "Report", "SlimkitError", "SlimkitWarning", "StageRow", "TrainHooks",
    "UnsupportedModelError", "compress", "export_onnx", "load", "save", "Sensitivity", "SensitivityRow", "sensitivity",
    "CRITERIA", "Criterion", "CriterionData", "NoOptions", "OBSERVERS", "OPTIMIZERS", "PRUNING_METHODS", "PruneContext",
    "Pruner", "PruningMethod", "QUANT_METHODS", "QuantContext", "QuantMethod", "QuantOutcome", "UpdateRule", "bounded",
    "member_slices", "register_criterion", "register_observer", "register_optimizer", "register_pruning_method",
    "register_quant_method", "get_verbosity", "set_verbosity", "quiet_native_logs",
]
