"""The pieces of PyTorch fine-tuning a user can reuse: optimizer, loss, and the per-step callback."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn
import torch.nn.functional as F

from slimkit.errors import DataError
from slimkit.recipe import FineTune

from slimkit.adapters.torch.optimizer import RuleOptimizer


def make_optimizer(settings: FineTune, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params``: slimkit's update rule, the same code Keras runs."""
    return RuleOptimizer(params, settings.rule(), settings.learning_rate)


#: Keras' backend epsilon: probabilities are clipped to [EPS, 1 - EPS] before their logarithm.
EPS = 1e-7


def _class_last(out: torch.Tensor) -> torch.Tensor:
    """Scores with the class axis last (slimkit's label convention) as (samples, classes)."""
    return out.reshape(-1, out.shape[-1])


def make_loss(settings: FineTune) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], bool]:
    """The recipe's loss as a callable, and whether it is a classification loss.

    The formulas are Keras' (``keras.losses``), so twins compute the same value: classes on the
    last axis, the mean over every sample (and position), probabilities clipped to ``[1e-7,
    1 - 1e-7]``; categorical probabilities are renormalised to sum to 1 first. Labels come in
    :func:`slimkit.labels.prepare_labels`'s form.
    """
    if settings.loss == "mse":
        return nn.MSELoss(), False
    if settings.loss == "binary_crossentropy":
        if settings.from_logits:
            return nn.BCEWithLogitsLoss(), False

        def binary(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            p = out.clamp(EPS, 1 - EPS)
            return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()

        return binary, False
    if settings.loss == "sparse_categorical_crossentropy":
        if settings.from_logits:
            return (lambda out, y: F.cross_entropy(_class_last(out), y.reshape(-1))), True
        # as Keras: the clipped probabilities' logarithms act as logits (softmax renormalises them)
        return (lambda out, y: F.cross_entropy(torch.log(_class_last(out).clamp(EPS, 1 - EPS)), y.reshape(-1))), True
    if settings.from_logits:
        return (lambda out, y: F.cross_entropy(_class_last(out), _class_last(y))), True

    def categorical(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = (out / out.sum(-1, keepdim=True)).clamp(EPS, 1 - EPS)
        return -(y * torch.log(p)).sum(-1).mean()

    return categorical, True


def _trained_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters, and the running statistics of batch norms: what training moves. Other buffers are
    left out: a fake-quant site keeps NaN in its range until it has seen data."""
    stats = [(f"{name}.{key}" if name else key, t) for name, module in model.named_modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm)
             for key, t in module.named_buffers(recurse=False)]
    return [*model.named_parameters(), *stats]


def check_finite_weights(model: nn.Module, when: str) -> None:
    """Raises DataError naming the layer and weight when training left NaN or infinite values in a
    parameter or batch-norm statistic (a diverged run); ``when`` says at which point (``after epoch 2``).

    Raises:
        DataError: a floating parameter or running statistic holds a non-finite value.
    """
    with torch.no_grad():
        for name, tensor in _trained_tensors(model):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                # fc1.parametrizations.weight.original is fc1's weight under a mask or fake-quant
                layer, _, attr = name.replace(".parametrizations.", ".").removesuffix(".original").rpartition(".")
                raise DataError(
                    f"train_data: fine-tuning produced non-finite weights {when}: layer {layer or '(model)'!r} "
                    f"{attr} holds {bad} NaN or infinite value(s) of {tensor.numel()}; lower "
                    "fine_tune.learning_rate, or check train_data for extreme values"
                )


class BiasedBatchNormStatistics:
    """While active, batch norms update their running variance with the *biased* batch variance.

    PyTorch's batch norm folds ``n / (n - 1)`` (Bessel's correction) into the running variance,
    Keras' does not; slimkit's loops document Keras' rule so that twins end with equal statistics.
    A forward hook measures the difference, ``momentum * biased_var / (n - 1)``, and :meth:`apply`
    (called after ``backward``: autograd still needs the running variance unchanged until then)
    subtracts it. Batch norms with ``momentum=None`` (cumulative averages) or without running
    statistics are left alone.
    """

    def __init__(self, model: nn.Module, skip: Iterable[nn.Module] = ()) -> None:
        self._model = model
        self._skip = {id(m) for m in skip}  # batch norms that update their statistics by slimkit's rule already
        self._handles: list[Any] = []
        self._pending: list[tuple[nn.Module, torch.Tensor]] = []

    def __enter__(self) -> "BiasedBatchNormStatistics":
        for module in self._model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats \
                    and module.momentum is not None and id(module) not in self._skip:
                self._handles.append(module.register_forward_hook(self._measure))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()

    def _measure(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not module.training:
            return
        x = inputs[0]
        n = x.numel() // x.shape[1]
        if n > 1:
            with torch.no_grad():
                biased = x.detach().var(dim=[d for d in range(x.dim()) if d != 1], unbiased=False)
                self._pending.append((module, module.momentum * biased / (n - 1)))

    def apply(self) -> None:
        """Corrects the running variances updated since the last call."""
        with torch.no_grad():
            for module, delta in self._pending:
                module.running_var.sub_(delta)
        self._pending.clear()
