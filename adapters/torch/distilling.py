"""Distillation in PyTorch's training loop: the objective from core, hinted modules read by forward
hooks, projections trained with the student and dropped afterwards (never attached to the model)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.data import map_inputs
from slimkit.errors import RecipeError

from slimkit.adapters.torch.ops import TORCH_OPS


class Distilling:
    """The objective of one fit: ``loss(task, out, xb, index)`` after each forward pass.

    Args:
        model: the student being trained.
        objective: a :class:`slimkit.distill.objective.DistillObjective`.
        data: the training data (fixed arrays get their teacher targets computed once).
    """

    def __init__(self, model: nn.Module, objective: Any, data: Any) -> None:
        self.objective = objective
        objective.prepare(data)
        modules = dict(model.named_modules())
        for i, name in enumerate(objective.feature_names):
            if name not in modules:
                raise RecipeError(f"{objective.field}.hints[{i}].student: {name!r} is a graph node, not a module of "
                                  f"{type(model).__name__}; hints read module outputs: name a module")
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.projections = [None if h.projection is None else nn.Parameter(torch.from_numpy(h.projection.copy()).to(device))
                            for h in objective.hints]
        self._features: dict[str, torch.Tensor] = {}
        self._handles = [modules[name].register_forward_hook(self._hook(name))
                         for name in dict.fromkeys(objective.feature_names)]

    def _hook(self, name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if name not in self._features and isinstance(output, torch.Tensor):
                self._features[name] = output  # the first call, as layer_outputs reads it
        return hook

    def parameters(self) -> list[nn.Parameter]:
        """The projections, for the optimizer."""
        return [p for p in self.projections if p is not None]

    def loss(self, task: torch.Tensor, out: torch.Tensor, xb: Any, index: np.ndarray | None) -> torch.Tensor:
        """The distillation loss of the batch whose forward pass just ran."""
        x = map_inputs(xb, lambda t: t.detach().cpu().numpy())
        targets = {k: torch.from_numpy(np.ascontiguousarray(v)).to(out.device)
                   for k, v in self.objective.targets(x, index).items()}
        features = [self._features[name] for name in self.objective.feature_names]
        self._features = {}
        return self.objective.loss(TORCH_OPS, task, out, targets, features, self.projections)

    def close(self) -> None:
        """Removes the hooks; the projections' final weights go to the objective (for the report)."""
        self.objective.learned = [None if p is None else p.detach().cpu().numpy().copy() for p in self.projections]
        for handle in self._handles:
            handle.remove()
        self._handles = []


class _SoftGradient(torch.autograd.Function):
    """Identity forward; backward scales the user's gradient by ``1 - alpha`` and adds the soft term's."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, extra: torch.Tensor, keep: float) -> torch.Tensor:
        ctx.keep = keep
        ctx.save_for_backward(extra)
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, None, None]:
        (extra,) = ctx.saved_tensors
        return grad * ctx.keep + extra, None, None


class UserLoopDistilling:
    """Distillation through a user's ``fit_fn``: while it trains, every training-mode forward pass of
    the student computes the teacher's targets on its inputs (per batch: the user's data may augment)
    and returns an output whose gradient is ``(1 - alpha) * (the user's loss gradient) + alpha * (the
    soft term's)``: the user's loss, whatever it is, becomes the distillation loss, provided it is a
    mean over the batch and the output is used once per step. Hints are refused (their projections would
    need the user's optimizer)."""

    def __init__(self, model: nn.Module, objective: Any) -> None:
        objective.check_user_loop()
        self.objective = objective
        self._handle = model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        if not module.training or not torch.is_grad_enabled() or not isinstance(output, torch.Tensor):
            return None
        inputs = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        x = tuple(t.detach().cpu().numpy() for t in inputs)
        target = torch.from_numpy(np.ascontiguousarray(self.objective.targets(x[0] if len(x) == 1 else x)["soft"]))
        with torch.enable_grad():
            probe = output.detach().requires_grad_(True)
            soft = self.objective.soft(TORCH_OPS, probe, target.to(output.device)) * self.objective.alpha
            (extra,) = torch.autograd.grad(soft, probe)
        return _SoftGradient.apply(output, extra, 1.0 - self.objective.alpha)

    def close(self) -> None:
        """Removes the hook."""
        self._handle.remove()
