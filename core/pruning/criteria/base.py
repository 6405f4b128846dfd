"""What a channel-importance criterion is, the data it may use, and the registry of criteria.

A criterion scores every channel of a dependency group (higher = more important, kept) from the
weights of all group members in canonical (out, in, *spatial) order, so twins in two frameworks
score alike. Data-driven criteria declare what they need: gradients of the training loss
(``needs_gradients``) or per-channel statistics of the producers' outputs after ReLU
(``needs_activations``); the channel-pruning stage measures only what the chosen criterion needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from slimkit.errors import PluginError
from slimkit.graph import Group, Member
from slimkit.plugins import Registry

Weights = dict[str, dict[str, np.ndarray]]  # layer -> neutral name -> canonical array
Stats = dict[str, tuple[np.ndarray, np.ndarray, int]]  # producer -> (sum, zero count, values per channel)


@dataclass(frozen=True)
class CriterionData:
    """What a criterion may read.

    Attributes:
        weights: every group member's weights (canonical kernels).
        grads: mean loss gradients in the same layout (criteria with ``needs_gradients``).
        stats: :func:`activation_stats` of the producers' outputs (``needs_activations``).
        rng: a generator seeded by the recipe, for criteria that draw.
    """

    weights: Weights
    grads: Weights | None = None
    stats: Stats | None = None
    rng: np.random.Generator | None = None


class Criterion:
    """One importance criterion; subclasses register with :data:`CRITERIA`."""

    needs_gradients: ClassVar[bool] = False
    needs_activations: ClassVar[bool] = False
    #: Its scores depend on batch-norm scales (directly, or through the activations they scale), so a
    #: penalty on those scales (``regularize: {bn_l1: ...}``) steers the choice.
    sees_bn_scales: ClassVar[bool] = False
    #: Norm order whole attention heads are ranked by (heads have no per-channel data to score).
    head_norm_order: ClassVar[int] = 2

    def __init__(self, options: Any) -> None:
        self.options = options

    def scores(self, group: Group, data: CriterionData) -> np.ndarray:
        """One importance per channel of ``group`` (length ``group.channels``)."""
        raise NotImplementedError


#: name -> criterion class; recipe validation (``prune.criterion``) reads it.
CRITERIA: Registry[type[Criterion]] = Registry("criterion", builtins=(
    "slimkit.pruning.criteria.norms", "slimkit.pruning.criteria.fpgm", "slimkit.pruning.criteria.bn_scale",
    "slimkit.pruning.criteria.taylor", "slimkit.pruning.criteria.activation", "slimkit.pruning.criteria.draw"))


def member_slices(member: Member, weights: dict[str, np.ndarray]) -> np.ndarray:
    """(channels, values) matrix of what one member holds for each group channel."""
    if member.role == "out":
        kernel = weights["kernel"]
        if "recurrent_kernel" in weights:  # a recurrent layer: unit j is row j of every gate block, in both
            rec = weights["recurrent_kernel"]  # matrices (canonical (gates * units, ...)), and recurrent column j
            units = rec.shape[1]
            gates = rec.shape[0] // units
            parts = [m.reshape(gates, units, -1).transpose(1, 0, 2).reshape(units, -1) for m in (kernel, rec)]
            return np.concatenate(parts + [rec.T.reshape(units, -1)], axis=1)
        return kernel.reshape(kernel.shape[0], -1)
    if member.role == "channel":
        if "kernel" in weights:  # depthwise: canonical (C, 1, *spatial)
            rows = weights["kernel"].reshape(weights["kernel"].shape[0], -1)
        elif "gamma" in weights:
            rows = weights["gamma"].reshape(-1, 1)
        else:
            rows = np.ones((len(weights["mean"]), 1), dtype=np.float32)
        # After a concatenation the layer carries several groups: take this group's rows.
        return rows if member.index is None else rows[member.index].reshape(len(member.index), -1)
    kernel = weights["kernel"]  # consumer: the in-features each channel feeds, across all outputs
    cols = np.moveaxis(kernel, 1, 0).reshape(kernel.shape[1], -1)
    return np.stack([cols[idx].ravel() for idx in member.index])


def member_norms(member: Member, weights: dict[str, np.ndarray], order: int) -> np.ndarray:
    """Each group channel's L-``order`` norm over what ``member`` holds for it (as
    ``norm(member_slices(...), axis=1)``, without gathering the slices).

    Kernels are reduced along their own axes in float64 from a C-ordered copy, so the result does not
    depend on the memory layout a framework keeps them in (twins score alike), and no (channels,
    values) gather is made: gathering a consumer's columns was most of a large model's scoring time.
    """
    kernel = weights.get("kernel")
    if kernel is None or member.role == "channel" or "recurrent_kernel" in weights:
        return np.linalg.norm(member_slices(member, weights), ord=order, axis=1)
    # C order whatever the framework's layout, so sums run in one order and twins agree to the bit
    powered = np.abs(kernel, order="C") if order == 1 else np.square(kernel, dtype=np.float64, order="C")
    axis = 0 if member.role == "out" else 1
    per_index = np.sum(powered, axis=tuple(i for i in range(kernel.ndim) if i != axis), dtype=np.float64)
    if member.role != "out":  # a consumer: channel c feeds the input features index[c]
        per_index = per_index[member.index].sum(axis=1)
    return per_index if order == 1 else np.sqrt(per_index)


def norm_scores(group: Group, weights: Weights, order: int) -> np.ndarray:
    """Mean over the group's members of each channel's L-``order`` norm."""
    per_member = [member_norms(m, weights[m.layer], order) for m in group.members]
    return np.mean(per_member, axis=0)


def activation_stats(outputs: dict[str, np.ndarray]) -> Stats:
    """Per-channel (sum after ReLU, count of zeros after ReLU, values per channel) of layer outputs.

    Outputs have channels on axis 1. Stats from several batches add up, so activations never need
    to be held for the whole calibration set.
    """
    stats = {}
    for name, out in outputs.items():
        act = np.maximum(np.moveaxis(out, 1, 0).reshape(out.shape[1], -1), 0.0)
        stats[name] = (act.sum(axis=1, dtype=np.float64), np.sum(act == 0, axis=1), act.shape[1])
    return stats


def criterion_of(name: str, options: Any = None) -> Criterion:
    """The registered criterion ``name`` with ``options`` (its defaults when None)."""
    entry = CRITERIA.get(name)
    return entry.impl(options if options is not None else entry.options())


def group_scores(criterion: str, group: Group, weights: Weights, grads: Weights | None = None,
                 stats: Stats | None = None, rng: np.random.Generator | None = None,
                 options: Any = None) -> np.ndarray:
    """Importance of each channel of ``group`` by the registered ``criterion``, higher is kept.

    Raises:
        PluginError: the criterion returned a wrong number of scores, or non-finite ones.
    """
    scores = np.asarray(criterion_of(criterion, options).scores(group, CriterionData(weights, grads, stats, rng)),
                        dtype=np.float64)
    where = f"criterion {criterion!r} on the channel group of {', '.join(group.producers)}"
    if scores.shape != (group.channels,):
        raise PluginError(f"{where}: got scores of shape {scores.shape}, expected ({group.channels},)")
    if not np.all(np.isfinite(scores)):
        raise PluginError(f"{where}: scores must be finite numbers")
    return scores
