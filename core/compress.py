"""``slimkit.compress``: runs a recipe's stages over a copy of the user's model and reports."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from slimkit import checks, memory
from slimkit.adapter import FitFn, HookChain, ModelAdapter, TrainHooks
from slimkit.adapter.collective import LOCAL, Collective, joined, on_writer
from slimkit.data import (PROBE_BATCH, as_arrays, as_inputs, first_sample, head, is_array_pair, n_samples,
                          without_labels)
from slimkit.errors import DataError, NotSupportedYetError, SlimkitWarning
from slimkit.export import export_with_report
from slimkit.metrics import evaluate
from slimkit import progress as _progress
from slimkit.progress import ProgressPrinter
from slimkit.pruning.methods import PruneContext
from slimkit.pruning.methods import method_of as prune_method
from slimkit.pruning.methods import zeroes_kernels
from slimkit.pruning.ratios import check_overrides, layer_ratios, requested_share
from slimkit.quant.methods import QuantContext
from slimkit.quant.methods import method_of as quant_method
from slimkit.quant.fallback import MIN_QUANT_CORRELATION, output_correlation
from slimkit.quant.known_outputs import KnownOutputs, model_digest, outputs_on
from slimkit.quant.plan import float_between_sites
from slimkit.quant.weight_only import snap_weight_only
from slimkit.quant.stage import Prepared, prepare, quant_rows
from slimkit.distill.objective import DistillObjective
from slimkit.distill.stage import Teachers, run_distill_stage
from slimkit.recipe import Distill, DistillStage, FineTune, PruneStage, QuantizeStage, Recipe
from slimkit.registry import adapter_class
from slimkit.report import FileRow, LayerRow, Report, StageRow
from slimkit.selection import select_layers


@dataclass
class CompressionResult:
    """What :func:`compress` returns.

    Attributes:
        model: the compressed model, a plain model of the input's framework.
        report: per-layer sparsity, metrics before/after, sizes, exported files.
        recipe: the validated recipe that produced it.
        sample: input samples kept for export and verification (None if no numpy data was given).
    """

    model: Any
    report: Report
    recipe: Recipe
    sample: np.ndarray | None
    #: the quantize stage's float and simulated outputs on the first samples, which export reuses
    known: KnownOutputs | None = field(default=None, repr=False, compare=False)
    #: the distributed job that produced it: only its writer rank writes files
    collective: Collective = field(default=LOCAL, repr=False, compare=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Saves the compressed model into the folder ``path``, loadable with :func:`slimkit.load`
        (safely: safetensors for PyTorch, Keras safe mode); see :mod:`slimkit.saving`. In a distributed
        job rank 0 writes it and every rank returns once it is written."""
        from slimkit.saving import save

        return on_writer(self.collective, str(path), lambda: save(self.model, path)) or Path(path)

    def export_onnx(self, path: str | os.PathLike[str], sample: Any = None) -> FileRow | None:
        """Exports the compressed model with the recipe's export settings, verified in onnxruntime.

        Args:
            path: destination file, written atomically.
            sample: inputs for tracing and verification; defaults to samples kept from the data.

        In a distributed job rank 0 writes and verifies the file, and every rank returns once it is
        written: the row on rank 0, None on the others.
        """
        own = sample is None  # the samples compress() ran through this model: known to fit it
        sample = self.sample if sample is None else sample
        if sample is None:
            raise DataError("sample: no numpy data was given to compress(); pass sample= to export_onnx")
        done = on_writer(self.collective, str(path), lambda: export_with_report(
            self.model, path, sample, self.recipe.export, self.known, checked=own))
        if done is None:
            return None
        row, quant_row = done
        self.report.files.append(row)
        if quant_row is not None:
            self.report.quant_exports.append(quant_row)
        return row


