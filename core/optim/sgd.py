"""SGD with momentum, as ``torch.optim.SGD`` computes it.

``g = grad + weight_decay * p``; with momentum, ``b = momentum * b + g`` (``b = g`` at the first
step, which a zero buffer gives too) and ``g = g + momentum * b`` (nesterov) or ``g = b``;
``p = p - lr * g``. With a constant learning rate this equals Keras' ``SGD`` (whose buffer holds
``-lr * b``), so Keras users lose nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimkit.optim.base import OPTIMIZERS, UpdateRule
from slimkit.ops import TensorOps
from slimkit.plugins import bounded


@dataclass(frozen=True)
class SGDOptions:
    """``momentum`` 0.9 by default (slimkit's documented default since 0.1); ``weight_decay`` is L2
    added to the gradient."""

    momentum: float = bounded(0.9, 0.0, 1.0, hi_open=True)
    nesterov: bool = False
    weight_decay: float = bounded(0.0, 0.0)


@OPTIMIZERS.register("sgd", SGDOptions)
class SGD(UpdateRule):
    name = "sgd"

    def slot_names(self) -> tuple[str, ...]:
        return ("momentum",) if self.options.momentum > 0 else ()

    def update(self, ops: TensorOps, param: Any, grad: Any, slots: dict[str, Any], step: Any, lr: Any) -> None:
        o = self.options
        g = grad + o.weight_decay * param if o.weight_decay else grad
        if o.momentum > 0:
            buf = o.momentum * slots["momentum"] + g
            ops.assign(slots["momentum"], buf)
            g = g + o.momentum * buf if o.nesterov else buf
        ops.assign(param, param - lr * g)
