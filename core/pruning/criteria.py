"""Channel importance criteria over dependency groups, on numpy.

Each criterion scores every channel of a group (higher = more important) from the weights of all
group members, in canonical (out, in, *spatial) kernel order, so twins in two frameworks score
alike. Data-driven criteria take what the adapter measured: gradients (Taylor) or layer outputs
(APoZ, mean activation).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from slimkit.graph import Group, Member
from slimkit.recipe import CRITERIA

#: Criteria that need data: gradients of the loss, or layer outputs.
NEEDS_GRADIENTS = ("taylor",)
NEEDS_ACTIVATIONS = ("apoz", "mean_activation")

Weights = dict[str, dict[str, np.ndarray]]  # layer -> neutral name -> canonical array


def member_slices(member: Member, weights: dict[str, np.ndarray]) -> np.ndarray:
    """(channels, values) matrix of what one member holds for each group channel."""
    if member.role == "out":
        kernel = weights["kernel"]
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


def _norm_scores(group: Group, weights: Weights, order: int) -> np.ndarray:
    per_member = [np.linalg.norm(member_slices(m, weights[m.layer]), ord=order, axis=1) for m in group.members]
    return np.mean(per_member, axis=0)


def _fpgm(group: Group, weights: Weights) -> np.ndarray:
    # Filters near the geometric median of their layer are the most replaceable (He et al., 2019):
    # importance is the summed distance of each filter to all others, over the group's producers.
    scores = []
    for m in group.members:
        if m.role != "out":
            continue
        filters = member_slices(m, weights[m.layer])
        diff = filters[:, None, :] - filters[None, :, :]
        scores.append(np.sqrt((diff ** 2).sum(-1)).sum(1))
    return np.mean(scores, axis=0)


def _bn_scale(group: Group, weights: Weights) -> np.ndarray:
    # Network slimming (Liu et al., 2017): |gamma| of the group's batch norms. Groups without a
    # batch norm fall back to L1 so that every group still gets a ranking.
    gammas = [np.abs(member_slices(m, weights[m.layer])[:, 0]) for m in group.members
              if m.role == "channel" and "gamma" in weights[m.layer]]
    return np.mean(gammas, axis=0) if gammas else _norm_scores(group, weights, 1)


def _taylor(group: Group, weights: Weights, grads: Weights) -> np.ndarray:
    # First-order Taylor (Molchanov et al., 2019): (sum over a channel's weights of g * w) ** 2,
    # the squared first-order change of the loss if the channel were removed.
    scores = []
    for m in group.members:
        if m.layer not in grads or not any(k in grads[m.layer] for k in ("kernel", "gamma")):
            continue
        w = member_slices(m, weights[m.layer])
        g = member_slices(m, grads[m.layer])
        scores.append((w * g).sum(1) ** 2)
    return np.mean(scores, axis=0)


def activation_stats(outputs: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per-channel (sum after ReLU, count of zeros after ReLU, values per channel) of layer outputs.

    Outputs have channels on axis 1. Stats from several batches add up, so activations never need
    to be held for the whole calibration set.
    """
    stats = {}
    for name, out in outputs.items():
        act = np.maximum(np.moveaxis(out, 1, 0).reshape(out.shape[1], -1), 0.0)
        stats[name] = (act.sum(axis=1, dtype=np.float64), np.sum(act == 0, axis=1), act.shape[1])
    return stats


def _activation(group: Group, stats: dict[str, tuple[np.ndarray, np.ndarray, int]], apoz: bool) -> np.ndarray:
    # Producers' outputs after ReLU (the usual follower): APoZ ranks channels by how rarely they are
    # zero (Hu et al., 2016); mean activation by their mean.
    scores = []
    for layer in group.producers:
        total, zeros, count = stats[layer]
        scores.append(1.0 - zeros / count if apoz else total / count)
    return np.mean(scores, axis=0)


def group_scores(
    criterion: str,
    group: Group,
    weights: Weights,
    grads: Weights | None = None,
    stats: dict[str, tuple[np.ndarray, np.ndarray, int]] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Importance of each channel of ``group`` (length ``group.channels``), higher is kept.

    ``grads`` (canonical layout) feed Taylor; ``stats`` (from :func:`activation_stats`, summed over
    batches) feed APoZ and mean activation.
    """
    table: dict[str, Callable[[], np.ndarray]] = {
        "l1": lambda: _norm_scores(group, weights, 1),
        "l2": lambda: _norm_scores(group, weights, 2),
        "fpgm": lambda: _fpgm(group, weights),
        "bn_scale": lambda: _bn_scale(group, weights),
        "taylor": lambda: _taylor(group, weights, grads or {}),
        "apoz": lambda: _activation(group, stats or {}, apoz=True),
        "mean_activation": lambda: _activation(group, stats or {}, apoz=False),
        "random": lambda: (rng or np.random.default_rng(0)).random(group.channels),
    }
    scores = np.asarray(table[criterion](), dtype=np.float64)
    if scores.shape != (group.channels,):
        raise ValueError(f"criterion {criterion}: got {scores.shape} scores for {group.channels} channels")
    return scores
