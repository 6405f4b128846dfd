"""Network slimming's penalty (Liu et al., 2017): L1 on the batch-norm scales of the channel groups
being pruned, so that channels the network can spare end with scales near zero before they are chosen
(criterion ``bn_scale``).

The penalty ``bn_l1 * sum |gamma|`` is applied as a proximal step after every optimizer step, not
added to the loss: ``gamma <- sign(gamma) * max(|gamma| - lr * bn_l1, 0)`` (the proximal operator of
the L1 term for a step of size ``lr``, the stage's learning rate). Why:

* the training loops stay as they are (the penalty is a training hook like a pruning schedule), and
  the same step runs on every framework;
* a scale the penalty outweighs lands on exactly zero and stays there while the loss does not pull it
  back, where the subgradient ``bn_l1 * sign(gamma)`` would make it oscillate around zero;
* it is decoupled from the optimizer, as AdamW's weight decay is: each step shrinks every scale by
  ``lr * bn_l1`` whatever the optimizer. Added to the loss under Adam, the term's gradient would be
  divided by Adam's running gradient scale (``sqrt(v)``), so its strength would depend on how large the
  loss gradients of each scale happen to be. With SGD the two agree to first order, so the paper's
  ``lambda`` (1e-5..1e-4 at lr 0.1 over ~60k steps) carries over; under Adam, whose own steps are about
  ``lr`` each, values near 0.3..1.5 compete with the loss (larger ones outweigh it on every scale).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from slimkit.adapter import LayerInfo, ModelAdapter
from slimkit.errors import SlimkitWarning
from slimkit.graph import Group
from slimkit.pruning.channel import ChannelChoice
from slimkit.pruning.criteria.base import member_slices

#: Total shrink (steps x lr x bn_l1) below which the penalty is warned to have next to no effect.
WEAK_SHRINK = 0.01


def soft_threshold(values: np.ndarray, amount: float) -> np.ndarray:
    """``sign(v) * max(|v| - amount, 0)``: the proximal step of ``amount / step * |v|``."""
    return (np.sign(values) * np.maximum(np.abs(values) - amount, 0.0)).astype(values.dtype, copy=False)


def group_scales(adapter: ModelAdapter, group: Group) -> np.ndarray | None:
    """Mean |gamma| per channel of ``group`` over its batch norms (None when it has none)."""
    rows = []
    for member in group.members:
        if member.role != "channel":
            continue
        weights = adapter.get_weights(member.layer)
        if "gamma" in weights and "kernel" not in weights:
            rows.append(np.abs(member_slices(member, weights)[:, 0]))
    return np.mean(rows, axis=0) if rows else None


@dataclass(frozen=True)
class ScalesAtChoice:
    """Batch-norm scales (mean |gamma| per channel over a group's batch norms) when the channels were
    chosen at the target, after step ``step``: of the removed channels and of the kept ones, over every
    group with a batch norm."""

    step: int
    removed: np.ndarray
    kept: np.ndarray


def scales_at_choice(adapter: ModelAdapter, choices: list[ChannelChoice], step: int) -> ScalesAtChoice | None:
    """The scales of the channels ``choices`` remove and keep (None when no group has a batch norm)."""
    removed, kept = [], []
    for choice in choices:
        scales = group_scales(adapter, choice.group)
        if scales is not None:
            removed.append(scales[choice.removed])
            kept.append(scales[choice.keep])
    return ScalesAtChoice(step, np.concatenate(removed), np.concatenate(kept)) if removed else None


class BNScaleL1:
    """The proximal L1 step on the scales of the batch norms that carry the given groups' channels.

    Only those entries are touched (a batch norm after a concatenation may carry channels of a group
    left whole): a few small vectors per step.
    """

    def __init__(self, adapter: ModelAdapter, groups: list[Group], infos: dict[str, LayerInfo], strength: float,
                 learning_rate: float, field: str) -> None:
        self.adapter, self.strength, self.field = adapter, strength, field
        self.amount = float(learning_rate) * float(strength)
        entries: dict[str, list[np.ndarray]] = {}
        self.bare: list[Group] = []  # groups without a batch norm: nothing to penalise
        for group in groups:
            found = False
            for member in group.members:
                shapes = infos[member.layer].shapes
                if member.role == "channel" and "gamma" in shapes and "kernel" not in shapes:
                    index = np.arange(shapes["gamma"][0]) if member.index is None else member.index.ravel()
                    entries.setdefault(member.layer, []).append(index)
                    found = True
            if not found:
                self.bare.append(group)
        self.entries = {name: np.unique(np.concatenate(parts)) for name, parts in entries.items()}

    def begin(self, steps: int) -> None:
        """Warns when ``steps`` steps of the penalty cannot move a scale by even :data:`WEAK_SHRINK`."""
        total = steps * self.amount
        if self.entries and total < WEAK_SHRINK:
            warnings.warn(
                f"{self.field}: over the {steps} steps before channels are chosen, bn_l1 {self.strength:g} at "
                f"learning rate {self.amount / self.strength:g} shrinks a batch-norm scale by at most {total:.2g} "
                "(steps x learning_rate x bn_l1), next to nothing for scales near 1; raise bn_l1 (the step is "
                "decoupled from the optimizer: under adam, values near 0.3..1.5 compete with the loss)",
                SlimkitWarning, stacklevel=4)

    def step(self) -> None:
        """One proximal step on every penalised scale."""
        for name, index in self.entries.items():
            gamma = self.adapter.get_weights(name)["gamma"]
            gamma[index] = soft_threshold(gamma[index], self.amount)
            self.adapter.set_weights(name, {"gamma": gamma})

