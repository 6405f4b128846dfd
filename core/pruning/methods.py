"""Pruning methods as registered plugins, and what every pruner offers the stage runner.

A method (``magnitude``, ``n:m``, ``channel``, ``admm``, or one a user registers) is a class
registered in :data:`PRUNING_METHODS` with its frozen options dataclass (the recipe keys only it
takes). The stage runner (``slimkit.compress``) asks it for a :class:`Pruner` and drives that the
same way for every method: one-shot, or as training hooks along the schedule, then
:meth:`Pruner.finish`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from slimkit.adapter import LayerInfo, ModelAdapter, TrainHooks
from slimkit.plugins import Registry

if TYPE_CHECKING:
    from slimkit.pruning.ratios import Target
    from slimkit.recipe import PruneStage
    from slimkit.report import Report


@dataclass(frozen=True)
class PruneContext:
    """What a pruner may use besides the model: the stage's recipe path (for messages), sample
    inputs, the training data and the recipe's seed."""

    field: str
    sample: np.ndarray | None
    train_data: Any
    seed: int

    @property
    def stage_path(self) -> str:
        """The stage's own recipe path (``stages[0].prune``), for messages about its keys."""
        return self.field.rsplit(".", 1)[0] if self.field.endswith(".layers") else self.field


class Pruner(TrainHooks):
    """Prunes one stage's layers; as :class:`TrainHooks` it follows fine-tuning.

    Attributes:
        current: the sparsity (or channel ratio) reached so far.
        total_steps: the optimizer steps fine-tuning announced.
        capture_seconds: time spent capturing the model's graph (structured methods), reported apart
            from the method's own work.
    """

    current: float = 0.0
    total_steps: int = 0
    capture_seconds: float = 0.0

    def one_shot(self) -> ModelAdapter:
        """Prunes to the target at once; returns the adapter to continue with."""
        raise NotImplementedError

    def finish(self) -> ModelAdapter:
        """After fine-tuning: the adapter to continue with (this one, or a rebuilt model)."""
        raise NotImplementedError

    def add_to_report(self, report: "Report") -> None:
        """Adds what this method has to say (channel groups, notes) to the report."""

    def projection(self, target: "Target",
                   values: dict[tuple[str, str], np.ndarray] | None = None) -> dict[tuple[str, str], np.ndarray]:
        """The 0/1 masks (native layout, by ``(layer, weight)``) that prune ``values`` (the model's own
        weights when None) to ``target`` by this method's rule; nothing is installed. ``target`` is one
        sparsity for every layer, or a ramp from each layer's own final sparsity to its sparsity now
        (:data:`slimkit.pruning.ratios.FINAL`: the stage's targets, overrides included). Pruners that
        ADMM can drive (``slimkit.pruning.admm``) implement it; the keys do not depend on ``values``."""
        raise NotImplementedError


class PruningMethod:
    """One pruning method; subclasses register with :data:`PRUNING_METHODS`.

    Attributes:
        kinds: the layer kinds it prunes (a selector naming no kind selects these).
        takes_sparsity: the stage gives ``sparsity`` (n:m implies it from its options).
        takes_scope: the stage may choose ``scope: layer | global``.
        sets_kernel_sparsity: ``sparsity`` is a kernel sparsity the report holds layers to (a
            channel ratio is not).
        takes_schedule: the stage's ``schedule`` drives it during fine-tuning (else the key is refused).
        takes_regularize: its pruner applies the stage's ``regularize`` penalties (else the key is refused).
        takes_overrides: its pruner prunes each layer to its own ratio (``overrides``, see
            :mod:`slimkit.pruning.ratios`; else the key is refused). Off by default: a method that
            ignored them would silently prune every layer alike.
        needs_fine_tune: it works only while training (a stage without fine-tuning is refused).
    """

    kinds: ClassVar[tuple[str, ...]] = ()
    takes_sparsity: ClassVar[bool] = True
    takes_scope: ClassVar[bool] = True
    takes_schedule: ClassVar[bool] = True
    takes_regularize: ClassVar[bool] = False
    takes_overrides: ClassVar[bool] = False
    needs_fine_tune: ClassVar[bool] = False
    sets_kernel_sparsity: ClassVar[bool] = True

    def __init__(self, options: Any) -> None:
        self.options = options

    def check(self, path: str) -> None:
        """Raises RecipeError (naming ``path``) for options that do not fit together."""

    def idle_options(self) -> dict[str, str]:
        """Option keys that the other options make moot, each with why; a stage that writes one is
        refused (``slimkit.recipe_effects``)."""
        return {}

    def implied_sparsity(self) -> float | None:
        """The sparsity the options imply, for methods that do not take ``sparsity``."""
        return None

    def pruner(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: "PruneStage",
               ctx: PruneContext) -> Pruner:
        """The pruner of ``layers`` for this stage."""
        raise NotImplementedError


#: name -> pruning method class; recipe validation (``prune.method``) reads it.
PRUNING_METHODS: Registry[type[PruningMethod]] = Registry("pruning method", builtins=(
    "slimkit.pruning.magnitude", "slimkit.pruning.nm", "slimkit.pruning.structured", "slimkit.pruning.lottery",
    "slimkit.pruning.admm"))


def method_of(stage: "PruneStage") -> PruningMethod:
    """The registered method of ``stage`` with the stage's options."""
    return PRUNING_METHODS.get(stage.method).impl(stage.options)


def zeroes_kernels(stages: Any) -> bool:
    """Whether a prune stage among ``stages`` zeroes kernel entries (rather than removing channels): only
    then do compressed sizes (zlib of the weights, gzip of files) tell something, what the zeros save."""
    from slimkit.recipe import PruneStage

    return any(isinstance(s, PruneStage) and method_of(s).sets_kernel_sparsity for s in stages)
