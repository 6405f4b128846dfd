"""``slimkit.sensitivity``: how much each layer alone costs when pruned or quantized.

Per selected layer, the metric with only that layer pruned at each ratio and with only that layer
quantized at each kernel width, and the error at the layer's own output against the float model's
(SQNR, cosine; no labels needed). The tuner reads it to order float fallback and to prune sensitive
layers less.

Cheap by construction: no ``compress`` per layer. Magnitude rows zero the smallest |w| of one kernel in one
working copy, evaluate and put the kernel back. Quantize rows share one preparation (batch-norm folding,
graph, plan) and one calibration over every selected layer's activation sites; each row then builds the
fixed fake-quant model of a plan holding that layer's sites only (as the static method's fallback does) and
evaluates it. The user's model is only copied.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable

import numpy as np

from slimkit import progress
from slimkit.adapter import ModelAdapter, StructureAdapter
from slimkit.data import as_arrays, first_inputs, head
from slimkit.errors import DataError, RecipeError, SlimkitError, SlimkitWarning
from slimkit.metrics import evaluate
from slimkit.pruning.masks import from_canonical, smallest_k_mask, to_canonical
from slimkit.pruning.methods import PRUNING_METHODS, PruneContext
from slimkit.quant.calibrate import calibrate_recording
from slimkit.quant.fake_quant import mode_of
from slimkit.quant.methods import FIDELITY_SAMPLES, method_of as quant_method
from slimkit.quant.plan import consumers, output_end, plan_sites
from slimkit.quant.specs import kernel_spec, weight_settings
from slimkit.quant.stage import calibrated_acts, finish, prepare, weight_params
from slimkit.recipe import (LayerSelector, PruneStage, QuantizeStage, Recipe, Schedule)
from slimkit.registry import adapter_class
from slimkit.selection import select_layers
from slimkit.tune.analyze_recipe import ANALYZE_PRUNE_METHODS, Analyze, analyze_of
from slimkit.tune.output_error import cosine, on_grid, sqnr_db
from slimkit.tune.sensitivity_report import Sensitivity, SensitivityRow, drop_of

#: The recipe of ``sensitivity(model)`` without one: static int8, every layer.
_DEFAULT_RECIPE = {"stages": [{"quantize": {"method": "static"}}]}

#: Post-training methods a quantize row applies as they are; any other (qat) is estimated post-training
#: with its stage's weight and activation settings, as ``static``.
_AS_IS = ("static", "dynamic")


def sensitivity(
    model: Any,
    recipe: Recipe | dict[str, Any] | str | None = None,
    eval_data: Any = None,
    eval_fn: Callable[[Any], float] | None = None,
    calib_data: Any = None,
    verbose: bool = True,
) -> Sensitivity:
    """Per-layer sensitivity of ``model`` to pruning and quantization, one layer changed at a time.

    Args:
        model: a keras.Model or torch.nn.Module; never modified.
        recipe: its ``analyze:`` section picks layers, ratios and bit widths (defaults without one); its
            quantize stage gives the quantization settings (static int8 without one), its prune stage the
            pruning method when ``analyze.prune.method`` names none. None: the defaults.
        eval_data: ``(x, y)``: the metric is accuracy (class ids) or MSE (targets).
        eval_fn: ``callable(model) -> float``, higher is better; used instead of ``eval_data``'s metric.
        calib_data: inputs for calibration and output errors; default: ``eval_data``'s inputs.
        verbose: show progress (a bar, or a line per row); False shows nothing.

    Returns:
        Rows per (layer, action, setting); ``metric``/``drop`` are None without ``eval_data`` or
        ``eval_fn`` (then only output errors are measured).

    Raises:
        RecipeError: a malformed recipe, or ``analyze.layers`` matching no layer either action handles.
        DataError: quantize rows without any inputs to calibrate on, or bad eval data.
    """
    with progress.session():  # a bar left open by an exception is closed on the way out
        start = time.perf_counter()
        recipe = Recipe.load(_DEFAULT_RECIPE if recipe is None else recipe)
        settings = analyze_of(recipe)
        cls = adapter_class(model)
        work = cls.copy_of(model)
        work.seed(recipe.seed)
        scorer = _Scorer(work, eval_data, eval_fn)
        stage = _quant_stage(recipe, settings)
        count = settings.samples or stage.activations.samples
        sample = first_inputs(calib_data, "calib_data", count, labelled=False)
        if sample is None:
            sample = first_inputs(eval_data, "eval_data", count, labelled=True)
        probe = head(sample, FIDELITY_SAMPLES) if sample is not None and settings.output_error else None

        pruned = _prune_plan(work, recipe, settings)
        quantized = _quant_layers(work, stage, settings)
        if pruned is None and quantized is None:  # run a selection again for its error, naming the selector
            kinds = quant_method(stage).kinds if settings.quantize is not None else PRUNING_METHODS.get(
                settings.prune.method or "magnitude").impl.kinds
            select_layers(work.layers(), settings.layers, kinds, "analyze.layers")
            raise RecipeError("analyze.layers: no selected layer has a kernel to prune")
        notes: list[str] = []
        steps = ((len(pruned[1]) * len(settings.prune.ratios)) if pruned else 0) + \
            ((len(quantized) * len(settings.quantize.bits)) if quantized else 0)
        tracker = _Progress(steps, scorer.name, verbose, start)
        rows: list[SensitivityRow] = []
        if pruned is not None:
            rows += _prune_rows(work, pruned, settings, scorer, sample, probe, recipe.seed, tracker, notes)
        if quantized is not None:
            if sample is None:
                raise DataError("calib_data: quantize rows need inputs to calibrate on; pass calib_data= or "
                                "eval_data=, or set analyze.quantize: null")
            stage = dataclasses.replace(stage, layers=LayerSelector(names=tuple(quantized)))
            rows += _quant_rows(cls.copy_of(model), stage, settings, scorer, sample, probe, tracker, notes)
        return Sensitivity(scorer.name, scorer.baseline, rows, time.perf_counter() - start, notes)


class _Scorer:
    """The metric of a model: ``eval_fn``, else accuracy or MSE on ``eval_data``; None without either."""

    def __init__(self, work: ModelAdapter, eval_data: Any, eval_fn: Callable[[Any], float] | None) -> None:
        self.eval_fn = eval_fn
        self.data = None
        if eval_fn is None and eval_data is not None:
            self.data = as_arrays(eval_data, "eval_data", need_labels=True)  # checked and converted once
        self.name: str | None = None
        self.baseline: float | None = None
        if eval_fn is not None or self.data is not None:
            found = evaluate(work, self.data, eval_fn)
            self.name, self.baseline = next(iter(found.items()))

    def __call__(self, adapter: ModelAdapter) -> tuple[float | None, float | None]:
        """``(metric, drop)`` of ``adapter``'s model."""
        if self.name is None:
            return None, None
        value = evaluate(adapter, self.data, self.eval_fn)[self.name]
        return value, drop_of(self.name, self.baseline, value)