def compress(
    model: Any,
    recipe: Recipe | dict[str, Any] | str | os.PathLike[str],
    train_data: Any = None,
    calib_data: Any = None,
    eval_data: Any = None,
    eval_fn: Callable[[Any], float] | None = None,
    fit_fn: FitFn | None = None,
    verbose: bool = True,
    teacher: Any = None,
) -> CompressionResult:
    """Compresses a copy of ``model`` as ``recipe`` says; the user's model is never modified.

    Args:
        model: a keras.Model or torch.nn.Module.
        recipe: a Recipe, dict, YAML string or path to a YAML file.
        train_data: ``(x, y)`` numpy arrays, a tf.data.Dataset or a torch DataLoader, for fine-tuning.
        calib_data: inputs for calibration and export samples; defaults to the training inputs.
        eval_data: ``(x, y)`` for the before/after metrics in the report.
        eval_fn: ``callable(model) -> float`` (higher is better), reported as ``eval_fn``.
        fit_fn: replaces the built-in training loop: ``fit_fn(model, callback)``; see
            :data:`slimkit.adapter.FitFn` for what ``callback`` is.
        verbose: show progress (bars on a terminal, lines elsewhere; see :mod:`slimkit.progress`);
            False shows nothing for this call.
        teacher: the teacher of ``distill`` settings that name no file: a model of ``model``'s framework
            (only run, in inference mode; never changed), or a file name.

    Returns:
        The compressed model, its report, and an ``export_onnx`` method.

    Raises:
        RecipeError: a malformed recipe or a selector that matches no layer.
        DataError: data missing, empty or of the wrong shape.
        UnsupportedModelError: the model is not a Keras or PyTorch model, or cannot be copied.
    """
    # bars left open by an exception are closed on the way out; freed tensors' memory is reused (memory.py)
    with _progress.session(), memory.steady_heap():
        recipe = Recipe.load(recipe)
        cls = adapter_class(model)
        original = cls(model)
        coll = original.collective(recipe.distributed)
        if recipe.tune is not None:  # a search over the recipe's settings, each trial a compress() of its own
            from slimkit.tune.run import tune_compress

            if coll.size > 1:  # each rank would measure its own trials and the searches would part ways
                raise NotSupportedYetError(f"tune: tuning inside a distributed job ({coll.size} ranks) is not "
                                           "supported; run the tuner in one process, then the recipe it returns in "
                                           "the job")
            return tune_compress(model, recipe, train_data, calib_data, eval_data, eval_fn, fit_fn, verbose, teacher)
        if recipe.analyze is not None:
            warnings.warn("analyze: compress() does not read this section; slimkit.sensitivity() and the tuner's "
                          "strategies (with tune:) do", SlimkitWarning, stacklevel=2)
        with joined(coll):  # only the writer rank shows progress; the others' output would repeat it
            try:
                return _compress(cls, original, model, recipe, train_data, calib_data, eval_data, eval_fn, fit_fn,
                                 verbose and coll.is_writer, teacher, coll)
            except BaseException as exc:  # the other ranks' errors name this one
                coll.announce(exc)
                raise


