"""ONNX export for any supported model: write to a temporary file, verify in onnxruntime, then rename.

The destination is checked first (see :func:`slimkit.staging.check_target`). The adapter writes the
float graph to a temporary file beside it; slimkit checks it against the framework's own output on
the given samples and only then moves it into place, so a failed or mismatching export never leaves a
file, and a killed one leaves only a temporary file the next write into that directory removes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from slimkit import checks, deferred, deploy, memory
from slimkit.data import PROBE_BATCH, as_arrays, at_least_two, head
from slimkit.errors import ExportError
from slimkit.quant.export import export_quantized
from slimkit.quant.known_outputs import KnownOutputs
from slimkit.quant.reuse import export_float
from slimkit.recipe import MAX_OPSET, MIN_OPSET, OnnxExport
from slimkit.registry import adapter_for
from slimkit.report import FileRow, QuantExportRow
from slimkit.staging import check_target, staged


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    sample: Any,
    settings: OnnxExport | None = None,
) -> FileRow:
    """Exports ``model`` to ONNX at ``path`` and verifies it against the framework.

    A fake-quant model (from a quantize stage) is written in QDQ form with int8 weights and checked
    against its simulation; see :mod:`slimkit.quant.export`.

    Args:
        model: a keras.Model or torch.nn.Module (not modified).
        path: destination ``.onnx`` file; written atomically; a symbolic link is written through (its
            target is replaced).
        sample: input samples in the framework's layout (batch first); the first is used for tracing
            and up to 16 for verification, run as one batch to check the dynamic batch axis.
        settings: opset, whether to verify, and the tolerance.

    Returns:
        The file's row for the report: sizes and the max abs difference found.

    Raises:
        DataError: ``sample`` does not fit the model.
        ExportError: ``path`` cannot be written (a directory, a missing or read-only directory), the
            opset is unsupported, the exporter failed or the ONNX output differs beyond tolerance; no
            file is left.
    """
    return export_with_report(model, path, sample, settings)[0]


def export_with_report(
    model: Any,
    path: str | os.PathLike[str],
    sample: Any,
    settings: OnnxExport | None = None,
    known: KnownOutputs | None = None,
    checked: bool = False,
) -> tuple[FileRow, QuantExportRow | None]:
    """:func:`export_onnx`, also returning the quantized export's row (None for a float model).

    ``known``: outputs the quantize stage computed on the first samples, reused for verification while
    they still describe the model (see :mod:`slimkit.quant.known_outputs`). ``checked``: ``sample`` is known
    to fit the model (compress ran it), so the trial run that checks it is skipped (on a fake-quant PyTorch
    ResNet50, seconds: every weight's quantizer runs)."""
    settings = settings or OnnxExport()
    path = Path(path)
    target = check_target(path, "export_onnx")  # before any work: a bad path fails in milliseconds
    if not MIN_OPSET <= settings.opset <= MAX_OPSET:
        raise ExportError(f"export_onnx: opset {settings.opset} is outside {MIN_OPSET}..{MAX_OPSET}, the opsets "
                          "both exporters write (export.onnx.opset)")
    adapter = adapter_for(model)
    x, _ = as_arrays(sample, "sample", need_labels=False)
    if not checked:
        adapter.check_input(x, "sample")
    plan = adapter.quant_plan()
    quant_row = None
    with memory.steady_heap(), staged(target, "export_onnx") as out:
        tmp = out.path
        if plan is not None:
            diff, quant_row = export_quantized(adapter, plan, tmp, x, settings, path, known=known)
            tolerance: float | None = quant_row.tolerance
        else:
            export_float(adapter, str(tmp), head(x, 1), settings.opset)
            diff = None
            if settings.verify:
                batch = at_least_two(head(x, checks.probe_samples()))  # more than one row checks the batch axis
                diff = verify(adapter.predict(batch, PROBE_BATCH), deploy.load_runtime().run(str(tmp), batch), settings,
                              path)
            tolerance = settings.tolerance if settings.verify else None
        out.commit()
    packed = deferred.of_file(target, deferred.gzip_size) if checks.measure_gzip() else None
    row = FileRow(str(path), "onnx-qdq" if plan is not None else "onnx", target.stat().st_size, packed, diff,
                  tolerance)
    return row, quant_row


def verify(reference: np.ndarray, onnx_out: np.ndarray, settings: OnnxExport, path: Path) -> float:
    """Max abs difference between framework and ONNX outputs; raises above tolerance."""
    if reference.shape != onnx_out.shape:
        raise ExportError(f"{path}: ONNX output shape {onnx_out.shape} != framework output {reference.shape}")
    diff = float(np.max(np.abs(reference - onnx_out))) if reference.size else 0.0
    bound = settings.tolerance * max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)
    if not diff <= bound:  # also catches NaN
        raise ExportError(
            f"{path}: ONNX output differs from the framework by {diff:.3g} (max abs), above the "
            f"tolerance {bound:.3g}; the file was not written"
        )
    return diff
