"""The pieces of PyTorch fine-tuning a user can reuse: optimizer, loss, and the per-step callback."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

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
