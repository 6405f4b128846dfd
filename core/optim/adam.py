"""Adam and AdamW, as ``torch.optim.Adam`` and ``torch.optim.AdamW`` compute them.

``m = b1 * m + (1 - b1) * g``, ``v = b2 * v + (1 - b2) * g^2``,
``p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + epsilon)``. Adam's ``weight_decay``
is L2 added to the gradient; AdamW's is decoupled: ``p = p * (1 - lr * weight_decay)`` first.
Keras' Adam differs: it adds epsilon to the *uncorrected* ``sqrt(v)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimkit.optim.base import OPTIMIZERS, UpdateRule
from slimkit.ops import TensorOps
from slimkit.plugins import bounded


@dataclass(frozen=True)
class AdamOptions:
    """``betas`` are (b1, b2); ``weight_decay`` is L2 added to the gradient."""

    betas: tuple[float, float] = bounded((0.9, 0.999), 0.0, 1.0, hi_open=True)
    epsilon: float = bounded(1e-8, 0.0, lo_open=True)
    weight_decay: float = bounded(0.0, 0.0)


@dataclass(frozen=True)
class AdamWOptions:
    """As Adam, but ``weight_decay`` (0.01 by default) shrinks the weights directly."""

    betas: tuple[float, float] = bounded((0.9, 0.999), 0.0, 1.0, hi_open=True)
    epsilon: float = bounded(1e-8, 0.0, lo_open=True)
    weight_decay: float = bounded(0.01, 0.0)


class _AdamRule(UpdateRule):
    decoupled = False

    def slot_names(self) -> tuple[str, ...]:
        return ("m", "v")

    def update(self, ops: TensorOps, param: Any, grad: Any, slots: dict[str, Any], step: Any, lr: Any) -> None:
        o = self.options
        b1, b2 = o.betas
        if o.weight_decay and self.decoupled:
            param_now = param * (1 - lr * o.weight_decay)
            ops.assign(param, param_now)
        g = grad + o.weight_decay * param if o.weight_decay and not self.decoupled else grad
        m = b1 * slots["m"] + (1 - b1) * g
        v = b2 * slots["v"] + (1 - b2) * (g * g)
        ops.assign(slots["m"], m)
        ops.assign(slots["v"], v)
        correction1 = 1 - b1 ** step
        correction2 = 1 - b2 ** step
        denom = ops.sqrt(v) / correction2 ** 0.5 + o.epsilon
        ops.assign(param, param - (lr / correction1) * (m / denom))


@OPTIMIZERS.register("adam", AdamOptions)
class Adam(_AdamRule):
    name = "adam"


@OPTIMIZERS.register("adamw", AdamWOptions)
class AdamW(_AdamRule):
    name = "adamw"
    decoupled = True
