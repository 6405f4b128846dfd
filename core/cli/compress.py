"""``slimkit compress``: a model file through a recipe, to a folder with the compressed model, its
verified ONNX file and the report."""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import click
import numpy as np

from slimkit.cli.errors import EXIT_HELP, debug_option, guarded
from slimkit.cli.loading import LoadedModel, inputs_of, load_data, load_model
from slimkit.cli.options import model_file_options
from slimkit.errors import DataError, ExportError, RecipeError, SlimkitWarning

#: What compress writes into --out.
MODEL_DIR, ONNX_FILE = "model", "model.onnx"
REPORT_JSON, REPORT_MD, REPORT_HTML = "report.json", "report.md", "report.html"

#: A saved model must read back to what compress returned, up to float round-off of the file formats.
RELOAD_TOLERANCE = 1e-5


@click.command(epilog=EXIT_HELP)
@click.option("--model", "model_path", required=True, metavar="PATH",
              help="The model: .keras / .h5 file, PyTorch state dict with --factory, .pt2 with "
                   "--trust-model-file, or a folder slimkit saved.")
@click.option("--recipe", "recipe_path", required=True, metavar="FILE", help="The recipe (YAML).")
@click.option("--data", "data_spec", required=True, metavar="FILE|MODULE:FN",
              help="Training and calibration data, and the samples export verifies with: .npz with x and y "
                   "(or arrays named after the model's inputs), .npy of inputs (recipes that do not train), or "
                   "module:function returning numpy arrays, (x, y), or a loader.")
@click.option("--eval-data", "eval_spec", metavar="FILE|MODULE:FN",
              help="Labelled data for the accuracy before and after (same forms as --data).")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help=f"Folder to write into (created): {MODEL_DIR}/ (the compressed model, slimkit.load reads it), "
                   f"{ONNX_FILE}, {REPORT_JSON}, {REPORT_MD}, {REPORT_HTML}.")
@model_file_options
@click.option("--seed", type=int, help="Overrides the recipe's seed.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors and warnings.")
@click.option("--verbose", "-v", is_flag=True, help="Also print slimkit's debug log lines.")
@debug_option
@guarded
def compress(model_path: str, recipe_path: str, data_spec: str, eval_spec: str | None, out_dir: str,
             factory: str | None, trust: bool, seed: int | None, quiet: bool, verbose: bool) -> None:
    """Compress a model file as a recipe says.

    Writes the compressed model, its ONNX file (verified in onnxruntime against the compressed model) and
    the report into --out, and checks that the saved model reads back to what compress computed.

    \b
      slimkit compress --model cnn.keras --recipe prune.yaml --data digits.npz --out out/
      slimkit compress --model cnn.pt --factory models:make_cnn --recipe prune.yaml \\
                       --data digits.npz --eval-data test.npz --out out/
    """
    from slimkit.progress import get_verbosity, set_verbosity

    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose exclude each other")
    before = get_verbosity()
    set_verbosity("debug" if verbose else "quiet" if quiet else "normal")
    try:
        _compress(model_path, recipe_path, data_spec, eval_spec, Path(out_dir), factory, trust, seed, quiet)
    finally:
        set_verbosity(before)  # the process's setting (a caller running main() in-process keeps its own)


def _compress(model_path: str, recipe_path: str, data_spec: str, eval_spec: str | None, out: Path,
              factory: str | None, trust: bool, seed: int | None, quiet: bool) -> None:
    import slimkit

    recipe = _recipe(recipe_path, seed)  # before any framework loads: recipe errors come fast
    try:  # before the work: a folder that cannot be made fails now, not after compressing
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    loaded = load_model(model_path, factory, trust, "--model")
    train = load_data(data_spec, "--data")
    if isinstance(train, (np.ndarray, dict)):
        train = (train, None)  # inputs only: calibration and one-shot stages need no labels
    evaluation = load_data(eval_spec, "--eval-data") if eval_spec else None
    if isinstance(evaluation, (np.ndarray, dict)):
        raise DataError(f"--eval-data {eval_spec}: holds inputs only; accuracy needs labels (an .npz with x and y)")
    if inputs_of(train, "--data", 1) is None and (evaluation is None or inputs_of(evaluation, "--eval-data", 1) is None):
        raise DataError(f"--data {data_spec}: a loader gives no samples ahead to export and verify the model with; "
                        "pass --eval-data as an .npz file (or return numpy arrays)")
    result = slimkit.compress(loaded.model, recipe, train_data=train, eval_data=evaluation, verbose=not quiet)
    _add_layer_measures(result, loaded.model)
    saved = result.save(out / MODEL_DIR)
    diff = _reload_check(result, loaded, saved)
    result.report.notes.append(f"{saved} reads back (slimkit.load) to the compressed model: max |difference| "
                               f"{diff:.2e} on {len(_first(result.sample))} samples")
    row = result.export_onnx(out / ONNX_FILE)
    written = _write_reports(result.report, out)
    if not quiet:
        _summary(result.report, [saved, Path(row.path), *written])