class _Progress:
    """A task over the rows, with a line per row: ``sensitivity 3/24: conv2 prune 0.50  accuracy 0.91 ...``."""

    def __init__(self, total: int, metric: str | None, verbose: bool, start: float) -> None:
        self.total, self.metric, self.start, self.done = total, metric, start, 0
        self.task = progress.task("sensitivity", total, verbose)

    def row(self, row: SensitivityRow) -> SensitivityRow:
        self.done += 1
        setting = f"{row.setting:.2f}" if row.action == "prune" else f"int{int(row.setting)}"
        parts = [f"sensitivity {self.done}/{self.total}: {row.layer} {row.action} {setting}"]
        if row.metric is not None:
            parts.append(f"{self.metric} {row.metric:.4f} (drop {row.drop:+.4f})")
        if row.sqnr_db is not None:
            parts.append(f"SQNR {row.sqnr_db:.1f} dB")
        parts.append(f"({time.perf_counter() - self.start:.1f}s)")
        self.task.update(self.done, status=f"{row.layer} {row.action} {setting}")
        self.task.line("  ".join(parts))
        if self.done >= self.total:
            self.task.finish()
        return row


def _error(ref: np.ndarray | None, got: np.ndarray | None) -> tuple[float | None, float | None]:
    if ref is None or got is None or np.shape(ref) != np.shape(got):
        return None, None
    return sqnr_db(ref, got), cosine(ref, got)