def _compress(cls: type[ModelAdapter], original: ModelAdapter, model: Any, recipe: Recipe, train_data: Any,
              calib_data: Any, eval_data: Any, eval_fn: Callable[[Any], float] | None, fit_fn: FitFn | None,
              verbose: bool, teacher: Any, coll: Collective) -> CompressionResult:
    """:func:`compress` after the recipe is loaded and the job's collective is known."""
    _check_train_data(original, recipe, train_data, fit_fn)
    metrics_before = evaluate(original, eval_data, eval_fn)

    sample = first_sample(calib_data, train_data, eval_data, 1024)

    work = cls.copy_of(model)
    work.seed(recipe.seed)
    report = Report(framework=cls.framework, metrics_before=metrics_before)
    targets: dict[str, float] = {}
    known: KnownOutputs | None = None
    teachers = Teachers(teacher, cls, recipe.source)
    for index, stage in enumerate(recipe.stages):
        context = _StageContext(index, len(recipe.stages), train_data, fit_fn, verbose, sample, recipe.seed,
                                teachers)
        if isinstance(stage, DistillStage):
            work, row = run_distill_stage(work, stage, context, report)
            known = None
        elif isinstance(stage, QuantizeStage):
            start = time.perf_counter()
            # Handed over (the list is the only holder): folding made a new model, so the one before it goes
            # now, and the stage drops the folded one once it is done with it, before the fidelity run. Models
            # held while TensorFlow runs one stay in its allocator's pool for good (0.2 GB on a Keras ResNet50).
            handed = [prepare(work, stage, f"stages[{index}].quantize", sample, tuple(targets))]
            work = None
            work, row, known = _run_quant_stage(handed, stage, context, report, start)
        else:
            work, row = _run_prune_stage(work, stage, context, report)
            known = None  # the model changed after the outputs were computed
            if prune_method(stage).sets_kernel_sparsity:  # a channel ratio is not a kernel sparsity target
                targets.update(layer_ratios(stage, [i for i in work.layers() if i.name in row.layers]))
        report.stages.append(row)
        _progress.debug(f"stage {index + 1}/{len(recipe.stages)} {stage.name}: {row.seconds:.2f}s, "
                        f"{row.steps} steps")

    compressed = cls(work.strip())
    if known is not None:  # export reuses the outputs while the returned model still holds these arrays
        known = dataclasses.replace(known, digest=model_digest(compressed))
    report.metrics_after = evaluate(compressed, eval_data, eval_fn)
    # each layer's size in the user's model: what channel pruning shrank it from (the report's shares)
    sizes = {info.name: sum(int(np.prod(shape)) for shape in info.shapes.values()) for info in original.layers()}
    report.layers = [dataclasses.replace(row, params_before=sizes.get(row.name))
                     for row in _layer_rows(compressed, targets)]
    # zlib sizes show what zeroed kernel entries save. Recipes that leave no zeros (quantize-only: the
    # deployed size is the int8 file's; channel pruning: removed channels already shrink the fp32 bytes)
    # skip compressing every weight twice, seconds for a ResNet50 and most of a channel-pruning run.
    pruned = zeroes_kernels(recipe.stages)
    before, after = _weight_sizes(original, pruned), _weight_sizes(compressed, pruned)
    report.weight_bytes = {"fp32 before": before[0], "fp32 after": after[0]}
    if pruned:
        report.weight_bytes.update({"zlib before": before[1], "zlib after": after[1]})
    report.collective = coll  # to_json/to_html write on the writer rank only
    return CompressionResult(compressed.model, report, recipe, None if sample is None else head(sample, 16), known,
                             coll)


def _check_train_data(adapter: ModelAdapter, recipe: Recipe, train_data: Any, fit_fn: FitFn | None) -> None:
    trains = [i for i, s in enumerate(recipe.stages) if s.fine_tune is not None and s.fine_tune.epochs > 0]
    if trains and train_data is None and fit_fn is None:
        raise DataError(
            f"train_data: required because stages[{trains[0]}] fine-tunes; pass train_data=(x, y), "
            "or set fine_tune: null in the recipe for one-shot compression"
        )
    if train_data is not None and is_array_pair(train_data):
        if without_labels(train_data) and not (trains and fit_fn is None):
            x = as_inputs(train_data[0], "train_data")  # (x, None): inputs for calibration and tracing
        else:
            x, _ = as_arrays(train_data, "train_data", need_labels=True)
        adapter.check_input(x, "train_data")


@dataclass(frozen=True)
class _StageContext:
    index: int
    count: int
    train_data: Any
    fit_fn: FitFn | None
    verbose: bool
    sample: np.ndarray | None
    seed: int
    teachers: Teachers

    def objective(self, spec: Distill | None, settings: FineTune | None, field: str,
                  student: ModelAdapter) -> DistillObjective | None:
        """The stage's distillation objective, or None when the stage does not distill."""
        if spec is None or settings is None:
            return None
        return DistillObjective(self.teachers.get(spec.teacher, field), spec, settings, field, student,
                                self.sample, self.seed)


