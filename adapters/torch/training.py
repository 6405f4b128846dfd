"""The pieces of PyTorch fine-tuning a user can reuse: optimizer, loss, and the per-step callback."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from slimkit.adapter import TrainHooks
from slimkit.recipe import FineTune


def make_optimizer(settings: FineTune, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params``."""
    lr = settings.learning_rate
    factories: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adam": lambda: torch.optim.Adam(params, lr=lr),
        "adamw": lambda: torch.optim.AdamW(params, lr=lr),
        "sgd": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9),
        "rmsprop": lambda: torch.optim.RMSprop(params, lr=lr),
    }
    return factories[settings.optimizer]()


def make_loss(settings: FineTune) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], bool]:
    """The recipe's loss as a callable, and whether it is a classification loss."""
    if settings.loss == "mse":
        return nn.MSELoss(), False
    if settings.loss == "binary_crossentropy":
        loss = nn.BCEWithLogitsLoss() if settings.from_logits else nn.BCELoss()
        return (lambda out, y: loss(out, y.float().reshape(out.shape))), False
    if settings.from_logits:
        # CrossEntropyLoss takes class ids (sparse) or class probabilities (categorical) as targets.
        return nn.CrossEntropyLoss(), True
    nll = nn.NLLLoss()
    if settings.loss == "sparse_categorical_crossentropy":
        return (lambda out, y: nll(torch.log(out.clamp_min(1e-7)), y)), True
    return (lambda out, y: -(y * torch.log(out.clamp_min(1e-7))).sum(-1).mean()), True


class StepCallback:
    """Drives slimkit's training hooks from any PyTorch training loop.

    Use it in your own loop (``compress(..., fit_fn=my_fit)`` passes one to ``my_fit(model, cb)``)::

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

    def close(self) -> None:
        """Ends the schedule (final masks are applied); later calls do nothing."""
        if not self._closed and self._total is not None:
            self._closed = True
            self._hooks.end()
