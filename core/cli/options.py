"""Options several commands share: how a model file is read, and where sample inputs come from."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

TRUST_HELP = ("Also read model files whose loading can run code stored in them: torch.export .pt2 programs "
              "(torch.export.load honours the file's own pickle settings) and whole pickled PyTorch models. "
              "Pass it only for files from authors you trust; without it slimkit never unpickles anything "
              "but tensors (torch.load(weights_only=True)).")


def model_file_options(fn: F) -> F:
    """``--factory`` and ``--trust-model-file``."""
    fn = click.option("--trust-model-file", "trust", is_flag=True, help=TRUST_HELP)(fn)
    fn = click.option("--factory", metavar="MODULE:CALLABLE",
                      help="PyTorch: a callable building the architecture (as it was before compression) that a "
                           "state dict (.pt/.pth/.bin/.safetensors) or a folder slimkit saved is loaded onto, as "
                           "package.models:resnet50. The current folder is importable.")(fn)
    return fn


def input_shape_option(fn: F) -> F:
    """``--input-shape``: a random sample when no data is given."""
    return click.option("--input-shape", metavar="DIMS",
                        help="Shape of one input without the batch axis, as 3,224,224 (PyTorch) or 224,224,3 "
                             "(Keras), for a random sample when --data is not given (Keras models with a fixed "
                             "input shape need neither).")(fn)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"3,224,224"`` -> ``(3, 224, 224)``.

    Raises:
        click.BadParameter: not a comma-separated list of positive integers.
    """
    if text is None:
        return None
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise click.BadParameter(f"{text!r}: expected positive integers separated by commas, as 3,224,224",
                                 param_hint="--input-shape")
    return dims
