"""How slimkit shows its work: the ``slimkit`` logger and progress display.

Algorithms never print. They open a :class:`Task` (``progress.task(label, total)``), advance it with
fields (loss, sparsity, best trial, ...) and give it readable lines (one per epoch, quarter of the
calibration samples, trial); messages outside a task go through :func:`info`. Every line is a
``logging`` record of the ``slimkit`` logger, so the standard logging machinery decides what is shown.

The display is this module's only output. On a terminal (``stderr`` is a TTY, or a console set with
:func:`set_console`) tasks are ``rich`` progress bars and a task's own lines stay off the screen (the bar
shows them); elsewhere (CI logs, files, pipes) there are no bars and every line is written as
``[slimkit] ...``, as readable as before. ``verbose=False`` in ``compress``/``sensitivity`` turns one
call's tasks and lines off; :func:`set_verbosity` (or the logger's level) turns all of them off.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Any, Callable, Iterator

from slimkit.adapter import TrainHooks
from slimkit.errors import RecipeError
from slimkit.native_logs import stderr_is_terminal

#: The library's logger; slimkit's handler writes its records to stderr (see :func:`set_verbosity`).
LOGGER = logging.getLogger("slimkit")

#: Verbosity names -> logger levels.
VERBOSITY = {"quiet": logging.WARNING, "normal": logging.INFO, "debug": logging.DEBUG}

#: The record attribute naming the task a line belongs to (the bar shows it on a terminal).
TASK_ATTRIBUTE = "slimkit_task"


def set_verbosity(level: str) -> None:
    """Sets how much slimkit shows, for every later call.

    Args:
        level: ``"quiet"`` (warnings only: no bars, no progress lines), ``"normal"`` (the default:
            progress bars on a terminal, progress lines elsewhere) or ``"debug"`` (also debug records:
            stage timings, export details). Equivalent to setting the ``slimkit`` logger's level to
            WARNING, INFO or DEBUG.

    Raises:
        RecipeError: an unknown level name (a usage error, as a bad recipe value).
    """
    if level not in VERBOSITY:
        raise RecipeError(f"set_verbosity: level must be one of {', '.join(VERBOSITY)}, got {level!r}")
    LOGGER.setLevel(VERBOSITY[level])


def get_verbosity() -> str:
    """The current verbosity name (the nearest at or below the ``slimkit`` logger's effective level)."""
    level = LOGGER.getEffectiveLevel()
    return "debug" if level <= logging.DEBUG else "normal" if level <= logging.INFO else "quiet"


def set_console(console: Any = None) -> None:
    """Where progress bars are drawn: a ``rich.console.Console`` (a notebook's, or one writing to a
    buffer with ``force_terminal=True`` in tests), or None for stderr (bars only when it is a terminal)."""
    _DISPLAY.console = console


def info(message: str, enabled: bool = True) -> None:
    """A line outside any task (a summary, a decision), logged at INFO; shown on terminals too."""
    if enabled:
        LOGGER.info(message)


def debug(message: str) -> None:
    """A detail for ``set_verbosity("debug")`` (stage timings, export details)."""
    LOGGER.debug(message)


class Task:
    """One piece of long work with a known amount (steps, samples, trials): a bar on a terminal,
    lines elsewhere. A disabled task does nothing."""

    def __init__(self, label: str, total: float | None, enabled: bool, fields: dict[str, Any]) -> None:
        self.label = label
        self.total = total
        self.completed = 0.0
        self.fields = dict(fields)
        self.enabled = enabled and LOGGER.isEnabledFor(logging.INFO)
        self.start = time.perf_counter()
        self._bar: Any = None
        self._open = False
        if self.enabled:
            self._open = True
            self._bar = _DISPLAY.add(self)

    @property
    def shown(self) -> bool:
        """True when a bar shows this task (fields are worth computing at every step)."""
        return self._bar is not None

    @property
    def elapsed(self) -> float:
        """Seconds since the task started."""
        return time.perf_counter() - self.start

    def advance(self, amount: float = 1, **fields: Any) -> None:
        """Moves the task on by ``amount`` and updates the named fields."""
        self.update(self.completed + amount, **fields)

    def update(self, completed: float | None = None, **fields: Any) -> None:
        """Sets how much is done and the named fields."""
        if completed is not None:
            self.completed = completed if self.total is None else min(float(completed), float(self.total))
        self.fields.update(fields)
        if self._bar is not None:
            _DISPLAY.refresh(self)

    def line(self, message: str) -> None:
        """A readable line about this task (an epoch, a quarter, a trial): written where no bar shows
        the task, and logged at INFO with ``record.slimkit_task`` set to the task's label."""
        if self.enabled:
            LOGGER.info(message, extra={TASK_ATTRIBUTE: self.label})

    def finish(self, **fields: Any) -> None:
        """Ends the task (later calls do nothing); a bar of a task others run inside stays on screen."""
        if self._open:
            self.update(**fields)
            self._open = False
            _DISPLAY.remove(self)

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()


def task(label: str, total: float | None = None, enabled: bool = True, **fields: Any) -> Task:
    """Starts a task: ``with progress.task("calibration", 512) as t: ... t.advance(64)``.

    Args:
        label: what runs ("stage 1/2 prune:magnitude", "calibration (minmax)").
        total: the amount of work (steps, samples, trials), None when unknown.
        enabled: False turns the task and its lines off (a call's ``verbose=False``).
        fields: named values shown beside the bar (``loss=0.31``, ``best="#3 0.97"``).
    """
    return Task(label, total, enabled, fields)


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Around a public entry point: tasks an exception left open inside are finished on the way out,
    so no bar keeps running after ``compress`` raised."""
    before = _DISPLAY.open_count()
    try:
        yield
    finally:
        _DISPLAY.close_after(before)


class ProgressPrinter(TrainHooks):
    """Fine-tuning progress as training hooks: a bar over the optimizer steps with the last loss and
    ``status`` (sparsity, say), and one line per epoch: stage, epoch, loss and metrics, status, time."""

    def __init__(self, label: str, epochs: int, status: Callable[[], str] | None = None,
                 enabled: bool = True) -> None:
        self.label = label
        self.epochs = epochs
        self.status = status
        self.enabled = enabled
        self.task: Task | None = None

    def begin(self, total_steps: int) -> None:
        self.task = task(self.label, total_steps, self.enabled, epoch=f"1/{self.epochs}")
        self.task.line(f"{self.label}: fine-tuning {self.epochs} epochs, {total_steps} steps")

    def step_end(self, step: int) -> None:
        if self.task is not None and self.task.shown:
            self.task.update(step, **({"status": self.status()} if self.status else {}))

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.task is None:
            return
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        extra = f"  {self.status()}" if self.status else ""
        self.task.update(epoch=f"{min(epoch + 1, self.epochs)}/{self.epochs}", **logs)
        self.task.line(f"{self.label}: epoch {epoch}/{self.epochs}  {metrics}{extra}  ({self.task.elapsed:.1f}s)")

    def end(self) -> None:
        if self.task is not None:
            self.task.finish(epoch=f"{self.epochs}/{self.epochs}")


# --------------------------------------------------------------------------------------------- display
def _field_text(fields: dict[str, Any]) -> str:
    """``loss 0.3124  sparsity 0.500``: floats to 4 significant digits, ``status`` as it is."""
    parts = []
    for key, value in fields.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(text if key == "status" else f"{key} {text}")
    return "  ".join(parts)


class _Display:
    """The rich bars of the open tasks (one live display while any is open) and the handler's target.

    The first task opened while none is open decides: bars when the console is a terminal, lines
    otherwise. Tasks opened inside it (a trial's calibration inside tuning) add bars that go away when
    they finish; the outermost one stays on screen when the live display stops."""

    def __init__(self) -> None:
        self.console: Any = None
        self.lock = threading.RLock()
        self.progress: Any = None
        self.open: list[Task] = []

    def add(self, item: Task) -> Any:
        with self.lock:
            self.open.append(item)
            if len(self.open) == 1:
                self.progress = self._start()
            if self.progress is None:
                return None
            return self.progress.add_task(item.label, total=item.total, completed=item.completed,
                                          status=_field_text(item.fields))

    def refresh(self, item: Task) -> None:
        with self.lock:
            if self.progress is not None and item._bar is not None:
                self.progress.update(item._bar, completed=item.completed, status=_field_text(item.fields))

    def remove(self, item: Task) -> None:
        with self.lock:
            if item in self.open:
                self.open.remove(item)
            if self.progress is not None and item._bar is not None and self.open:
                self.progress.remove_task(item._bar)  # an inner task: its bar goes
            if not self.open and self.progress is not None:
                progress, self.progress = self.progress, None
                progress.stop()

    def open_count(self) -> int:
        with self.lock:
            return len(self.open)

    def close_after(self, count: int) -> None:
        while True:
            with self.lock:
                if len(self.open) <= count:
                    return
                last = self.open[-1]
            last.finish()

    def write(self, text: str, task_line: bool) -> None:
        """A formatted record: above the bars while they run (a task's own line is left to its bar),
        else a plain line on stderr."""
        with self.lock:
            if self.progress is not None:
                if not task_line:
                    self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
                return
        stream = sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def _start(self) -> Any:
        """A started rich Progress when the console is a terminal, else None (lines)."""
        console = self.console
        if console is None and not stderr_is_terminal():
            return None
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)
        except ImportError:  # pragma: no cover - rich is a dependency; lines are a safe fallback
            return None
        if console is None:  # a terminal behind slimkit's native-log filter is still one
            console = Console(file=sys.stderr, force_terminal=True)
        if not console.is_terminal or console.is_dumb_terminal:
            return None
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console,
                            refresh_per_second=8)
        progress.start()
        return progress


class _Handler(logging.Handler):
    """slimkit's own handler: ``[slimkit] message`` lines to stderr, or above the bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            prefix = "[slimkit] " if record.levelno <= logging.INFO else f"[slimkit] {record.levelname.lower()}: "
            _DISPLAY.write(prefix + message, getattr(record, TASK_ATTRIBUTE, None) is not None)
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler reports, never raises
            self.handleError(record)


_DISPLAY = _Display()


def _install() -> None:
    """slimkit's handler on its logger (once, also across reloads); records do not propagate to the root
    logger by default, so an application's own logging configuration shows nothing twice."""
    if not any(type(h).__name__ == "_Handler" for h in LOGGER.handlers):
        LOGGER.addHandler(_Handler())
        LOGGER.propagate = False
    if LOGGER.level == logging.NOTSET:
        LOGGER.setLevel(logging.INFO)


_install()
