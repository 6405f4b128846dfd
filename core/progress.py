"""Progress lines for long work (fine-tuning), printed to stderr as each epoch ends."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from slimkit.adapter import TrainHooks


class ProgressPrinter(TrainHooks):
    """Prints one line per epoch: stage, epoch, loss and metrics, extra status, elapsed time."""

    def __init__(
        self,
        label: str,
        epochs: int,
        status: Callable[[], str] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.epochs = epochs
        self.status = status
        self.stream = stream
        self._start = 0.0

    def begin(self, total_steps: int) -> None:
        self._start = time.perf_counter()
        self._write(f"[slimkit] {self.label}: fine-tuning {self.epochs} epochs, {total_steps} steps")

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        extra = f"  {self.status()}" if self.status else ""
        elapsed = time.perf_counter() - self._start
        self._write(f"[slimkit] {self.label}: epoch {epoch}/{self.epochs}  {metrics}{extra}  ({elapsed:.1f}s)")

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stderr
        print(line, file=stream, flush=True)