def _recipe(path: str, seed: int | None) -> Any:
    import slimkit

    if not Path(path).expanduser().is_file():
        raise RecipeError(f"--recipe {path}: no such file")
    recipe = slimkit.Recipe.load(Path(path).expanduser())
    if seed is None:
        return recipe
    raw = dict(recipe.raw)  # through the mapping, so that a tuner's trials (edits of it) keep the seed
    raw["seed"] = seed
    return dataclasses.replace(slimkit.Recipe.load(raw), source=recipe.source)


def _first(sample: Any) -> Any:
    from slimkit.data import leaves

    return leaves(sample)[0]


def _reload_check(result: Any, loaded: LoadedModel, saved: Path) -> float:
    """Max abs difference between the saved model read back and ``result.model`` on the kept samples.

    Raises:
        ExportError: they differ beyond float round-off.
    """
    import slimkit
    from slimkit.registry import adapter_for

    if result.sample is None:
        raise DataError("--data: compress keeps sample inputs from the data to export and check the model; "
                        "give numpy data (.npz/.npy) or a function returning arrays")
    again = slimkit.load(saved, model=loaded.architecture)
    want = np.asarray(adapter_for(result.model).predict(result.sample), dtype=np.float64)
    got = np.asarray(adapter_for(again).predict(result.sample), dtype=np.float64)
    diff = float(np.max(np.abs(want - got))) if want.size else 0.0
    if want.shape != got.shape or diff > RELOAD_TOLERANCE * max(1.0, float(np.max(np.abs(want)))):
        raise ExportError(f"{saved}: the saved model reads back to outputs {got.shape} that differ from the compressed "
                          f"model's {want.shape} by {diff:.3g}")
    return diff


def _add_layer_measures(result: Any, original: Any) -> None:
    """Each report row's weights before and MACs before and after (conv and dense layers), for the
    report's tables and plots; left out when the layers' outputs cannot be read."""
    from slimkit.cli.summary import layer_macs
    from slimkit.errors import SlimkitError
    from slimkit.registry import adapter_for

    if result.sample is None:
        return
    before_adapter = adapter_for(original)
    try:
        before, after = layer_macs(before_adapter, result.sample), layer_macs(adapter_for(result.model), result.sample)
    except (SlimkitError, KeyError):
        before, after = {}, {}
    params = {info.name: info.params for info in before_adapter.layers()}
    result.report.layers = [dataclasses.replace(row, params_before=params.get(row.name), macs=after.get(row.name),
                                                macs_before=before.get(row.name)) for row in result.report.layers]


def _write_reports(report: Any, out: Path) -> list[Path]:
    """report.json, report.md and report.html (skipped, with a warning, without matplotlib)."""
    paths = [report.to_json(out / REPORT_JSON), out / REPORT_MD]
    paths[1].write_text(report.to_markdown() + "\n", encoding="utf-8")
    if importlib.util.find_spec("matplotlib") is None:  # the report extra: the HTML page's plots need it
        warnings.warn(f"{out / REPORT_HTML} not written: its plots need matplotlib (pip install 'slimkit[report]')",
                      SlimkitWarning, stacklevel=2)
        return paths
    from slimkit.report_html import write_html

    return [*paths, write_html(report, out / REPORT_HTML)]


def _summary(report: Any, paths: list[Path]) -> None:
    before, after = report.metrics_before, report.metrics_after
    total = 1.0 - report.nonzeros / max(1, report.params)
    click.echo(f"compressed ({report.framework}): {report.params} weights, {total:.1%} zero")
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        click.echo(f"  {key}: {'-' if b is None else f'{b:.4f}'} -> {'-' if a is None else f'{a:.4f}'}")
    for f in report.files:
        check = "" if f.max_abs_diff is None else f", max |onnxruntime - framework| {f.max_abs_diff:.2e}"
        click.echo(f"  {f.path}: {f.bytes} bytes{check}")
    click.echo("wrote " + ", ".join(str(p) for p in paths))
