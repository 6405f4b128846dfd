"""Exit codes of the ``slimkit`` command and the guard that turns errors into one message line.

Every failure slimkit raises on purpose is a :class:`~slimkit.errors.SlimkitError` whose message names
the file, field or layer at fault; the command prints that message (no traceback unless ``--debug``)
and exits with the code of its class.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import traceback
import warnings
from typing import Any, Callable, TypeVar

import click

from slimkit.errors import DataError, ExportError, RecipeError, SlimkitError, SlimkitWarning, UnsupportedModelError
from slimkit.native_logs import filtered_stderr

EXIT_OK = 0
EXIT_FAILURE = 1  # a SlimkitError of no class below (a plugin's), or a bug in slimkit
EXIT_USAGE = 2  # Click's own code for usage errors; recipe errors share it
EXIT_DATA = 3
EXIT_MODEL = 4
EXIT_EXPORT = 5

#: Error class -> exit code, most specific first (NotSupportedYetError is a RecipeError).
EXIT_CODES: tuple[tuple[type[SlimkitError], int], ...] = (
    (RecipeError, EXIT_USAGE),
    (DataError, EXIT_DATA),
    (UnsupportedModelError, EXIT_MODEL),
    (ExportError, EXIT_EXPORT),
)

EXIT_HELP = """\b
Exit codes:
  0  success
  2  usage or recipe error
  3  data error (missing, unreadable, or not fitting the model)
  4  model error (missing, unreadable or unsupported model file)
  5  export or verification error
  1  anything else (the message says what)"""

F = TypeVar("F", bound=Callable[..., Any])


def exit_code(exc: BaseException) -> int:
    """The exit code for ``exc``."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_FAILURE


def debug_option(fn: F) -> F:
    """``--debug``: show tracebacks and every warning (frameworks' included)."""
    return click.option("--debug", is_flag=True, help="Show the traceback of an error, and every warning.")(fn)


def guarded(fn: F) -> F:
    """Runs a command body: SlimkitError -> its message on stderr and its exit code; any other exception
    -> an internal-error line and exit 1. Warnings: slimkit's own print as ``slimkit: warning: ...``
    lines, the frameworks' (and their native log banners) are shown only with ``--debug``."""

    @functools.wraps(fn)
    def run(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            if debug:
                warnings.simplefilter("default")
            else:
                warnings.simplefilter("ignore")
                warnings.simplefilter("default", SlimkitWarning)
            warnings.showwarning = _show_warning
            # frameworks' native banners (TensorFlow's as it loads for a Keras file) stay off the terminal
            quiet_native = contextlib.nullcontext() if debug else filtered_stderr()
            try:
                with quiet_native:
                    return fn(*args, **kwargs)
            except (click.exceptions.Exit, click.ClickException, click.Abort):
                raise
            except KeyboardInterrupt:
                click.echo("slimkit: interrupted", err=True)
                sys.exit(130)
            except SlimkitError as exc:
                if debug:
                    traceback.print_exc()
                click.echo(f"slimkit: error: {exc}", err=True)
                sys.exit(exit_code(exc))
            except Exception as exc:  # a bug (or a framework failing where slimkit does not expect it)
                if debug:
                    traceback.print_exc()
                first = (str(exc).strip().splitlines() or [""])[0]
                click.echo(f"slimkit: internal error: {type(exc).__name__}: {first}"
                           + ("" if debug else " (run with --debug for the traceback)"), err=True)
                sys.exit(EXIT_FAILURE)

    return run  # type: ignore[return-value]


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    if issubclass(category, SlimkitWarning):
        click.echo(f"slimkit: warning: {message}", err=True)
    else:
        click.echo(f"{filename}:{lineno}: {category.__name__}: {message}", err=True)
