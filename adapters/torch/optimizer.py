"""A ``torch.optim.Optimizer`` that runs slimkit's update rules (``slimkit.optim``).

The rules are PyTorch's formulas written once in core; running the same code in both frameworks
(rather than ``torch.optim.Adam`` here and a copy in Keras) is what keeps twins' training equal.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from slimkit.optim import UpdateRule

from slimkit.adapters.torch.ops import TORCH_OPS


class RuleOptimizer(torch.optim.Optimizer):
    """Applies ``rule`` to every parameter that has a gradient; state is per parameter."""

    def __init__(self, params: Iterable[torch.nn.Parameter], rule: UpdateRule, lr: float) -> None:
        super().__init__(params, {"lr": lr})
        self.rule = rule

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    grad = p.grad.to_dense()
                else:
                    grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    for slot in self.rule.slot_names():
                        state[slot] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                slots = {s: state[s] for s in self.rule.slot_names()}
                self.rule.update(TORCH_OPS, p, grad, slots, state["step"], group["lr"])
        return loss
