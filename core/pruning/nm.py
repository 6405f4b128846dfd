"""N:M semi-structured sparsity: in every run of M consecutive input weights keep the N largest.

Runs lie along the input (reduction) axis in canonical (out, in, *spatial) order, the layout sparse
tensor cores accelerate (2:4). Masks travel the same path as unstructured pruning (``set_mask``),
so they hold through fine-tuning and survive ``strip`` and export.
"""

from __future__ import annotations

import numpy as np

from slimkit.adapter import LayerInfo, ModelAdapter, TrainHooks
from slimkit.errors import RecipeError
from slimkit.pruning.masks import from_canonical, to_canonical
from slimkit.recipe import PruneStage

#: Layer kinds N:M can mask (those with an input-channel reduction).
SUPPORTED_KINDS = ("dense", "conv")


def nm_mask(kernel: np.ndarray, n: int, m: int) -> np.ndarray:
    """0/1 mask of a canonical kernel keeping the ``n`` largest |w| of each ``m`` input channels.

    Raises:
        ValueError: the input axis is not a multiple of ``m``.
    """
    out_ch, in_ch = kernel.shape[:2]
    if in_ch % m:
        raise ValueError(f"{in_ch} input channels are not a multiple of m={m}")
    # (out, in, rest) -> (out, rest, in/m, m): runs of m along the input axis at each position.
    k = kernel.reshape(out_ch, in_ch, -1).transpose(0, 2, 1).reshape(out_ch, -1, in_ch // m, m)
    order = np.argsort(-np.abs(k), axis=-1, kind="stable")
    mask = np.zeros_like(k, dtype=np.float32)
    np.put_along_axis(mask, order[..., :n], 1.0, axis=-1)
    rest = int(np.prod(kernel.shape[2:], dtype=np.int64))
    return mask.reshape(out_ch, rest, in_ch).transpose(0, 2, 1).reshape(kernel.shape)


class NMPruner(TrainHooks):
    """Installs N:M masks on the selected layers before fine-tuning and refreshes them at the end."""

    def __init__(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: PruneStage, field: str) -> None:
        for layer in layers:
            in_ch = layer.shapes["kernel"][layer.kernel_perm[1]]
            if in_ch % stage.m:
                raise RecipeError(
                    f"{field}: layer {layer.name!r} has {in_ch} input channels, not a multiple of "
                    f"m={stage.m}; exclude it or choose another m"
                )
        self.adapter, self.layers, self.stage = adapter, layers, stage
        self.total_steps = 0
        self.current = 0.0

    def apply(self) -> None:
        """Computes and installs the N:M masks from the current weights."""
        for layer in self.layers:
            kernel = to_canonical(self.adapter.get_weights(layer.name)["kernel"], layer.kernel_perm)
            mask = nm_mask(kernel, self.stage.n, self.stage.m)
            self.adapter.set_mask(layer.name, from_canonical(mask, layer.kernel_perm))
        self.current = self.stage.sparsity

    def finish(self) -> ModelAdapter:
        """The adapter to continue with after training: this one, pruned in place."""
        return self.adapter

    def one_shot(self) -> ModelAdapter:
        """Installs the masks at once; the adapter's model is pruned in place."""
        self.apply()
        return self.finish()

    def begin(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self.apply()

    def end(self) -> None:
        # Masked weights are zero, so re-selection keeps the pattern; it only re-checks it.
        self.apply()
