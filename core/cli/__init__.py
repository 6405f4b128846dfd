"""The ``slimkit`` command: compress, inspect, export and bench models, write and check recipes.

Entry points: the console script ``slimkit`` (``slimkit.cli:main``) and ``python -m slimkit``. The
command imports no framework itself; a model file's adapter loads its framework when it is read.
"""

from __future__ import annotations

import os
from typing import Sequence

import click

from slimkit import __version__
from slimkit.cli.errors import EXIT_HELP

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT, epilog=EXIT_HELP)
@click.version_option(version=__version__, prog_name="slimkit", message="%(prog)s %(version)s")
def cli() -> None:
    """Prune, quantize and distill Keras and PyTorch models with one recipe; deploy through ONNX.

    \b
      slimkit recipe init --method magnitude > recipe.yaml
      slimkit compress --model model.keras --recipe recipe.yaml --data train.npz --out out/
      slimkit inspect model.keras
      slimkit bench out/model.onnx model.onnx

    Run `slimkit COMMAND --help` for a command's options.
    """


def _register() -> None:
    from slimkit.cli.bench import bench
    from slimkit.cli.compress import compress
    from slimkit.cli.export import export
    from slimkit.cli.inspect import inspect
    from slimkit.cli.recipe import recipe

    for command in (compress, inspect, export, bench, recipe):
        cli.add_command(command)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the ``slimkit`` command (``argv``: the arguments, default ``sys.argv[1:]``); exits the process."""
    # TensorFlow reads these when first imported, which happens only when a Keras file is read
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    cli.main(args=list(argv) if argv is not None else None, prog_name="slimkit")
