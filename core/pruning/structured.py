"""Drives channel pruning of a model through its adapter: score, choose, mask while training, remove.

One-shot: choose the channels and rebuild a smaller model. Gradual: along the stage's schedule,
silence the lowest-ranked channels with kernel masks (removed channels stay removed), then rebuild
with the final choice when training ends. Rebuilding happens in the adapter from sliced weights.
With ``regularize: {bn_l1: ...}`` (network slimming, :mod:`slimkit.pruning.slimming`) the penalty acts
from the first step until the schedule reaches the target, so channels are chosen from scales it shaped.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimkit.adapter import LayerInfo, ModelAdapter, QuantAdapter, StructureAdapter, require
from slimkit.adapter.collective import mean_over_ranks
from slimkit.attention import AttentionBlock, head_masks, head_scores, slice_heads
from slimkit.data import as_arrays, head, is_array_pair, n_samples, take
from slimkit.errors import DataError, RecipeError, SlimkitWarning, UnsupportedModelError
from slimkit.graph import analyse
from slimkit.pruning.channel import (
    ChannelChoice,
    apply_plan,
    choose_global,
    choose_per_group,
    kernel_mask,
    layer_plans,
    rounded_keep_count,
)
from slimkit.plugins import bounded
from slimkit.pruning.criteria import CRITERIA, activation_stats, criterion_of, group_scores
from slimkit.pruning.masks import to_canonical
from slimkit.pruning.methods import PRUNING_METHODS, PruneContext, Pruner, PruningMethod
from slimkit.pruning.ratios import FINAL, Target, at, layer_ratios, overridden, reaches_final
from slimkit.pruning.scheduled import ScheduledPruner
from slimkit.pruning.slimming import BNScaleL1, ScalesAtChoice, scales_at_choice
from slimkit.recipe import FineTune, PruneStage
from slimkit.schedules import target_step

_CHUNK = 32  # calibration samples per forward pass when collecting activation statistics

Values = dict[tuple[str, str], np.ndarray]  # (layer, weight) -> native array standing in for the model's

#: Layer kinds whose output channels define a prunable group (attention: whole heads; recurrent: units).
SUPPORTED_KINDS = ("dense", "conv", "attention", "recurrent")


class ChannelPruner(ScheduledPruner):
    """Channel pruning of the groups whose producers are all selected."""

    def __init__(
        self,
        adapter: ModelAdapter,
        selected: list[LayerInfo],
        stage: PruneStage,
        field: str,
        sample: np.ndarray | None,
        train_data: Any,
        seed: int,
    ) -> None:
        require(adapter, StructureAdapter, f"{field}: channel pruning")
        if isinstance(adapter, QuantAdapter) and adapter.quant_plan() is not None:
            raise UnsupportedModelError(
                f"{field}: channel pruning needs a float model, and this one is quantized (it carries the "
                "fake-quant sites of an earlier compress); prune the float model, then quantize: one recipe "
                "with a channel stage before the quantize stage")
        if sample is None:
            raise DataError(f"{field}: channel pruning needs sample inputs: pass calib_data or train_data")
        self.adapter, self.stage, self.field = adapter, stage, field
        self.options = stage.options
        self.criterion = criterion_of(self.options.criterion)
        self.sample = head(sample, self.options.samples)
        self.train_data = train_data
        self.rng = np.random.default_rng(seed)
        start = time.perf_counter()
        self.graph = adapter.graph(self.sample)  # captured once per stage; every choice below reuses it
        self.capture_seconds = time.perf_counter() - start
        analysis = analyse(self.graph)
        names = {layer.name for layer in selected}
        self.groups = [g for g in analysis.groups if all(p in names for p in g.producers)]
        # Attention blocks lose whole heads: their projections' own channel spaces are blocked (heads
        # are split off by reshapes), so they are pruned by block, not by group.
        self.blocks: list[AttentionBlock] = [b for b in adapter.attention_blocks()
                                             if all(layer in names for layer in b.layers) and b.heads > 1]
        in_blocks = {layer for b in self.blocks for layer in b.layers}
        self.blocked = [(n, why) for n, why in analysis.blocked if not set(n) & in_blocks]
        for node_names, why in self.blocked:
            chosen = [n for n in node_names if n in names]
            if chosen and "model output" not in why:  # the output layer is never pruned: no news
                warnings.warn(f"{field}: channels of {', '.join(chosen)} are left whole: {why}",
                              SlimkitWarning, stacklevel=5)
        self.head_keeps: list[np.ndarray] = []
        self.notes: list[str] = []
        # Each group's (block's) final ratio is its producers' (projections'): one ratio per channel set.
        self.ratios = layer_ratios(stage, selected)
        own = overridden(stage, selected)
        self.group_finals = [self._unit_final(g.producers, "channel group") for g in self.groups]
        self.block_finals = [self._unit_final(b.layers, "attention block") for b in self.blocks]
        self.group_own = [bool(own & set(g.producers)) for g in self.groups]
        self.at_target = False  # the last masks installed are the final ones
        if not self.groups and not self.blocks:
            reasons = "; ".join(f"{', '.join(n[:3])}: {why}" for n, why in analysis.blocked[:5]) or "none"
            raise RecipeError(
                f"{field}: no prunable channel group has all its producing layers selected "
                f"(selected: {sorted(names)}; groups left whole: {reasons})"
            )
        self.infos = {layer.name: layer for layer in adapter.layers()}
        self.choices: list[ChannelChoice] = []
        self.current = 0.0
        self.total_steps = 0
        self.steps_done = 0
        self.scales: ScalesAtChoice | None = None  # kept when the channels are chosen at the target
        self.l1_last = 0  # the last step the bn_l1 penalty acts on
        if self.criterion.needs_gradients and train_data is None:
            raise DataError(f"{field}: criterion {self.options.criterion!r} needs train_data with labels")
        self.l1 = self._slimming(field.rsplit(".", 1)[0])  # field is the stage's `layers` key

    def _slimming(self, path: str) -> BNScaleL1 | None:
        """The stage's bn_l1 penalty over the groups' batch norms; refused where no group has one."""
        strength = self.stage.regularize.bn_l1
        if not strength:
            return None
        where = f"{path}.regularize.bn_l1"
        lr = (self.stage.fine_tune or FineTune()).learning_rate
        l1 = BNScaleL1(self.adapter, self.groups, self.infos, strength, lr, where)
        if not l1.entries:
            raise RecipeError(f"{where}: none of the channel groups being pruned has a batch norm (groups of "
                              f"{'; '.join(', '.join(g.producers) for g in self.groups[:5])}); network slimming "
                              "penalises batch-norm scales: select layers followed by batch norms, or remove it")
        if not self.criterion.sees_bn_scales:
            warnings.warn(f"{where}: criterion {self.options.criterion!r} ranks channels by what the penalty on "
                          "batch-norm scales does not change; network slimming chooses by them: criterion bn_scale",
                          SlimkitWarning, stacklevel=6)
        if l1.bare:
            warnings.warn(f"{where}: the channel groups of {'; '.join(', '.join(g.producers) for g in l1.bare[:5])} "
                          "have no batch norm; the penalty does not reach them", SlimkitWarning, stacklevel=6)
        return l1

    def _unit_final(self, layers: Any, what: str) -> float:
        """The final ratio of a channel group or attention block: its layers' own, or the smallest when
        their overrides disagree (removing more than a layer asks for would prune it past its ratio);
        then a report note says so."""
        finals = {name: self.ratios[name] for name in dict.fromkeys(layers) if name in self.ratios}
        ratio = min(finals.values(), default=self.stage.sparsity)
        if len(set(finals.values())) > 1:
            listed = ", ".join(f"{name} {value:.1%}" for name, value in finals.items())
            self.notes.append(f"{self.field.rsplit('.', 1)[0]}.overrides: the {what} of {', '.join(finals)} shares "
                              f"one set of channels among layers of different ratios ({listed}); it is pruned to "
                              f"the smallest, {ratio:.1%}")
        return ratio

    # -- choosing ----------------------------------------------------------------------------
    def _raw(self, name: str, values: Values | None) -> dict[str, np.ndarray]:
        """A layer's native weights, with the entries of ``values`` in place of the model's."""
        w = self.adapter.get_weights(name)
        if values:
            w.update({key: v for (layer, key), v in values.items() if layer == name})
        return w

    def _weights(self, values: Values | None = None) -> dict[str, dict[str, np.ndarray]]:
        layers = {m.layer for g in self.groups for m in g.members}
        out = {}
        for name in layers:
            info = self.infos[name]
            w = self._raw(name, values)
            if "kernel" in w:
                w["kernel"] = to_canonical(w["kernel"], info.kernel_perm)
            for key, perm in info.matrices.items():  # a recurrent layer's recurrent kernel, say
                if key in w and key != "kernel":
                    w[key] = to_canonical(w[key], perm)
            out[name] = w
        return out

    def _gradients(self) -> dict[str, dict[str, np.ndarray]]:
        settings = self.stage.fine_tune or FineTune()
        data = self.train_data
        if is_array_pair(data):
            x, y = as_arrays(data, "train_data", need_labels=True)
            data = (head(x, self.options.samples), y[: self.options.samples])
        batches = max(1, math.ceil(self.options.samples / settings.batch_size))
        grads = self.adapter.weight_gradients(data, settings, batches)
        for name, g in grads.items():
            if "kernel" in g and name in self.infos:
                g["kernel"] = to_canonical(g["kernel"], self.infos[name].kernel_perm)
        return grads

    def _activation_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        # Chunks bound memory: full activations of a large network over the calibration set would
        # not fit; their per-channel sums do.
        probes = {p: self._activation_probe(p) for g in self.groups for p in g.producers}
        total: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        for start in range(0, n_samples(self.sample), _CHUNK):
            outputs = self.adapter.layer_outputs(take(self.sample, slice(start, start + _CHUNK)),
                                                 sorted(set(probes.values())))
            chunk = activation_stats({p: outputs[probe] for p, probe in probes.items()})
            for name, (s, z, n) in chunk.items():
                if name in total:
                    ts, tz, tn = total[name]
                    s, z, n = ts + s, tz + z, tn + n
                total[name] = (s, z, n)
        return total

    def _activation_probe(self, producer: str) -> str:
        """The node where a producer's activations are read: the end of its private chain of batch
        norms and activations (conv -> bn -> relu reads after the relu), where APoZ is defined."""
        consumers: dict[str, list[str]] = {}
        for node in self.graph.nodes:
            for inp in node.inputs:
                consumers.setdefault(inp, []).append(node.name)
        name = next(n.name for n in self.graph.nodes if n.layer == producer)
        while len(consumers.get(name, [])) == 1:
            nxt = self.graph.by_name[consumers[name][0]]
            if nxt.op not in ("batchnorm", "elementwise") or len(nxt.inputs) != 1:
                break
            name = nxt.name
        return name

    def choose(self, target: Target, values: Values | None = None) -> list[ChannelChoice]:
        """Channels each group keeps at ``target`` (one ratio for every group, or a ramp of each group's
        own final ratio: :mod:`slimkit.pruning.ratios`); channels removed earlier stay removed.
        ``values`` stand in for some of the model's weights (weight criteria score them; data-driven
        ones measure the model itself). With a ramp, the global scope ranks together only the groups
        no override reaches; the others are pruned each to its own ratio."""
        if not self.groups:
            return []
        weights = self._weights(values)
        grads = self._gradients() if self.criterion.needs_gradients else None
        stats = self._activation_stats() if self.criterion.needs_activations else None
        scores = [group_scores(self.options.criterion, g, weights, grads, stats, self.rng) for g in self.groups]
        if grads is not None or stats is not None:  # each rank measured its own data: decide alike on all
            scores = mean_over_ranks(scores, f"{self.options.criterion} channel scores")
        for previous in self.choices:  # monotone: a removed channel never comes back
            scores[self.groups.index(previous.group)][previous.removed] = -np.inf
        keeps: list[np.ndarray | None] = [None] * len(self.groups)
        if self.stage.scope == "global":
            together = [i for i, own in enumerate(self.group_own) if not (own and callable(target))]
            if together:
                finite = [np.where(np.isfinite(scores[i]), scores[i], 0.0) for i in together]
                joint = choose_global([self.groups[i] for i in together], finite, at(target, self.stage.sparsity),
                                      self.options.round_to)
                for i, keep in zip(together, joint):
                    keeps[i] = keep
        for i, (group, final) in enumerate(zip(self.groups, self.group_finals)):
            if keeps[i] is None:
                keeps[i] = choose_per_group(scores[i], rounded_keep_count(group.channels, at(target, final),
                                                                          self.options.round_to))
        return [ChannelChoice(g, k) for g, k in zip(self.groups, keeps)]

    def choose_heads(self, target: Target, values: Values | None = None) -> list[np.ndarray]:
        """Heads each attention block keeps at ``target`` (per block, at least one), ranked by the norm of
        their weights of the criterion's ``head_norm_order`` (1 for l1, else 2: data-driven criteria score
        channels, not heads); heads removed earlier stay removed."""
        if not self.blocks:
            return []
        raw = {name: self._raw(name, values) for name in {n for b in self.blocks for n in b.layers}}
        keeps = []
        for i, block in enumerate(self.blocks):
            scores = head_scores(block, raw, self.criterion.head_norm_order)
            if i < len(self.head_keeps):
                scores[np.setdiff1d(np.arange(block.heads), self.head_keeps[i])] = -np.inf
            keeps.append(choose_per_group(scores, rounded_keep_count(block.heads, at(target, self.block_finals[i]), 1)))
        return keeps

    # -- acting --------------------------------------------------------------------------------
    def _masks(self, choices: list[ChannelChoice], heads: list[np.ndarray]) -> Values:
        """(layer, weight) -> native 0/1 mask silencing every removed channel and head."""
        masks: Values = {}
        for name, plan in layer_plans(choices, self.infos).items():
            info = self.infos[name]
            if "kernel" in info.shapes:
                masks[(name, "kernel")] = kernel_mask(info, plan)
            if info.kind == "recurrent" and "recurrent_kernel" in info.shapes:
                ones = np.ones(info.shapes["recurrent_kernel"], np.float32)
                masks[(name, "recurrent_kernel")] = apply_plan(info, {"recurrent_kernel": ones}, plan,
                                                               mask=True)["recurrent_kernel"]
        for block, keep in zip(self.blocks, heads):
            shapes = {(n, key): shape for n in block.layers for key, shape in self.infos[n].shapes.items()}
            for key, mask in head_masks(block, keep, shapes).items():
                masks[key] = masks[key] * mask if key in masks else mask
        return masks

    def _mask(self, choices: list[ChannelChoice], heads: list[np.ndarray]) -> None:
        for (name, weight), mask in self._masks(choices, heads).items():
            self.adapter.set_mask(name, mask, weight=weight)
        self.choices, self.head_keeps = choices, heads

    def projection(self, target: Target, values: Values | None = None) -> Values:
        """Masks of the channels and heads that ``values`` (or the model's weights) keep at ``target``,
        chosen afresh (ADMM re-projects, so nothing removed earlier is held)."""
        return self._masks(self.choose(target, values), self.choose_heads(target, values))

    def finish(self) -> ModelAdapter:
        """The adapter to continue with after training: the rebuilt smaller model."""
        return self.shrunk()

    def shrunk(self) -> ModelAdapter:
        """An adapter over the rebuilt smaller model for the current choice."""
        weights = {}
        for name, plan in layer_plans(self.choices, self.infos).items():
            weights[name] = apply_plan(self.infos[name], self.adapter.get_weights(name), plan, mask=False)
        for block, keep in zip(self.blocks, self.head_keeps):
            raw = {name: self.adapter.get_weights(name) for name in block.layers}
            for name, sliced in slice_heads(block, keep, raw).items():
                weights.setdefault(name, {}).update(sliced)
        return self.adapter.shrink(weights)

    def one_shot(self) -> ModelAdapter:
        self.choices = self.choose(FINAL)
        self.head_keeps = self.choose_heads(FINAL)
        self.current = self.stage.sparsity
        self.at_target = True
        return self.finish()

    # TrainHooks: gradual masking along the schedule, after the bn_l1 step of steps up to the target's.
    def begin(self, total_steps: int) -> None:
        super().begin(total_steps)
        if self.l1 is not None:
            self.l1_last = target_step(self.stage.schedule, max(1, total_steps))
            self.l1.begin(self.l1_last)

    def step_end(self, step: int) -> None:
        self.steps_done = step
        if self.l1 is not None and step <= self.l1_last:
            self.l1.step()
        super().step_end(step)

    def update(self, target: Target) -> None:
        self._mask(self.choose(target), self.choose_heads(target))
        self.current = at(target, self.stage.sparsity)
        self.at_target = reaches_final(target, self.group_finals + self.block_finals)
        if self.at_target and self.scales is None:
            self.scales = scales_at_choice(self.adapter, self.choices, self.steps_done)

    def end(self) -> None:
        if not self.at_target or not (self.choices or self.head_keeps):
            self._mask(self.choose(FINAL), self.choose_heads(FINAL))
            self.current = self.stage.sparsity
            self.at_target = True
        if self.scales is None:
            self.scales = scales_at_choice(self.adapter, self.choices, self.steps_done)

    def group_rows(self) -> list[tuple[tuple[str, ...], int, int]]:
        """(producers, channels, kept) per pruned group; an attention block's row counts heads."""
        rows = [(tuple(c.group.producers), c.group.channels, len(c.keep)) for c in self.choices]
        rows += [(tuple(dict.fromkeys(w.layer for w, _ in b.projections)), b.heads, len(keep))
                 for b, keep in zip(self.blocks, self.head_keeps)]
        return rows

    def add_to_report(self, report: Any) -> None:
        """Each pruned group's channels, and the groups left whole with the reason."""
        from slimkit.report import GroupRow

        report.groups += [GroupRow(*row) for row in self.group_rows()]
        report.notes += self.notes
        report.notes += [f"channels left whole ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): {why}"
                         for names, why in self.blocked]
        if self.l1 is not None and self.scales is not None and len(self.scales.removed):
            s = self.scales
            report.notes.append(
                f"{self.l1.field}: when the channels were chosen (step {s.step}), the removed channels' batch-norm "
                f"scales averaged |gamma| {s.removed.mean():.3g} (largest {s.removed.max():.3g}), the kept "
                f"channels' {s.kept.mean():.3g}")


@dataclass(frozen=True)
class ChannelOptions:
    """``criterion`` names a registered criterion; kept channels are rounded to a multiple of
    ``round_to``; data-driven criteria use ``samples`` inputs."""

    criterion: str = "l1"
    round_to: int = bounded(1, 1)
    samples: int = bounded(256, 1)


@PRUNING_METHODS.register("channel", ChannelOptions)
class Channel(PruningMethod):
    """``method: channel``: structured pruning that rebuilds a smaller model; ``sparsity`` is the
    fraction of channels removed, not a kernel sparsity."""

    kinds = SUPPORTED_KINDS
    sets_kernel_sparsity = False
    takes_regularize = True
    takes_overrides = True  # a group's ratio is its producers' (the smallest, where they disagree)

    def check(self, path: str) -> None:
        CRITERIA.get(self.options.criterion, f"{path}.criterion")

    def pruner(self, adapter: ModelAdapter, layers: list[LayerInfo], stage: PruneStage,
               ctx: PruneContext) -> Pruner:
        return ChannelPruner(adapter, layers, stage, ctx.field, ctx.sample, ctx.train_data, ctx.seed)

