"""Training hooks: how algorithms follow a fine-tuning loop, whichever loop runs it."""

from __future__ import annotations

from typing import Any, Callable

class TrainHooks:
    """Callbacks an algorithm receives from the adapter's training loop.

    The adapter calls :meth:`begin` once with the total number of optimizer steps, :meth:`step_end`
    after every optimizer step (steps count from 1), :meth:`epoch_end` after every epoch, and
    :meth:`end` once when training finishes. Algorithms override what they need.
    """

    def begin(self, total_steps: int) -> None:
        """Called before the first step."""

    def step_end(self, step: int) -> None:
        """Called after optimizer step ``step`` (1-based)."""

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Called after each epoch (1-based) with the epoch's mean loss and metrics."""

    def end(self) -> None:
        """Called after the last step."""


class HookChain(TrainHooks):
    """Several hooks called in order (a pruner plus a progress printer, say)."""

    def __init__(self, *hooks: TrainHooks) -> None:
        self._hooks = hooks

    def begin(self, total_steps: int) -> None:
        for h in self._hooks:
            h.begin(total_steps)

    def step_end(self, step: int) -> None:
        for h in self._hooks:
            h.step_end(step)

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for h in self._hooks:
            h.epoch_end(epoch, logs)

    def end(self) -> None:
        for h in self._hooks:
            h.end()


class StepCallback:
    """Drives :class:`TrainHooks` from any training loop that can call a function per step.

    Adapters whose framework has no callback system of its own (PyTorch) hand this to a user's
    ``fit_fn``. Use it in your own loop (``compress(..., fit_fn=my_fit)`` calls ``my_fit(model, cb)``)::

        cb.begin(total_steps)      # optional if compress() could count steps from train_data
        for epoch in range(epochs):
            for x, y in loader:
                ...; optimizer.step()
                cb.step()          # after every optimizer step: masks are updated here
            cb.epoch_end(epoch + 1, {"loss": epoch_loss})   # optional, for progress lines
        cb.close()                 # optional: compress() calls it after my_fit returns
    """

    def __init__(self, hooks: TrainHooks) -> None:
        self._hooks = hooks
        self._step = 0
        self._total: int | None = None
        self._closed = False

    def begin(self, total_steps: int) -> None:
        """Starts the schedule; ``total_steps`` is the number of optimizer steps that will run."""
        if self._total is None:
            self._total = int(total_steps)
            self._hooks.begin(self._total)

    def step(self) -> None:
        """Call after every ``optimizer.step()``."""
        if self._total is None:
            raise RuntimeError("slimkit StepCallback: call begin(total_steps) before the first step()")
        self._step += 1
        self._hooks.step_end(self._step)

    def epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Optional: reports an epoch's metrics to progress output."""
        self._hooks.epoch_end(epoch, {k: float(v) for k, v in (logs or {}).items()})

    def run_user_fit(self, fit_fn: "FitFn", model: Any, total_steps: int | None) -> None:
        """Runs a user's ``fit_fn(model, self)``, starting the schedule first when the step count is
        known and closing it afterwards."""
        if total_steps is not None:
            self.begin(total_steps)
        fit_fn(model, self)
        self.close()

    def close(self) -> None:
        """Ends the schedule (final masks are applied); later calls do nothing."""
        if not self._closed and self._total is not None:
            self._closed = True
            self._hooks.end()


#: A user-supplied training function: ``fit_fn(model, callback)``. ``callback`` is framework-native: a
#: ``keras.callbacks.Callback`` to pass to ``model.fit(callbacks=[...])``, or for PyTorch a
#: :class:`StepCallback` whose ``.step()`` must be called after every ``optimizer.step()``.
FitFn = Callable[[Any, Any], None]