# ------------------------------------------------------------------------------------------- pruning
def _prune_plan(work: ModelAdapter, recipe: Recipe, settings: Analyze) -> tuple[Any, list[Any]] | None:
    """``(stage, layers)``: the prune stage each row runs (its method and options) and the layers it
    handles among the selected ones; None when prune rows are off or no selected layer has a kind the
    method prunes."""
    if settings.prune is None:
        return None
    own = next((s for s in recipe.stages if isinstance(s, PruneStage) and s.method in ANALYZE_PRUNE_METHODS), None)
    name = settings.prune.method or (own.method if own is not None else "magnitude")
    entry = PRUNING_METHODS.get(name, "analyze.prune.method")
    options = own.options if own is not None and own.method == name else entry.options()
    kinds = entry.impl(options).kinds
    try:
        layers = select_layers(work.layers(), settings.layers, kinds, "analyze.layers")
    except SlimkitError:
        return None
    layers = [info for info in layers if "kernel" in info.shapes]
    if not layers:
        return None
    stage = PruneStage(name, 0.0, "layer", Schedule(), LayerSelector(), None, options)
    return stage, layers


def _output_nodes(adapter: ModelAdapter, sample: Any, layers: list[str]) -> dict[str, str]:
    """layer -> the graph node its output is read at (after a ReLU that is its only reader)."""
    graph = adapter.graph(sample)
    readers = consumers(graph)
    own = {n.layer: n.name for n in graph.nodes if n.layer is not None}
    return {name: output_end(graph, readers, own[name]) for name in layers if name in own}


def _prune_rows(work: ModelAdapter, plan: tuple[Any, list[Any]], settings: Analyze, scorer: _Scorer, sample: Any,
                probe: Any, seed: int, progress: _Progress, notes: list[str]) -> list[SensitivityRow]:
    stage, layers = plan
    nodes: dict[str, str] = {}
    refs: dict[str, np.ndarray] = {}
    if probe is not None and isinstance(work, StructureAdapter):
        nodes = _output_nodes(work, sample, [info.name for info in layers])
        refs = work.layer_outputs(probe, sorted(set(nodes.values())))
    method = PRUNING_METHODS.get(stage.method).impl(stage.options)
    rows = []
    for info in layers:
        node = nodes.get(info.name)
        if method.sets_kernel_sparsity:  # zero the kernel in place; else run the method
            original = work.get_weights(info.name)["kernel"]
            canonical = to_canonical(original, info.kernel_perm)
        for ratio in settings.prune.ratios:
            if method.sets_kernel_sparsity:  # zero the kernel in place; else run the method
                mask = smallest_k_mask(np.abs(canonical), int(round(ratio * canonical.size)))
                work.set_weights(info.name, {"kernel": from_canonical(canonical * mask, info.kernel_perm)})
                try:
                    metric, drop = scorer(work)
                    got = work.layer_outputs(probe, [node])[node] if node is not None else None
                finally:  # the working copy is shared by every row
                    work.set_weights(info.name, {"kernel": original})
            else:
                one = dataclasses.replace(stage, sparsity=ratio, layers=LayerSelector(names=(info.name,)))
                try:
                    with warnings.catch_warnings():  # groups left whole: the error below or the row says it
                        warnings.simplefilter("ignore", SlimkitWarning)
                        result = method.pruner(work, [info], one, PruneContext("analyze.layers", sample, None, seed)
                                               ).one_shot()
                except SlimkitError as exc:  # a layer the method cannot prune alone (the model's output)
                    notes.append(f"{info.name}: not pruned by {stage.method}: {exc}")
                    break
                metric, drop = scorer(result)
                got = None  # fewer channels: no output to compare value by value
            sqnr, cos = _error(refs.get(node), got)
            rows.append(progress.row(SensitivityRow(info.name, info.kind, "prune", float(ratio), metric, drop,
                                                    sqnr, cos)))
    return rows


