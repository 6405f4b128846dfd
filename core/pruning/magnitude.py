"""Unstructured magnitude pruning: zero the smallest-magnitude kernel weights.

Per-layer scope prunes each layer's kernel to the target; global scope ranks all selected kernels
together under one threshold, so layers with many small weights give up more. Layers an override
picks are pruned each to its own sparsity (global scope ranks the others together). During fine-tuning the
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
from slimkit.pruning.ratios import FINAL, Target, at, layer_ratios, overridden, reaches_final
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
    """Drives magnitude pruning of selected layers through an adapter, one-shot or along a schedule.

    Attributes:
        ratios: each layer's final sparsity (the stage's, or its override's).
        own: the overridden layers: pruned each by itself to its own value, whatever the scope.
    """

    def __init__(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: "PruneStage") -> None:
        self.adapter = adapter
        self.layers = layers
        self.stage = stage
        self.ratios = layer_ratios(stage, layers)
        self.own = overridden(stage, layers)
        self.current = 0.0
        self.at_target = False  # the last masks installed are the final ones
        self.total_steps = 0  # as the training loop announced it in begin()

    def apply(self, target: Target = FINAL) -> dict[tuple[str, str], np.ndarray]:
        """Computes masks for ``target`` from the current weights and installs them.

        A layer's matrices (a recurrent layer's input and recurrent kernels, an attention block's
        query, key and value projections) are ranked together: per layer (layer scope) or with every
        other selected matrix (global). Ranking a layer's matrices jointly keeps frameworks that
        store them as one tensor (PyTorch ``in_proj_weight``) and as several (Keras query, key,
        value) in agreement.

        Args:
            target: one sparsity for every layer, or a ramp of each layer's own final sparsity
                (:mod:`slimkit.pruning.ratios`; the default: every layer at its final value).

        Returns:
            (layer, weight name) -> the installed 0/1 mask in the matrix's native layout.
        """
        native = self.projection(target)
        for (name, key), mask in native.items():
            self.adapter.set_mask(name, mask, key)
        self.current = at(target, self.stage.sparsity)
        self.at_target = reaches_final(target, self.ratios.values())
        return native

    def projection(self, target: Target,
                   values: dict[tuple[str, str], np.ndarray] | None = None) -> dict[tuple[str, str], np.ndarray]:
        """Native 0/1 masks of every selected matrix at ``target``, ranked as :meth:`apply` ranks them,
        from ``values`` (layer, weight) -> native array, or from the model's weights.

        With a ramp, each overridden layer is pruned by itself to its own value and the global scope
        ranks only the other layers together; one number prunes every layer alike."""
        masks: dict[tuple[str, str], np.ndarray] = {}
        kernels: dict[tuple[str, str], np.ndarray] = {}
        for layer in self.layers:
            weights = self.adapter.get_weights(layer.name) if values is None else \
                {key: values[(layer.name, key)] for key in layer.maskable}
            own = {(layer.name, key): to_canonical(weights[key], perm) for key, perm in layer.maskable.items()}
            if self.stage.scope == "layer" or (callable(target) and layer.name in self.own):
                masks.update(magnitude_masks(own, at(target, self.ratios[layer.name]), "global"))
            else:
                kernels.update(own)
        if kernels:
            masks.update(magnitude_masks(kernels, at(target, self.stage.sparsity), "global"))
        return {(layer.name, key): from_canonical(masks[(layer.name, key)], perm)
                for layer in self.layers for key, perm in layer.maskable.items()}

    def finish(self) -> ModelAdapter:
        """The adapter to continue with after training: this one, pruned in place."""
        return self.adapter

    def one_shot(self) -> ModelAdapter:
        """Prunes every layer to its final sparsity at once; the adapter's model is pruned in place."""
        self.apply(FINAL)
        return self.finish()

    # TrainHooks: the schedule runs over the optimizer steps of the stage's fine-tuning.
    def update(self, target: Target) -> None:
        self.apply(target)

    def end(self) -> None:
        # Whatever the schedule's shape or the steps actually run, leave exactly the targets.
        if not self.at_target:
            self.apply(FINAL)


@PRUNING_METHODS.register("magnitude", NoOptions)
class Magnitude(PruningMethod):
    """``method: magnitude``: unstructured, per layer or global, one-shot or along the schedule."""

    kinds = SUPPORTED_KINDS
    takes_overrides = True

    def pruner(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: "PruneStage",
               ctx: PruneContext) -> Pruner:
        return MagnitudePruner(adapter, layers, stage)
