"""``slimkit export``: a model file to a verified ONNX file."""

from __future__ import annotations

from pathlib import Path

import click

from slimkit.cli.errors import EXIT_HELP, debug_option, guarded
from slimkit.cli.loading import load_data, load_model, sample_for
from slimkit.cli.options import input_shape_option, model_file_options, parse_shape
from slimkit.errors import ExportError
from slimkit.recipe import MAX_OPSET, MIN_OPSET


@click.command(epilog=EXIT_HELP)
@click.argument("model_path", metavar="MODEL")
@click.option("--onnx", "onnx_path", required=True, metavar="FILE", help="The ONNX file to write (atomically).")
@click.option("--data", "data_spec", metavar="FILE|MODULE:FN",
              help="Sample inputs to trace and verify with (.npz, .npy or module:function; the first 16 are used).")
@input_shape_option
@model_file_options
@click.option("--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=17, show_default=True, help="ONNX opset.")
@click.option("--tolerance", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True,
              help="Allowed max |onnxruntime - framework| relative to max(1, max |framework output|).")
@debug_option
@guarded
def export(model_path: str, onnx_path: str, data_spec: str | None, input_shape: str | None, factory: str | None,
           trust: bool, opset: int, tolerance: float) -> None:
    """Export MODEL to a verified ONNX file.

    The file is checked in onnxruntime against the framework's own output before it is moved into place.

    Quantized models (saved by slimkit compress) export as QDQ ONNX with integer kernels.

    \b
      slimkit export model.keras --onnx model.onnx
      slimkit export out/model --factory models:make_cnn --onnx cnn.onnx --data sample.npy
    """
    import slimkit

    shape = parse_shape(input_shape)
    loaded = load_model(model_path, factory, trust, "MODEL")
    data = load_data(data_spec, "--data") if data_spec else None
    sample = sample_for(loaded.model, data, shape)
    parent = Path(onnx_path).expanduser().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"--onnx {onnx_path}: cannot create the folder {parent} ({exc.strerror or exc})") from None
    row = slimkit.export_onnx(loaded.model, onnx_path, sample=sample, opset=opset, tolerance=tolerance)
    click.echo(f"wrote {row.path}: {row.bytes} bytes, max |onnxruntime - framework| {row.max_abs_diff:.2e} "
               f"(tolerance {row.tolerance:g})" if row.max_abs_diff is not None else f"wrote {row.path}: {row.bytes} bytes")
