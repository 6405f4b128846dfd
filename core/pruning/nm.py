"""N:M semi-structured sparsity: in every run of M consecutive input weights keep the N largest.

Runs lie along the input (reduction) axis in canonical (out, in, *spatial) order, the layout sparse
tensor cores accelerate (2:4). Masks travel the same path as unstructured pruning (``set_mask``),
so they hold through fine-tuning and survive ``strip`` and export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from slimkit.adapter import LayerInfo, ModelAdapter
from slimkit.errors import RecipeError
from slimkit.plugins import bounded
from slimkit.pruning.masks import from_canonical, to_canonical
from slimkit.pruning.methods import PRUNING_METHODS, PruneContext, Pruner, PruningMethod

if TYPE_CHECKING:
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


class NMPruner(Pruner):
    """Installs N:M masks on the selected layers before fine-tuning and refreshes them at the end."""

    def __init__(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: "PruneStage", field: str) -> None:
        m = stage.options.m
        for layer in layers:
            in_ch = layer.shapes["kernel"][layer.kernel_perm[1]]
            if in_ch % m:
                raise RecipeError(
                    f"{field}: layer {layer.name!r} has {in_ch} input channels, not a multiple of "
                    f"m={m}; exclude it or choose another m"
                )
        self.adapter, self.layers, self.stage = adapter, layers, stage
        self.total_steps = 0
        self.current = 0.0

    def apply(self) -> None:
        """Computes and installs the N:M masks from the current weights."""
        for layer in self.layers:
            kernel = to_canonical(self.adapter.get_weights(layer.name)["kernel"], layer.kernel_perm)
            mask = nm_mask(kernel, self.stage.options.n, self.stage.options.m)
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


@dataclass(frozen=True)
class NMOptions:
    """Keep ``n`` of every ``m`` consecutive input weights (2:4 by default)."""

    n: int = bounded(2, 1)
    m: int = bounded(4, 2)


@PRUNING_METHODS.register("n:m", NMOptions)
class NM(PruningMethod):
    """``method: n:m``: semi-structured sparsity; the sparsity is ``1 - n / m``."""

    kinds = SUPPORTED_KINDS
    takes_sparsity = False
    takes_scope = False
    takes_schedule = False  # the pattern is set once and held through fine-tuning

    def check(self, path: str) -> None:
        if self.options.n >= self.options.m:
            raise RecipeError(f"{path}.n: {self.options.n} must be smaller than m ({self.options.m})")

    def implied_sparsity(self) -> float:
        return 1.0 - self.options.n / self.options.m

    def pruner(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: "PruneStage",
               ctx: PruneContext) -> Pruner:
        return NMPruner(adapter, layers, stage, ctx.field)
