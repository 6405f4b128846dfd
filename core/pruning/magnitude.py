"""Unstructured magnitude pruning: zero the smallest-magnitude kernel weights.

Per-layer scope prunes each layer's kernel to the target; global scope ranks all selected kernels
together under one threshold, so layers with many small weights give up more. During fine-tuning the
target grows along the stage's schedule and masks are recomputed on the schedule's update steps.
Masked weights are already zero when masks are recomputed, so masks only ever grow.
"""

from __future__ import annotations

import numpy as np

from typing import TYPE_CHECKING, Any

from slimkit.adapter import LayerInfo, ModelAdapter
from slimkit.plugins import NoOptions
from slimkit.pruning.masks import from_canonical, smallest_k_mask, to_canonical
from slimkit.pruning.methods import PRUNING_METHODS, PruneContext, Pruner, PruningMethod
from slimkit.pruning.scheduled import ScheduledPruner

if TYPE_CHECKING:
    from slimkit.recipe import PruneStage

#: Layer kinds whose weight matrices magnitude pruning can mask (every matrix of LayerInfo.maskable).
SUPPORTED_KINDS = ("dense", "conv", "depthwise_conv", "embedding", "recurrent", "attention")


def magnitude_masks(kernels: dict[Any, np.ndarray], sparsity: float, scope: str) -> dict[Any, np.ndarray]:
    """Masks that zero the smallest-magnitude fraction ``sparsity`` of the given kernels.

    Args:
        kernels: layer name -> kernel in canonical order; dict order is model order (it breaks ties).
        sparsity: fraction in [0, 1) of weights to zero, per layer or over all layers.
        scope: ``layer`` (each kernel separately) or ``global`` (one ranking over all kernels).

    Returns:
        layer name -> 0/1 float32 mask in canonical order.
    """
    if scope == "layer":
        return {
            name: smallest_k_mask(np.abs(k), int(round(sparsity * k.size))) for name, k in kernels.items()
        }
    flat = np.concatenate([np.abs(k).reshape(-1) for k in kernels.values()])
    joint = smallest_k_mask(flat, int(round(sparsity * flat.size)))
    masks, start = {}, 0
    for name, k in kernels.items():
        masks[name] = joint[start:start + k.size].reshape(k.shape)
        start += k.size
    return masks


class MagnitudePruner(ScheduledPruner):
    """Drives magnitude pruning of selected layers through an adapter, one-shot or along a schedule."""

    def __init__(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: "PruneStage") -> None:
        self.adapter = adapter
        self.layers = layers
        self.stage = stage
        self.current = 0.0
        self.total_steps = 0  # as the training loop announced it in begin()

    def apply(self, target: float) -> dict[tuple[str, str], np.ndarray]:
        """Computes masks for sparsity ``target`` from the current weights and installs them.

        A layer's matrices (a recurrent layer's input and recurrent kernels, an attention block's
        query, key and value projections) are ranked together: per layer (layer scope) or with every
        other selected matrix (global). Ranking a layer's matrices jointly keeps frameworks that
        store them as one tensor (PyTorch ``in_proj_weight``) and as several (Keras query, key,
        value) in agreement.

        Returns:
            (layer, weight name) -> the installed 0/1 mask in the matrix's native layout.
        """
        native = self.projection(target)
        for (name, key), mask in native.items():
            self.adapter.set_mask(name, mask, key)
        self.current = target
        return native

    def projection(self, target: float,
                   values: dict[tuple[str, str], np.ndarray] | None = None) -> dict[tuple[str, str], np.ndarray]:
        """Native 0/1 masks of every selected matrix at sparsity ``target``, ranked as :meth:`apply`
        ranks them, from ``values`` (layer, weight) -> native array, or from the model's weights."""
        masks: dict[tuple[str, str], np.ndarray] = {}
        kernels: dict[tuple[str, str], np.ndarray] = {}
        for layer in self.layers:
            weights = self.adapter.get_weights(layer.name) if values is None else \
                {key: values[(layer.name, key)] for key in layer.maskable}
            own = {(layer.name, key): to_canonical(weights[key], perm) for key, perm in layer.maskable.items()}
            if self.stage.scope == "layer":
                masks.update(magnitude_masks(own, target, "global"))
            kernels.update(own)
        if self.stage.scope != "layer":
            masks = magnitude_masks(kernels, target, self.stage.scope)
        return {(layer.name, key): from_canonical(masks[(layer.name, key)], perm)
                for layer in self.layers for key, perm in layer.maskable.items()}

    def finish(self) -> ModelAdapter:
        """The adapter to continue with after training: this one, pruned in place."""
        return self.adapter

    def one_shot(self) -> ModelAdapter:
        """Prunes to the target at once; the adapter's model is pruned in place."""
        self.apply(self.stage.sparsity)
        return self.finish()

    # TrainHooks: the schedule runs over the optimizer steps of the stage's fine-tuning.
    def update(self, sparsity: float) -> None:
        self.apply(sparsity)

    def end(self) -> None:
        # Whatever the schedule's shape or the steps actually run, leave exactly the target.
        if self.current != self.stage.sparsity:
            self.apply(self.stage.sparsity)


@PRUNING_METHODS.register("magnitude", NoOptions)
class Magnitude(PruningMethod):
    """``method: magnitude``: unstructured, per layer or global, one-shot or along the schedule."""

    kinds = SUPPORTED_KINDS

    def pruner(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: "PruneStage",
               ctx: PruneContext) -> Pruner:
        return MagnitudePruner(adapter, layers, stage)
