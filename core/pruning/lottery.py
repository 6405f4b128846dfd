"""Iterative magnitude pruning with weight rewinding: the lottery ticket procedure.

Frankle & Carbin (2019) train, prune the smallest weights, reset the survivors to their initial values
and train again, round after round; Frankle et al. (2020) reset them to their values at an early step
of training instead ("rewinding"), which keeps deeper networks stable. Here one stage's fine-tuning
steps are split into ``rounds + 1`` equal parts:

* part 0 trains the model as it enters the stage; after its step ``floor(rewind * length)`` (``rewind:
  0``: before any step, the weights the stage starts from) the weights of every layer are kept;
* at the end of part r (r = 1 .. rounds) the selected matrices are pruned by magnitude (per layer or
  global, as the stage's ``scope``) to ``s_r = 1 - (1 - s)^(r / rounds)`` (s: each layer's own
  sparsity where ``overrides`` give one), so that each round removes
  the same fraction of the weights that survived the one before; then every weight of the model
  (every layer, biases and batch-norm statistics included, as the paper resets the whole network) is
  reset to the kept values, pruned ones held at zero by their masks, and part r + 1 trains that ticket.

So ``rounds`` counts prune events, each followed by training: the last part trains the final ticket,
at the target sparsity. The optimizer is not restarted at a rewind: the training loop (slimkit's or
a user's ``fit_fn``) owns its state, so moments and step counts carry over from round to round.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from slimkit.adapter import LayerInfo, ModelAdapter
from slimkit.errors import DataError, RecipeError, SlimkitWarning
from slimkit.plugins import bounded
from slimkit.pruning.magnitude import SUPPORTED_KINDS, MagnitudePruner
from slimkit.pruning.methods import PRUNING_METHODS, PruneContext, Pruner, PruningMethod
from slimkit.pruning.ratios import FINAL
from slimkit.report import RoundRow

if TYPE_CHECKING:
    from slimkit.recipe import PruneStage
    from slimkit.report import Report

#: Most rounds a stage may ask for (each needs its own training).
MAX_ROUNDS = 100
#: Fewest optimizer steps each part of the stage's training may have: one step after a rewind
#: trains nothing worth keeping.
MIN_ROUND_STEPS = 2


def round_sparsity(target: float, r: int, rounds: int) -> float:
    """The sparsity after round ``r`` of ``rounds``: ``1 - (1 - target)^(r / rounds)`` (exactly
    ``target`` at the last round), so that every round keeps the same fraction of the survivors."""
    return target if r >= rounds else 1.0 - (1.0 - target) ** (r / rounds)


def round_starts(total_steps: int, rounds: int) -> list[int]:
    """The step after which each part of training ends, for parts 0 .. rounds: ``[0, b_1, ..., T]``
    with ``b_j = floor(j * T / (rounds + 1))``; round r prunes after step ``b_r``."""
    parts = rounds + 1
    return [j * total_steps // parts for j in range(parts + 1)]


@dataclass(frozen=True)
class LotteryOptions:
    """``rounds`` prune events, each followed by training; survivors are reset to their values after
    ``rewind`` x (steps of one round) steps of the first round."""

    rounds: int = bounded(3, 1, MAX_ROUNDS, doc="prune-rewind-retrain rounds")
    rewind: float = bounded(0.0, 0.0, 1.0, hi_open=True,
                            doc="rewind point as a fraction of the first (dense) round's steps")


class LotteryPruner(Pruner):
    """Splits the stage's training into rounds; prunes, rewinds and lets the next round train.

    Attributes:
        snapshot: layer -> weights (native layout) kept at the rewind step, for every weighted layer.
        rewind_step: the step after which the snapshot was (or will be) taken; 0 = before training.
        starts: see :func:`round_starts`.
        rows: one report row per round, round 0 first.
    """

    def __init__(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: "PruneStage", path: str,
                 total_steps: int | None) -> None:
        self.adapter, self.layers, self.stage, self.path = adapter, layers, stage, path
        self.rounds: int = stage.options.rounds
        self.magnitude = MagnitudePruner(adapter, layers, stage)
        self.snapshot: dict[str, dict[str, np.ndarray]] | None = None
        self.rewind_step = 0
        self.starts: list[int] = []
        self.rows: list[RoundRow] = []
        self.notes: list[str] = []
        self.current = 0.0
        self.total_steps = 0
        self._pruned = 0  # rounds done
        self._step = 0  # the last step reported
        if total_steps is not None:  # refused before any training when the steps can be counted now
            self._check_steps(total_steps)

    def _check_steps(self, total_steps: int) -> None:
        per_round = total_steps // (self.rounds + 1)
        if per_round < MIN_ROUND_STEPS:
            raise RecipeError(
                f"{self.path}.rounds: {self.rounds} rounds split the stage's {total_steps} fine-tuning steps into "
                f"{self.rounds + 1} parts (dense training, then training after each pruning) of {per_round} "
                f"step{'s' if per_round != 1 else ''}; each needs at least {MIN_ROUND_STEPS}: lower rounds, or "
                f"raise {self.path}.fine_tune.epochs (or lower its batch_size)")

    # TrainHooks ----------------------------------------------------------------------------
    def begin(self, total_steps: int) -> None:
        self._check_steps(total_steps)
        self.total_steps = total_steps
        self.starts = round_starts(total_steps, self.rounds)
        # floor keeps the rewind point inside round 0 (rewind < 1), before the first pruning
        self.rewind_step = int(np.floor(self.stage.options.rewind * self.starts[1]))
        self.rows = [RoundRow(self.path, 0, None, None, 0, self.starts[1], None)]
        if self.rewind_step == 0:
            self._keep()

    def step_end(self, step: int) -> None:
        self._step = step
        if step == self.rewind_step:
            self._keep()
        if self._pruned < self.rounds and step == self.starts[self._pruned + 1]:
            self._prune_and_rewind(step)

    def end(self) -> None:
        if self._pruned < self.rounds:
            # training stopped before the last rounds (a fit_fn that ran fewer steps than announced):
            # prune to the target now; nothing trains after, so the trained weights are kept, not rewound
            done = self._pruned
            masks = self.magnitude.apply(FINAL)
            self.rows.append(RoundRow(self.path, self.rounds, self.stage.sparsity, _sparsity(masks), self._step, 0,
                                      None))
            self._pruned = self.rounds
            self.current = self.stage.sparsity
            self.notes.append(
                f"{self.path}: training stopped after {done} of {self.rounds} lottery rounds; the remaining pruning "
                f"to {self.stage.sparsity:.1%} was applied at the end without rewinding or retraining")

    # rounds ----------------------------------------------------------------------------------
    def _keep(self) -> None:
        self.snapshot = {info.name: self.adapter.get_weights(info.name) for info in self.adapter.layers()}

    def _prune_and_rewind(self, step: int) -> None:
        r = self._pruned + 1
        target = round_sparsity(self.stage.sparsity, r, self.rounds)
        # from the trained weights, as the paper ranks them; each layer on its way to its own sparsity
        masks = self.magnitude.apply(lambda final: round_sparsity(final, r, self.rounds))
        assert self.snapshot is not None  # the rewind step precedes every pruning step
        rewound = {name: dict(weights) for name, weights in self.snapshot.items()}
        for (layer, key), mask in masks.items():  # pruned weights stay zero in the raw weights too
            rewound[layer][key] = self.snapshot[layer][key] * mask
        for name, weights in rewound.items():
            self.adapter.set_weights(name, weights)
        self.rows.append(RoundRow(self.path, r, target, _sparsity(masks), step, self.starts[r + 1] - step,
                                  self.rewind_step))
        self._pruned = r
        self.current = target

    # Pruner ------------------------------------------------------------------------------------
    def one_shot(self) -> ModelAdapter:
        # recipe validation refuses a lottery stage without training (needs_fine_tune)
        raise RecipeError(f"{self.path}.fine_tune: method lottery prunes between rounds of training; "
                          "the stage must fine-tune")

    def finish(self) -> ModelAdapter:
        return self.adapter

    def add_to_report(self, report: "Report") -> None:
        report.rounds.extend(self.rows)
        for note in self.notes:
            report.notes.append(note)
            warnings.warn(note, SlimkitWarning, stacklevel=3)


def _sparsity(masks: dict[tuple[str, str], np.ndarray]) -> float:
    total = sum(int(m.size) for m in masks.values())
    return sum(int(np.count_nonzero(m == 0)) for m in masks.values()) / max(1, total)


@PRUNING_METHODS.register("lottery", LotteryOptions)
class Lottery(PruningMethod):
    """``method: lottery``: iterative magnitude pruning with weight rewinding over the stage's training."""

    kinds = SUPPORTED_KINDS
    takes_schedule = False  # the rounds decide when it prunes
    takes_overrides = True  # each layer's rounds lead to its own sparsity
    needs_fine_tune = True

    def pruner(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: "PruneStage",
               ctx: PruneContext) -> Pruner:
        total = None
        if ctx.train_data is not None and stage.fine_tune is not None:
            try:
                total = adapter.total_steps(ctx.train_data, stage.fine_tune)
            except DataError:  # data fit() will describe better; the count is checked again at begin()
                total = None
        return LotteryPruner(adapter, layers, stage, ctx.stage_path, total)
