"""Structured channel pruning: choose channels per dependency group, then mask or remove them.

The plan is computed once in numpy from the neutral graph: which channels each group keeps. From
it come (a) kernel masks that silence removed channels during gradual pruning (producers' output
rows and consumers' input columns: nothing of a removed channel reaches the rest of the network),
and (b) the sliced weights the adapter rebuilds a smaller model from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimkit.adapter import LayerInfo
from slimkit.graph import Group
from slimkit.pruning.masks import from_canonical, to_canonical


@dataclass(frozen=True)
class ChannelChoice:
    """The channels a group keeps (sorted indices into the group's channels)."""

    group: Group
    keep: np.ndarray

    @property
    def removed(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.group.channels), self.keep)


def rounded_keep_count(channels: int, ratio: float, round_to: int) -> int:
    """Channels to keep when removing ``ratio`` of ``channels``: a multiple of ``round_to``, >= 1."""
    keep = channels * (1.0 - ratio)
    if round_to > 1:
        if channels <= round_to:
            return channels
        return int(min(channels, max(round_to, round_to * round(keep / round_to))))
    return int(min(channels, max(1, round(keep))))


def choose_per_group(scores: np.ndarray, keep_count: int) -> np.ndarray:
    """Indices of the ``keep_count`` highest scores, sorted; ties keep the lower index."""
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:keep_count])


def choose_global(
    groups: list[Group], scores: list[np.ndarray], ratio: float, round_to: int
) -> list[np.ndarray]:
    """One ranking over all groups' channels (each group's scores divided by their mean).

    Removes ``ratio`` of all channels, lowest normalised importance first, then rounds each group's
    kept count to ``round_to`` and never empties a group.
    """
    normed = [s / (np.mean(s) if np.mean(s) > 0 else 1.0) for s in scores]
    flat = np.concatenate(normed)
    owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(normed)])
    order = np.argsort(flat, kind="stable")
    removed_per_group = np.bincount(owner[order[:int(round(ratio * len(flat)))]], minlength=len(groups))
    keeps = []
    for group, s, removed in zip(groups, scores, removed_per_group):
        count = rounded_keep_count(group.channels, removed / group.channels, round_to)
        keeps.append(choose_per_group(s, count))
    return keeps


@dataclass
class LayerPlan:
    """Per layer: kept output channels and kept input features (None: all)."""

    out_keep: np.ndarray | None = None
    in_keep: np.ndarray | None = None


def layer_plans(choices: list[ChannelChoice], layers: dict[str, LayerInfo]) -> dict[str, LayerPlan]:
    """What each touched layer keeps, combining every group it belongs to."""
    plans: dict[str, LayerPlan] = {}
    removed_in: dict[str, list[np.ndarray]] = {}
    removed_channels: dict[str, list[np.ndarray]] = {}
    for choice in choices:
        for member in choice.group.members:
            plan = plans.setdefault(member.layer, LayerPlan())
            if member.role == "out":
                plan.out_keep = choice.keep
            elif len(choice.removed):
                target = removed_channels if member.role == "channel" else removed_in
                target.setdefault(member.layer, []).append(member.index[choice.removed].ravel())
    for name, removed in removed_channels.items():
        count = _channel_count(layers[name])
        plans[name].out_keep = plans[name].in_keep = np.setdiff1d(np.arange(count), np.concatenate(removed))
    for name, removed in removed_in.items():
        info = layers[name]
        features = info.shapes["kernel"][info.kernel_perm[1]]
        plans[name].in_keep = np.setdiff1d(np.arange(features), np.concatenate(removed))
    return plans


def _channel_count(info: LayerInfo) -> int:
    """Channels of a per-channel layer: depthwise kernel rows, or batch-norm features."""
    if "kernel" in info.shapes:
        return info.shapes["kernel"][info.kernel_perm[0]]
    return next(iter(info.shapes.values()))[0]


def _take(array: np.ndarray, axis: int, keep: np.ndarray | None, mask: bool) -> np.ndarray:
    if keep is None:
        return array
    if not mask:
        return np.take(array, keep, axis=axis)
    out = np.zeros_like(array)
    index = [slice(None)] * array.ndim
    index[axis] = keep
    out[tuple(index)] = array[tuple(index)]
    return out


def apply_plan(info: LayerInfo, weights: dict[str, np.ndarray], plan: LayerPlan, mask: bool) -> dict[str, np.ndarray]:
    """A layer's weights with removed channels sliced away (``mask=False``) or zeroed (``mask=True``).

    Zeroing covers every contribution: kernel rows and columns, bias, batch-norm scale and shift.
    Batch-norm statistics are sliced but never zeroed (a zero variance is not a neutral value).
    """
    if info.kind == "recurrent":
        return _apply_recurrent(info, weights, plan, mask)
    out = {}
    for key, value in weights.items():
        if key == "kernel":
            canon = to_canonical(value, info.kernel_perm)
            canon = _take(canon, 0, plan.out_keep, mask)
            if info.kind != "depthwise_conv":
                canon = _take(canon, 1, plan.in_keep, mask)
            out[key] = from_canonical(canon, info.kernel_perm)
        elif key in ("mean", "var"):
            out[key] = _take(value, 0, plan.out_keep, False) if not mask else value
        else:  # bias, gamma, beta: one value per output channel
            out[key] = _take(value, 0, plan.out_keep, mask)
    return out


def _apply_recurrent(info: LayerInfo, weights: dict[str, np.ndarray], plan: LayerPlan,
                     mask: bool) -> dict[str, np.ndarray]:
    """An LSTM/GRU/RNN layer without some units: row j of every gate block of both matrices and the
    biases, and column j of the recurrent kernel (what unit j feeds back); input columns as planned."""
    rec_perm = info.matrices.get("recurrent_kernel", (1, 0))
    native = info.shapes["recurrent_kernel"]
    rec_shape = tuple(native[i] for i in rec_perm) if rec_perm else tuple(native)
    n_units, gates = rec_shape[1], rec_shape[0] // rec_shape[1]
    rows = None
    if plan.out_keep is not None:
        rows = np.concatenate([g * n_units + plan.out_keep for g in range(gates)])
    out = {}
    for key, value in weights.items():
        if key == "kernel":
            canon = _take(_take(to_canonical(value, info.kernel_perm), 0, rows, mask), 1, plan.in_keep, mask)
            out[key] = from_canonical(canon, info.kernel_perm)
        elif key == "recurrent_kernel":
            canon = _take(_take(to_canonical(value, rec_perm), 0, rows, mask), 1, plan.out_keep, mask)
            out[key] = from_canonical(canon, rec_perm)
        else:  # biases: gate blocks on the last axis ((gates * units,) or Keras GRU's (2, gates * units))
            out[key] = _take(value, value.ndim - 1, rows, mask)
    return out


def kernel_mask(info: LayerInfo, plan: LayerPlan) -> np.ndarray:
    """0/1 native-layout kernel mask silencing a layer's removed output rows and input columns."""
    shape = info.shapes["kernel"]
    ones = np.ones(shape, dtype=np.float32)
    return apply_plan(info, {"kernel": ones}, plan, mask=True)["kernel"]
