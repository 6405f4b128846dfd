"""Optimizers written once: registered update rules that every adapter's driver runs.

``fine_tune.optimizer`` names one (``sgd``, ``adam``, ``adamw``, ``rmsprop``) with its options;
:func:`make_rule` builds it, and :class:`NumpyOptimizer` runs it over numpy arrays (the reference
the adapters' drivers are tested against, and the test fake's optimizer).
"""

from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np

from slimkit.ops import NUMPY_OPS
from slimkit.optim.base import OPTIMIZERS, UpdateRule, make_rule


class NumpyOptimizer:
    """Runs an :class:`UpdateRule` over float32 numpy arrays, updated in place.

    State is kept per key (a parameter's name), created at the key's first step; a key whose array
    changed shape starts again from zero state.
    """

    def __init__(self, rule: UpdateRule, learning_rate: float) -> None:
        self.rule = rule
        self.learning_rate = learning_rate
        self._slots: dict[Hashable, dict[str, np.ndarray]] = {}
        self._steps: dict[Hashable, int] = {}

    def step(self, params: Mapping[Hashable, np.ndarray], grads: Mapping[Hashable, np.ndarray]) -> None:
        """One update of ``params[key]`` from ``grads[key]`` for every key of ``grads``."""
        for key, grad in grads.items():
            param = params[key]
            slots = self._slots.get(key)
            if slots is None or any(s.shape != param.shape for s in slots.values()):
                slots = self._slots[key] = {s: np.zeros_like(param) for s in self.rule.slot_names()}
                self._steps[key] = 0
            self._steps[key] += 1
            self.rule.update(NUMPY_OPS, param, np.asarray(grad, param.dtype), slots, self._steps[key],
                             self.learning_rate)


__all__ = ["OPTIMIZERS", "NumpyOptimizer", "UpdateRule", "make_rule"]