def _run_prune_stage(
    work: ModelAdapter, stage: PruneStage, ctx: _StageContext, report: Report
) -> tuple[ModelAdapter, StageRow]:
    """Runs one prune stage; returns the adapter to continue with (a rebuilt one after channel pruning)."""
    start = time.perf_counter()
    field = f"stages[{ctx.index}].prune.layers"
    method = prune_method(stage)
    layers = select_layers(work.layers(), stage.layers, method.kinds, field)
    ratios = check_overrides(stage, method.takes_overrides, layers, f"stages[{ctx.index}].prune")
    before = _matrix_counts(work)
    pruner = method.pruner(work, layers, stage, PruneContext(field, ctx.sample, ctx.train_data, ctx.seed))
    settings = stage.fine_tune
    trains = settings is not None and settings.epochs > 0
    if not trains:
        result = pruner.one_shot()
    else:
        label = f"stage {ctx.index + 1}/{ctx.count} {stage.name}"
        status = lambda: f"sparsity {pruner.current:.3f}"  # noqa: E731 - read at each epoch's line
        hooks: list[TrainHooks] = [pruner, ProgressPrinter(label, settings.epochs, status, ctx.verbose)]
        objective = ctx.objective(stage.distill, settings, f"stages[{ctx.index}].prune.distill", work)
        work.fit(ctx.train_data, settings, HookChain(*hooks), ctx.fit_fn, objective)
        result = pruner.finish()
    pruner.add_to_report(report)
    achieved, removed = _shortfall(result, stage, method, layers, before, report, field, ratios)
    row = StageRow(stage.name, tuple(layer.name for layer in layers), stage.sparsity, stage.scope,
                   trains, pruner.total_steps, time.perf_counter() - start, achieved, removed,
                   pruner.capture_seconds)
    return result, row


#: Shortfall (in points of the requested share) past which compress warns.
SHORTFALL = 0.05


def _matrix_counts(adapter: ModelAdapter) -> dict[str, tuple[int, int]]:
    """layer -> (weights in its matrices, zeros among them).

    A layer of a known kind counts the matrices magnitude pruning masks (a Keras GRU's 2-d bias is
    not one); a layer of kind ``other`` counts every weight of 2 or more dims.
    """
    counts = {}
    for info in adapter.layers():
        keys = info.maskable if info.kind != "other" else [k for k, shape in info.shapes.items() if len(shape) >= 2]
        sizes = [(int(np.prod(info.shapes[key])), key) for key in keys]
        if sizes:
            weights = adapter.read_weights(info.name)
            counts[info.name] = (sum(n for n, _ in sizes), sum(int(np.sum(weights[k] == 0)) for _, k in sizes))
    return counts


def _shortfall(result: ModelAdapter, stage: PruneStage, method: Any, layers: list[Any],
               before: dict[str, tuple[int, int]], report: Report, field: str,
               ratios: dict[str, float] | None = None) -> tuple[float | None, float | None]:
    """What the stage achieved and the share of the model's weight matrices it removed or zeroed; warns
    (SlimkitWarning, and a report note) when that falls short of the request by more than
    :data:`SHORTFALL`, naming what held it back.

    Magnitude-like methods reach their sparsity on the selected kernels exactly; asked for the whole
    model (the default selector), they fall short when weight matrices of kinds they do not prune
    (attention, recurrent, ...) hold much of it. Channel pruning falls short when groups are left
    whole; it must remove at least half the requested share of the model's parameters. With per-layer
    ``ratios`` (overrides) the requested share is their mean weighted by the layers' weights.
    """
    requested = requested_share(ratios or {}, stage.sparsity, {name: n for name, (n, _) in before.items()})
    after = _matrix_counts(result)
    total_before = sum(n for n, _ in before.values()) or 1
    if method.sets_kernel_sparsity:
        zeros_after = sum(z for _, z in after.values())
        share = zeros_after / max(1, sum(n for n, _ in after.values()))
        selected = {layer.name for layer in layers}
        kernels = [(after[n][0], after[n][1]) for n in selected if n in after]
        achieved = sum(z for _, z in kernels) / max(1, sum(n for n, _ in kernels))
        whole_model = stage.layers.names == ("*",) and not stage.layers.exclude and stage.layers.kinds is None
        if whole_model and share < requested - SHORTFALL:
            left = sorted(((n, name) for name, (n, _) in after.items() if name not in selected), reverse=True)
            names = ", ".join(f"{name} ({n} weights)" for n, name in left[:5])
            _warn(report, f"{field}: {share:.1%} of the model's weight matrices are zero, short of the requested "
                          f"{requested:.1%}: {stage.method} pruning does not reach {names}"
                          f"{', ...' if len(left) > 5 else ''}; select them by name or kind, if slimkit knows the kind")
        return achieved, share
    removed = 1.0 - sum(n for n, _ in after.values()) / total_before
    groups = [g for g in report.groups if g.producers and set(g.producers) & {layer.name for layer in layers}]
    channels = sum(g.channels for g in groups)
    achieved = (1.0 - sum(g.kept for g in groups) / channels) if channels else 0.0
    if removed < requested / 2:
        blocked = [note for note in report.notes if note.startswith("channels left whole")]
        why = "; ".join(blocked[:3]) or "the selected layers' groups are small"
        _warn(report, f"{field}: channel pruning removed {removed:.1%} of the model's weights, less than half the "
                      f"requested {requested:.1%} ({why})")
    return achieved, removed


