"""``slimkit recipe init`` and ``slimkit recipe check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from slimkit.cli.errors import EXIT_HELP, debug_option, guarded
from slimkit.cli.loading import load_model
from slimkit.cli.options import model_file_options
from slimkit.cli.starters import STAGES, starter
from slimkit.errors import RecipeError


@click.group(epilog=EXIT_HELP)
def recipe() -> None:
    """Write a starter recipe, or check one without running it."""


@recipe.command(epilog=EXIT_HELP)
@click.option("--method", "-m", "methods", multiple=True, type=click.Choice(list(STAGES)),
              help="A stage to include; repeat for several stages, in order (default: magnitude).")
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write the recipe here instead of to standard output (an existing file is kept).")
@debug_option
@guarded
def init(methods: tuple[str, ...], out: str | None) -> None:
    """Print a commented starter recipe.

    \b
      slimkit recipe init > recipe.yaml
      slimkit recipe init -m channel -m static -o recipe.yaml
    """
    text = starter(methods)
    if out is None:
        click.echo(text, nl=False)
        return
    path = Path(out)
    if path.exists():
        raise click.UsageError(f"--out {out}: the file exists; slimkit does not overwrite it")
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}", err=True)


@recipe.command(epilog=EXIT_HELP)
@click.argument("recipe_path", metavar="RECIPE")
@click.option("--model", "model_path", metavar="PATH",
              help="Also check the recipe's selectors and per-layer settings against this model's layers.")
@model_file_options
@debug_option
@guarded
def check(recipe_path: str, model_path: str | None, factory: str | None, trust: bool) -> None:
    """Validate RECIPE without running it (and against a model's layers with --model).

    Prints each stage and the layers it would act on; exits 2 with the field at fault otherwise.

    \b
      slimkit recipe check recipe.yaml
      slimkit recipe check recipe.yaml --model model.keras
    """
    import slimkit

    path = Path(recipe_path).expanduser()
    if not path.is_file():
        raise RecipeError(f"RECIPE {recipe_path}: no such file")
    parsed = slimkit.Recipe.load(path)
    lines = [f"{recipe_path}: valid recipe, {len(parsed.stages)} stage(s)"
             + (", with a tune: section" if parsed.tune is not None else "")]
    if model_path is None:
        lines += [f"  stages[{i}] {stage.name}" for i, stage in enumerate(parsed.stages)]
    else:
        loaded = load_model(model_path, factory, trust, "--model")
        lines += [f"  {line}" for line in stage_layers(parsed, loaded.model)]
    click.echo("\n".join(lines))


def stage_layers(parsed: Any, model: Any) -> list[str]:
    """One line per stage: the layers its selector picks in ``model``.

    Raises:
        RecipeError: a selector picks no layer, or a per-layer override names none the stage acts on.
    """
    from slimkit.pruning.methods import method_of as prune_method
    from slimkit.pruning.ratios import check_overrides as check_prune_overrides
    from slimkit.quant.methods import method_of as quant_method
    from slimkit.quant.overrides import check_overrides as check_quant_overrides
    from slimkit.recipe import DistillStage, PruneStage
    from slimkit.registry import adapter_for
    from slimkit.selection import select_layers

    layers = adapter_for(model).layers()
    lines = []
    for i, stage in enumerate(parsed.stages):
        if isinstance(stage, DistillStage):
            lines.append(f"stages[{i}] {stage.name}: trains every layer")
            continue
        if isinstance(stage, PruneStage):
            method = prune_method(stage)
            chosen = select_layers(layers, stage.layers, method.kinds, f"stages[{i}].prune.layers")
            check_prune_overrides(stage, method.takes_overrides, chosen, f"stages[{i}].prune")
        else:
            method = quant_method(stage)
            chosen = select_layers(layers, stage.layers, method.kinds, f"stages[{i}].quantize.layers")
            check_quant_overrides(stage, chosen, f"stages[{i}].quantize")
        names = [layer.name for layer in chosen]
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        lines.append(f"stages[{i}] {stage.name}: {len(names)} layer(s): {shown}")
    return lines
