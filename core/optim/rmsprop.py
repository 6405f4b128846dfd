"""RMSprop, as ``torch.optim.RMSprop`` computes it.

``g = grad + weight_decay * p``, ``v = rho * v + (1 - rho) * g^2``; centered: ``a = rho * a +
(1 - rho) * g`` and ``d = sqrt(v - a^2) + epsilon``, else ``d = sqrt(v) + epsilon``; with momentum
``b = momentum * b + g / d`` and ``p = p - lr * b``, else ``p = p - lr * g / d``. Keras' RMSprop
divides by ``sqrt(v + epsilon)`` instead, and defaults to ``rho`` 0.9.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimkit.optim.base import OPTIMIZERS, UpdateRule
from slimkit.ops import TensorOps
from slimkit.plugins import bounded


@dataclass(frozen=True)
class RMSpropOptions:
    """``rho`` is the decay of the squared-gradient average (PyTorch's ``alpha``)."""

    rho: float = bounded(0.99, 0.0, 1.0, hi_open=True)
    epsilon: float = bounded(1e-8, 0.0, lo_open=True)
    momentum: float = bounded(0.0, 0.0, 1.0, hi_open=True)
    centered: bool = False
    weight_decay: float = bounded(0.0, 0.0)


@OPTIMIZERS.register("rmsprop", RMSpropOptions)
class RMSprop(UpdateRule):
    name = "rmsprop"

    def slot_names(self) -> tuple[str, ...]:
        o = self.options
        return ("v",) + (("mean",) if o.centered else ()) + (("momentum",) if o.momentum > 0 else ())

    def update(self, ops: TensorOps, param: Any, grad: Any, slots: dict[str, Any], step: Any, lr: Any) -> None:
        o = self.options
        g = grad + o.weight_decay * param if o.weight_decay else grad
        v = o.rho * slots["v"] + (1 - o.rho) * (g * g)
        ops.assign(slots["v"], v)
        if o.centered:
            mean = o.rho * slots["mean"] + (1 - o.rho) * g
            ops.assign(slots["mean"], mean)
            denom = ops.sqrt(v - mean * mean) + o.epsilon
        else:
            denom = ops.sqrt(v) + o.epsilon
        if o.momentum > 0:
            buf = o.momentum * slots["momentum"] + g / denom
            ops.assign(slots["momentum"], buf)
            ops.assign(param, param - lr * buf)
        else:
            ops.assign(param, param - lr * (g / denom))