def _covers(recorded: np.ndarray | None, sample: Any) -> bool:
    """True when the float outputs calibration recorded cover every input of the fidelity check."""
    return sample is not None and recorded is not None and \
        len(recorded) >= n_samples(head(sample, checks.fidelity_samples(recorded)))


def _fidelity(float_model: ModelAdapter | None, quantized: ModelAdapter, sample: Any, report: Report, field: str,
              outputs: tuple[np.ndarray, np.ndarray] | None = None,
              reference: np.ndarray | None = None) -> KnownOutputs | None:
    """Compares the simulated quantized model with the float one on calibration inputs (Pearson r and
    RMS error of the outputs; ``outputs`` when the method computed them already, ``reference`` the float
    outputs on the first inputs); a note always, a SlimkitWarning below :data:`MIN_QUANT_CORRELATION`.
    ``float_model`` may be None when those cover the inputs compared. Returns the outputs compared, for
    export."""
    if sample is None:
        return None
    if outputs is not None:  # computed on the first inputs, as many as the method chose
        x = head(sample, n_samples(outputs[0]))
    else:
        x = head(sample, checks.fidelity_samples(reference))
    if outputs is None:
        outputs = outputs_on(float_model, x, reference), quantized.predict(x, PROBE_BATCH)
    known = KnownOutputs(x, *outputs) if all(isinstance(o, np.ndarray) for o in outputs) else None
    ref, got = (np.asarray(o, dtype=np.float64) for o in outputs)
    r = output_correlation(ref, got)
    if r is None:
        return known
    rms = float(np.sqrt(np.mean((got - ref) ** 2)) / max(np.sqrt(np.mean(ref ** 2)), 1e-12))
    text = (f"{field}: the quantized model's outputs correlate {r:.3f} with the float model's on "
            f"{n_samples(x)} calibration inputs (RMS error "
            f"{rms:.1%} of the outputs' RMS)")
    if r >= MIN_QUANT_CORRELATION:
        report.notes.append(text)
        return known
    _warn(report, f"{text}, below {MIN_QUANT_CORRELATION}: int8 changes what this model computes. Error that "
                  "grows through many layers (deep networks that amplify small changes) needs fewer quantized "
                  "layers (layers.exclude, or a larger max_float_share for static), quantization-aware training "
                  "(method: qat), a finer calibration (activations.calibration: mse or percentile) or, on CPUs "
                  "with VNNI/AMX, full-range weights (weights.reduce_range: false)")
    return known


def _warn(report: Report, message: str) -> None:
    report.notes.append(message)
    warnings.warn(message, SlimkitWarning, stacklevel=4)