# -------------------------------------------------------------------------------------- quantization
def _quant_stage(recipe: Recipe, settings: Analyze) -> QuantizeStage:
    """The recipe's quantize stage as quantize rows apply it: post-training, over ``settings.samples``."""
    own = next((s for s in recipe.stages if isinstance(s, QuantizeStage)), None)
    if own is None:
        own = Recipe.load(_DEFAULT_RECIPE).stages[0]
    if own.method not in _AS_IS:
        own = dataclasses.replace(own, method="static", options=None, fine_tune=None, distill=None)
    if settings.samples is not None:
        own = dataclasses.replace(own, activations=dataclasses.replace(own.activations, samples=settings.samples))
    return own


def _quant_layers(work: ModelAdapter, stage: QuantizeStage, settings: Analyze) -> list[str] | None:
    """The selected layers the quantize method handles; None when quantize rows are off or there are none."""
    if settings.quantize is None:
        return None
    try:
        return [info.name for info in select_layers(work.layers(), settings.layers, quant_method(stage).kinds,
                                                    "analyze.layers")]
    except SlimkitError:
        return None


def _quant_rows(fresh: ModelAdapter, stage: QuantizeStage, settings: Analyze, scorer: _Scorer, sample: Any,
                probe: Any, progress: _Progress, notes: list[str]) -> list[SensitivityRow]:
    prepared = prepare(fresh, stage, "analyze", sample)
    notes += [f"{name}: not quantized (no node of its own in the graph)" for name in prepared.skipped]
    method = quant_method(stage)
    act_spec = method.activation_spec(stage.activations)
    fixed = [a.node for a in prepared.plan.acts if not mode_of(a.spec.mode).runtime_range]
    ranges = calibrate_recording(prepared.adapter, fixed, sample, stage.activations, "analyze",
                                 verbose=False).ranges if fixed else {}
    acts = calibrated_acts(prepared.plan, ranges)
    nodes = {s.layer: s.output or s.node for s in prepared.plan.layers}
    refs = prepared.adapter.layer_outputs(probe, sorted(set(nodes.values()))) if probe is not None else {}
    infos = {info.name: info for info in prepared.layers}
    rows = []
    for site in prepared.plan.layers:
        info = infos[site.layer]
        for bits in settings.quantize.bits:
            spec = site.kernel
            if bits != spec.bits:
                w = dataclasses.replace(weight_settings(stage, info), bits=bits)
                spec = kernel_spec(w, info, method.kernel_mode(w))
            plan = plan_sites(prepared.graph, {site.layer: spec}, act_spec, stage.method, method.quantizes_outputs)
            own = {a.node: acts[a.node] for a in plan.acts if a.node in acts}
            params = {**own, **weight_params(prepared.adapter, plan, own)}
            sim = finish(prepared.adapter, plan, params)
            metric, drop = scorer(sim)
            sqnr = cos = None
            if probe is not None:
                node = nodes[site.layer]
                got = on_grid(sim.layer_outputs(probe, [node])[node], params.get(node))
                sqnr, cos = _error(refs[node], got)
            rows.append(progress.row(SensitivityRow(site.layer, info.kind, "quantize", float(bits), metric, drop,
                                                    sqnr, cos)))
    return rows