def _run_quant_stage(
    handed: list[Prepared], stage: QuantizeStage, ctx: _StageContext, report: Report, start: float
) -> tuple[ModelAdapter, StageRow, KnownOutputs | None]:
    """Runs the quantize stage on the folded and planned model: the method (calibrate, fix kernels, or
    train), then the report's rows and the fidelity check; ``start``: when the stage began (before
    :func:`~slimkit.quant.stage.prepare`).

    ``handed`` holds the prepared stage and is emptied: the folded float model is dropped before the
    fidelity run when calibration's outputs spare running it."""
    prepared = handed.pop()
    field = f"stages[{ctx.index}].quantize"
    method = quant_method(stage)
    progress = None
    if method.trains and stage.fine_tune is not None:
        progress = ProgressPrinter(f"stage {ctx.index + 1}/{ctx.count} {stage.name}", stage.fine_tune.epochs,
                                   enabled=ctx.verbose)
    objective = ctx.objective(stage.distill, stage.fine_tune, f"{field}.distill", prepared.adapter) \
        if method.trains else None
    outcome = method.run(prepared, stage, QuantContext(field, ctx.sample, ctx.train_data, ctx.fit_fn, progress,
                                                       ctx.verbose, objective))
    plan = outcome.plan or prepared.plan
    report.quant = quant_rows(plan, outcome.params, prepared.adapter, outcome.ranges)
    report.quantized = [s.layer for s in plan.layers]
    for message in outcome.warnings:
        _warn(report, f"{field}: {message}")
    chosen = set(report.quantized)
    report.weight_only = list(prepared.weight_only)
    if method.trains and report.weight_only:  # training moved them off their grid: snap again
        present = {i.name: i for i in outcome.model.layers()}
        again = [present[n] for n in report.weight_only if n in present]
        snap_weight_only(outcome.model, again)
        lost = [n for n in report.weight_only if n not in present]
        if lost:
            _warn(report, f"{field}: trained layers stored in float, short of weight-only int8 (not found again "
                          f"after training to snap them to int8): {', '.join(lost)}")
            report.weight_only = [n for n in report.weight_only if n in present]
    chosen |= set(report.weight_only)
    report.float_layers = [i.name for i in prepared.adapter.layers() if i.name not in chosen]
    sandwiched = float_between_sites(prepared.graph, plan)
    if sandwiched:
        msg = (f"{field}: layers kept float between quantized tensors ({', '.join(sandwiched)}) are quantized "
               "anyway by onnxruntime's WeightBiasQuantization when the exported model runs, so onnxruntime's "
               "output will differ from the simulation; exclude their neighbours too, or quantize them")
        report.notes.append(msg)
        warnings.warn(msg, SlimkitWarning, stacklevel=3)
    if prepared.skipped:
        msg = (f"{field}: layers left without integer kernels (weight-only int8, run in float), having no node of "
               f"their own in the model's graph (weights tied to another layer, or called more than once): "
               f"{', '.join(prepared.skipped)}")
        report.notes.append(msg)
        warnings.warn(msg, SlimkitWarning, stacklevel=3)
    # after training, the float model to compare with is the trained one, not the one before training
    reference = outcome.model.without_fake_quant() if method.trains else prepared.adapter
    # calibration's float outputs are the model before any training: a trained method compares anew
    recorded = None if method.trains else outcome.reference
    folded, plan_layers = prepared.folded, plan.layers
    if outcome.outputs is not None or _covers(recorded, ctx.sample):
        reference = None  # not run: its outputs are known
    dropped = memory.weight_bytes(prepared.adapter)
    prepared = None  # see the docstring
    memory.collect(dropped)
    known = _fidelity(reference, outcome.model, ctx.sample, report, field, outcome.outputs, recorded)
    if known is not None:
        # site moments describe the float model calibration ran: a trained model's float twin is another
        moments = None if method.trains else outcome.site_moments
        known = dataclasses.replace(known, output_grid=plan.output_grid, site_moments=moments)
    if folded:
        report.notes.append("batch norms folded: " + ", ".join(f"{bn} into {layer}" for layer, bn in folded))
    bits = sorted({s.kernel.bits for s in plan_layers})
    row = StageRow(stage.name, tuple(report.quantized), None,
                   f"w{'/'.join(map(str, bits))} a{stage.activations.bits}", method.trains, outcome.steps,
                   time.perf_counter() - start)
    return outcome.model, row, known


def _layer_rows(adapter: ModelAdapter, targets: dict[str, float]) -> list[LayerRow]:
    rows = []
    for layer in adapter.layers():
        weights = adapter.read_weights(layer.name)
        params = sum(int(w.size) for w in weights.values())
        nonzeros = sum(int(np.count_nonzero(w)) for w in weights.values())
        matrices = [weights[key] for key in layer.maskable]  # the kernel, or all of an LSTM's matrices
        rows.append(LayerRow(layer.name, layer.kind, params, nonzeros, sum(int(m.size) for m in matrices),
                             sum(int(np.count_nonzero(m)) for m in matrices), targets.get(layer.name)))
    return rows


def _weight_sizes(adapter: ModelAdapter, packed: bool = True) -> tuple[int, int]:
    """fp32 bytes of every weight and, when ``packed``, their zlib size (level 1: fast, and zeros still
    compress away; else 0), in one pass over the weights."""
    raw = size = 0
    for layer in adapter.layers():
        for w in adapter.read_weights(layer.name).values():
            raw += int(w.size) * 4
            if packed:
                size += len(zlib.compress(np.ascontiguousarray(w, dtype=np.float32).tobytes(), 1))
    return raw, size
