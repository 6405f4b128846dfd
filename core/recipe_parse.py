"""Recipe parsing: a mapping (from YAML or a dict) -> the validated dataclasses of :mod:`slimkit.recipe`.

Every parser takes the raw value and its field path and returns a typed value or raises a
RecipeError naming the path. Plugin names and their options (optimizers, pruning and quantization
methods, criteria, observers, fake-quant modes) are validated from their registries.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from slimkit.errors import NotSupportedYetError, RecipeError
from slimkit.optim import OPTIMIZERS
from slimkit.plugins import parse_options
from slimkit.recipe_effects import check_effects
from slimkit.recipe_fields import (
    boolean as _bool, build as _build, check_kind as _check_kind, choice as _choice, integer as _int, join as _join,
    keys as _keys, number as _float, selector as _selector, str_list as _str_list,
)
from slimkit.reprs import short_repr
from slimkit.recipe import (
    LAYER_KINDS, LOSSES, MAX_OPSET, MIN_OPSET, SCHEDULE_KINDS, SCOPES, ActivationQuant, Distill, DistillStage, FineTune,
    Distributed, Hint, LayerSelector, OnnxExport, PruneOverride, PruneStage, QuantizeStage, QuantOverride, Recipe, Regularize,
    Schedule,
    WeightQuant,
)

#: Upper bounds of integer fields, where the frameworks bound them or a larger value can only be a
#: mistake (a run that never ends). ``seed``: numpy's and Keras' seeds are 32-bit.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 2**20
MAX_SAMPLES = 2**20  # calibration inputs; calibration memory does not grow with them, time does
MAX_EVERY = 10**6    # schedule.every, in optimizer steps


def _fine_tune(raw: Any, path: str, base: FineTune) -> FineTune | None:
    if raw is None:
        return None
    raw = _keys(raw, path, _FINE_TUNE_KEYS)
    if "optimizer" in raw:
        base = _optimizer(raw["optimizer"], _join(path, "optimizer"), base)
        raw = {k: v for k, v in raw.items() if k != "optimizer"}
    return _build(FineTune, raw, path, base, {
        "epochs": lambda v, p: _int(v, p, lo=0, hi=MAX_EPOCHS),
        "batch_size": lambda v, p: _int(v, p, lo=1, hi=MAX_BATCH_SIZE),
        "learning_rate": lambda v, p: _float(v, p, 0.0, 10.0, lo_open=True),
        "loss": lambda v, p: _choice(v, p, LOSSES),
        "from_logits": _bool,
        "shuffle": _bool,
        "sync_batchnorm": _bool,
    })


_FINE_TUNE_KEYS = ("epochs", "batch_size", "optimizer", "learning_rate", "loss", "from_logits", "shuffle",
                   "sync_batchnorm")


def _distributed(raw: Any, path: str) -> Distributed:
    return _build(Distributed, raw, path, Distributed(), {
        "timeout_s": lambda v, p: _float(v, p, 1.0, 86400.0),
    })


def _optimizer(raw: Any, path: str, base: FineTune) -> FineTune:
    """``optimizer: adam`` (its defaults) or ``optimizer: {name: sgd, momentum: 0.8, ...}``.

    A mapping without ``name`` overlays its keys on the inherited optimizer's options; with another
    optimizer's ``name`` it starts from that optimizer's defaults.
    """
    if isinstance(raw, str):
        OPTIMIZERS.get(raw, path)
        return dataclasses.replace(base, optimizer=raw, optimizer_options=None)
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected an optimizer name or a mapping with name and options, got {short_repr(raw)}")
    name = raw.get("name", base.optimizer)
    entry = OPTIMIZERS.get(name, _join(path, "name"))
    inherited = base.optimizer_options if name == base.optimizer else None
    options = parse_options(entry.options, {k: v for k, v in raw.items() if k != "name"}, path, inherited,
                            also_allowed=("name",))
    if getattr(options, "nesterov", False) and not getattr(options, "momentum", 0.0) > 0:
        raise RecipeError(f"{path}.nesterov: nesterov momentum needs momentum > 0")
    return dataclasses.replace(base, optimizer=name, optimizer_options=options)


def _schedule(raw: Any, path: str) -> Schedule:
    sched = _build(Schedule, raw, path, Schedule(), {
        "kind": lambda v, p: _choice(v, p, SCHEDULE_KINDS),
        "begin": lambda v, p: _float(v, p, 0.0, 1.0),
        "end": lambda v, p: _float(v, p, 0.0, 1.0),
        "every": lambda v, p: _int(v, p, lo=1, hi=MAX_EVERY),
        "initial": lambda v, p: _float(v, p, 0.0, 1.0, hi_open=True),
        "power": lambda v, p: _float(v, p, 0.0, 100.0, lo_open=True),
    })
    if sched.end < sched.begin and sched.kind != "constant":  # a constant schedule has no end
        raise RecipeError(f"{path}.end: {sched.end:g} is before {path}.begin {sched.begin:g}")
    return sched


def _prune(raw: Any, path: str, layers: LayerSelector, fine_tune: FineTune | None) -> PruneStage:
    from slimkit.pruning.methods import PRUNING_METHODS

    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected a mapping, got {type(raw).__name__} {short_repr(raw)}")
    name = raw.get("method", "magnitude")
    entry = PRUNING_METHODS.get(name, _join(path, "method"))
    cls = entry.impl
    common = ("method",) + (("sparsity",) if cls.takes_sparsity else ()) + \
        (("scope",) if cls.takes_scope else ()) + ("schedule", "layers", "fine_tune", "regularize", "distill",
                                                    "overrides")
    own = tuple(f.name for f in dataclasses.fields(entry.options))
    raw = _keys(raw, path, common + own)
    options = parse_options(entry.options, {k: v for k, v in raw.items() if k in own}, path)
    method = cls(options)
    method.check(path)
    implied = method.implied_sparsity()
    if implied is not None:
        sparsity = implied
    elif "sparsity" not in raw:
        raise RecipeError(f"{_join(path, 'sparsity')}: required key is missing")
    else:
        sparsity = _float(raw["sparsity"], _join(path, "sparsity"), 0.0, 1.0, hi_open=True)
    scope = _choice(raw.get("scope", "layer"), _join(path, "scope"), SCOPES)
    regularize = _regularize(raw.get("regularize", {}), _join(path, "regularize"))
    # A penalty must act before channels are chosen by what it shapes: by default it runs over the first
    # half of fine-tuning, the channels are chosen at once at mid-training, the second half recovers.
    default_schedule = SLIMMING_SCHEDULE if regularize.active else Schedule()
    schedule = _schedule(raw["schedule"], _join(path, "schedule")) if "schedule" in raw else default_schedule
    if schedule.initial > sparsity:
        raise RecipeError(
            f"{path}.schedule.initial: {schedule.initial:g} exceeds the target sparsity {sparsity:g}"
        )
    stage_layers = _selector(raw["layers"], _join(path, "layers"), layers) if "layers" in raw else layers
    stage_ft = fine_tune
    if "fine_tune" in raw:
        stage_ft = _fine_tune(raw["fine_tune"], _join(path, "fine_tune"), fine_tune or FineTune())
    if cls.needs_fine_tune and (stage_ft is None or stage_ft.epochs == 0):
        got = "fine_tune is null" if stage_ft is None else "fine_tune.epochs is 0"
        raise RecipeError(f"{_join(path, 'fine_tune')}: method {name} works while fine-tuning, so the stage must "
                          f"fine-tune ({got}); give it fine_tune with epochs >= 1")
    distill = _stage_distill(raw, path, stage_ft)
    overrides = _prune_overrides(raw, path, name, cls, schedule)
    return PruneStage(name, sparsity, scope, schedule, stage_layers, stage_ft, options, regularize, distill,
                      overrides)


def _prune_overrides(raw: Mapping[str, Any], path: str, name: str, cls: Any,
                     schedule: Schedule) -> tuple[PruneOverride, ...]:
    """A prune stage's ``overrides``: ``[{layers: {...}, sparsity: 0.2}, ...]``, later ones winning.

    A selector starts from every layer (``names: ["*"]``), not from the stage's, as the quantize
    stage's overrides do; whether it picks one of the stage's layers is checked against the model."""
    if "overrides" not in raw:
        return ()
    where = _join(path, "overrides")
    if not cls.takes_overrides:
        from slimkit.pruning.methods import PRUNING_METHODS

        implied = " (its sparsity is implied by its options)" if not cls.takes_sparsity else ""
        takers = [m for m in PRUNING_METHODS.names() if PRUNING_METHODS.get(m).impl.takes_overrides]
        raise RecipeError(f"{where}: method {name} prunes every layer alike{implied} and takes no per-layer "
                          f"overrides; remove them, or use a method that does ({', '.join(takers)})")
    items = raw["overrides"]
    if not isinstance(items, list):
        raise RecipeError(f"{where}: expected a list of {{layers, sparsity}}, got {short_repr(items)}")
    overrides = []
    for j, item in enumerate(items):
        here = f"{where}[{j}]"
        item = _keys(item, here, ("layers", "sparsity"))
        missing = [key for key in ("layers", "sparsity") if key not in item]
        if missing:
            raise RecipeError(f"{here}.{missing[0]}: required key is missing (an override is {{layers, sparsity}})")
        sparsity = _float(item["sparsity"], f"{here}.sparsity", 0.0, 1.0, hi_open=True)
        if schedule.initial > sparsity:
            raise RecipeError(f"{here}.sparsity: {sparsity:g} is below the schedule's initial sparsity "
                              f"{schedule.initial:g} ({path}.schedule.initial); each layer's schedule starts there")
        overrides.append(PruneOverride(_selector(item["layers"], f"{here}.layers", LayerSelector()), sparsity))
    return tuple(overrides)


#: The schedule of a stage with a ``regularize`` penalty and no schedule of its own.
SLIMMING_SCHEDULE = Schedule(kind="constant", begin=0.5)


def _regularize(raw: Any, path: str) -> Regularize:
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected a mapping such as {{bn_l1: 0.5}}, got {short_repr(raw)}")
    return parse_options(Regularize, raw, path)


def _weight_quant(raw: Any, path: str, base: WeightQuant) -> WeightQuant:
    return _mode_bits(_build(WeightQuant, raw, path, base, {
        "bits": lambda v, p: _bits(v, p),
        "per_channel": _bool,
        "symmetric": _bool,
        "reduce_range": _bool,
        "learn": lambda v, p: _learn(v, p, "weights"),
    }), path)


def _bits(raw: Any, path: str) -> int:
    bits = _int(raw, path)
    if not 1 <= bits <= 8:
        raise RecipeError(f"{path}: {bits} bits is not supported; quantization simulates 2 to 8 bits "
                          "(1 bit with learn: bnn or dorefa)")
    return bits


def _mode_bits(quant: Any, path: str) -> Any:
    """``quant`` (weights or activations settings) if its ``bits`` are within what its ``learn`` mode
    simulates (:attr:`slimkit.quant.modes.Mode.bits`)."""
    from slimkit.quant.modes import QUANT_MODES

    lo, hi = QUANT_MODES.get(quant.learn).impl.bits
    if not lo <= quant.bits <= hi:
        takes = f"exactly {lo} bit" if lo == hi else f"{lo} to {hi} bits"
        hint = " (1 bit: learn bnn or dorefa)" if quant.bits < lo else ""
        raise RecipeError(f"{path}.bits: learn {quant.learn} simulates {takes}, got {quant.bits}{hint}")
    return quant


def _learn(raw: Any, path: str, role: str) -> str:
    """A fake-quant mode that QAT may use for ``role`` (``weights`` or ``activations``)."""
    from slimkit.quant.modes import QUANT_MODES

    allowed = tuple(sorted(n for n in QUANT_MODES.names() if role in QUANT_MODES.get(n).impl.learnable_for))
    return _choice(raw, path, allowed)


def _calibration(raw: Any, path: str, base: ActivationQuant) -> ActivationQuant:
    """``calibration: entropy`` or ``calibration: {name: mse, candidates: 200}`` (a registered observer)."""
    from slimkit.quant.observers import OBSERVERS

    if isinstance(raw, Mapping):
        name = raw.get("name", base.calibration)
        entry = OBSERVERS.get(name, _join(path, "name"))
        inherited = base.calibration_options if name == base.calibration else None
        options = parse_options(entry.options, {k: v for k, v in raw.items() if k != "name"}, path, inherited,
                                also_allowed=("name",))
        return dataclasses.replace(base, calibration=name, calibration_options=options)
    OBSERVERS.get(raw, path)
    return dataclasses.replace(base, calibration=raw, calibration_options=None)


def _act_quant(raw: Any, path: str) -> ActivationQuant:
    raw = _keys(raw, path, _ACT_KEYS)
    base = ActivationQuant()
    if "calibration" in raw:
        base = _calibration(raw["calibration"], _join(path, "calibration"), base)
    return _mode_bits(_build(ActivationQuant, {k: v for k, v in raw.items() if k != "calibration"}, path, base, {
        "bits": lambda v, p: _bits(v, p),
        "symmetric": _bool,
        "signed": _bool,
        "samples": lambda v, p: _int(v, p, lo=1, hi=MAX_SAMPLES),
        "percentile": lambda v, p: _float(v, p, 50.0, 100.0, lo_open=True),
        "learn": lambda v, p: _learn(v, p, "activations"),
        "momentum": lambda v, p: _float(v, p, 0.0, 1.0, hi_open=True),
    }), path)


_ACT_KEYS = ("bits", "symmetric", "signed", "calibration", "samples", "percentile", "learn", "momentum")


_QUANT_KEYS = ("distill", "method", "weights", "activations", "layers", "fine_tune", "fold_batchnorm", "overrides")


def _quantize(raw: Any, path: str, layers: LayerSelector, fine_tune: FineTune | None) -> QuantizeStage:
    from slimkit.quant.methods import QUANT_METHODS

    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected a mapping, got {type(raw).__name__} {short_repr(raw)}")
    name = raw.get("method", "static")
    entry = QUANT_METHODS.get(name, _join(path, "method"))
    own = tuple(f.name for f in dataclasses.fields(entry.options))
    raw = _keys(raw, path, _QUANT_KEYS + own)
    options = parse_options(entry.options, {k: v for k, v in raw.items() if k in own}, path)
    method = entry.impl(options)
    weights = _weight_quant(raw.get("weights", {}), _join(path, "weights"), WeightQuant())
    acts = _act_quant(raw.get("activations", {}), _join(path, "activations"))
    stage_layers = _selector(raw["layers"], _join(path, "layers"), layers) if "layers" in raw else layers
    overrides = []
    raw_over = raw.get("overrides", [])
    if not isinstance(raw_over, list):
        raise RecipeError(f"{path}.overrides: expected a list of {{layers, weights}}, got {short_repr(raw_over)}")
    for i, item in enumerate(raw_over):
        where = f"{path}.overrides[{i}]"
        item = _keys(item, where, ("layers", "weights"))
        if "layers" not in item or "weights" not in item:
            raise RecipeError(f"{where}: needs both layers and weights")
        overrides.append(QuantOverride(_selector(item["layers"], f"{where}.layers", LayerSelector()),
                                       _weight_quant(item["weights"], f"{where}.weights", weights)))
    if method.trains:
        stage_ft = fine_tune
        if "fine_tune" in raw:
            stage_ft = _fine_tune(raw["fine_tune"], _join(path, "fine_tune"), fine_tune or FineTune())
    else:
        if raw.get("fine_tune") is not None:
            raise RecipeError(f"{path}.fine_tune: {name} quantization is post-training; only methods that "
                              "train take fine_tune")
        stage_ft = None
    fold = _bool(raw.get("fold_batchnorm", True), _join(path, "fold_batchnorm"))
    distill = _stage_distill(raw, path, stage_ft)
    stage = QuantizeStage(name, weights, acts, stage_layers, stage_ft, fold, tuple(overrides), options, distill)
    method.check(stage, path)
    return stage


_DISTILL_KEYS = ("teacher", "temperature", "alpha", "hints", "teacher_outputs")


def _hints(raw: Any, path: str) -> tuple[Hint, ...]:
    if not isinstance(raw, list):
        raise RecipeError(f"{path}: expected a list of {{teacher, student, weight}}, got {short_repr(raw)}")
    hints = []
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        item = _keys(item, where, ("teacher", "student", "weight"))
        for key in ("teacher", "student"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise RecipeError(f"{where}.{key}: expected a layer name, got {short_repr(item.get(key))}")
        weight = _float(item.get("weight", 1.0), f"{where}.weight", 0.0, 1e6, lo_open=True)
        hints.append(Hint(item["teacher"], item["student"], weight))
    return tuple(hints)


def _distill(raw: Any, path: str) -> Distill:
    if raw is None:
        raw = {}
    return _build(Distill, raw, path, Distill(), {
        "teacher": lambda v, p: _teacher_file(v, p),
        "temperature": lambda v, p: _float(v, p, 0.0, 1e3, lo_open=True),
        "alpha": lambda v, p: _float(v, p, 0.0, 1.0),
        "hints": _hints,
        "teacher_outputs": lambda v, p: None if v is None else _choice(v, p, ("logits", "probabilities")),
    })


def _teacher_file(raw: Any, path: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise RecipeError(f"{path}: expected a file name (ONNX, .keras, or a folder slimkit saved), or leave it "
                          f"out and pass compress(..., teacher=model); got {short_repr(raw)}")
    return raw


def _stage_distill(raw: Mapping[str, Any], path: str, fine_tune: FineTune | None) -> Distill | None:
    """A prune or quantize stage's own ``distill`` key: distillation in the stage's fine-tuning."""
    if "distill" not in raw or raw["distill"] is False:
        return None
    where = _join(path, "distill")
    if fine_tune is None or fine_tune.epochs == 0:
        raise RecipeError(f"{where}: has no effect here: the stage does not fine-tune (distillation is a "
                          "training loss); give the stage a fine_tune, or remove it")
    return _distill({} if raw["distill"] is True else raw["distill"], where)


def _distill_stage(raw: Any, path: str, layers: LayerSelector, fine_tune: FineTune | None) -> DistillStage:
    raw = _keys(raw if raw is not None else {}, path, _DISTILL_KEYS + ("fine_tune",))
    stage_ft = fine_tune
    if "fine_tune" in raw:
        stage_ft = _fine_tune(raw["fine_tune"], _join(path, "fine_tune"), fine_tune or FineTune())
    if stage_ft is None or stage_ft.epochs == 0:
        raise RecipeError(f"{_join(path, 'fine_tune')}: a distill stage trains the student; it needs fine_tune "
                          "with epochs > 0")
    spec = _distill({k: v for k, v in raw.items() if k != "fine_tune"}, path)
    return DistillStage(spec, stage_ft, layers)


def _stage(raw: Any, path: str, layers: LayerSelector, fine_tune: FineTune | None) -> PruneStage | QuantizeStage | DistillStage:
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise RecipeError(f"{path}: a stage is a mapping with exactly one key (prune, quantize or distill), got "
                          f"{short_repr(raw)}")
    (kind, body), = raw.items()
    if kind == "distill":
        return _distill_stage(body, f"{path}.distill", layers, fine_tune)
    if kind == "quantize":
        return _quantize(body, f"{path}.quantize", layers, fine_tune)
    if kind != "prune":
        raise RecipeError(f"{path}: unknown stage {kind!r}; known stages are prune, quantize, distill")
    return _prune(body, f"{path}.prune", layers, fine_tune)


def _export(raw: Any, path: str) -> OnnxExport:
    raw = _keys(raw, path, ("onnx",))
    return _build(OnnxExport, raw.get("onnx", {}), _join(path, "onnx"), OnnxExport(), {
        "opset": lambda v, p: _int(v, p, lo=MIN_OPSET, hi=MAX_OPSET),
        "verify": _bool,
        "tolerance": lambda v, p: _float(v, p, 0.0, 1.0, lo_open=True),
        "quant_tolerance": lambda v, p: _float(v, p, 0.0, 1.0, lo_open=True),
        "quant_error_ratio": lambda v, p: _float(v, p, 1.0, 100.0),
    })


_TOP_KEYS = ("version", "seed", "layers", "fine_tune", "stages", "analyze", "tune", "export", "distributed")


def _inherit_teachers(stages: tuple[Any, ...]) -> tuple[Any, ...]:
    """A distill setting that names no teacher takes the file the previous one named (one teacher file
    for a prune -> distill -> QAT pipeline); with none named before, it is compress's ``teacher=``."""
    out, last = [], None
    for stage in stages:
        spec = getattr(stage, "distill", None)
        if spec is not None:
            if spec.teacher is None and last is not None:
                stage = dataclasses.replace(stage, distill=dataclasses.replace(spec, teacher=last))
            last = stage.distill.teacher or last
        out.append(stage)
    return tuple(out)


def parse_recipe(raw: Mapping[str, Any]) -> Recipe:
    raw = _keys(raw, "recipe", _TOP_KEYS)
    version = _int(raw.get("version", 1), "version")
    if version != 1:
        raise RecipeError(f"version: {version} is not supported; this slimkit reads version 1")
    seed = _int(raw.get("seed", 0), "seed", lo=0, hi=MAX_SEED)
    layers = _selector(raw.get("layers", {}), "layers", LayerSelector())
    fine_tune = _fine_tune(raw.get("fine_tune", {}), "fine_tune", FineTune())
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise RecipeError(f"stages: expected a non-empty list of stages, got {short_repr(stages_raw)}")
    stages = tuple(_stage(s, f"stages[{i}]", layers, fine_tune) for i, s in enumerate(stages_raw))
    quant = [i for i, s in enumerate(stages) if isinstance(s, QuantizeStage)]
    if len(quant) > 1:
        raise RecipeError(f"stages[{quant[1]}]: only one quantize stage is allowed (stages[{quant[0]}] is one)")
    stages = _inherit_teachers(stages)
    after = [i for i, s in enumerate(stages) if isinstance(s, DistillStage) and quant and i > quant[0]]
    if after:
        raise RecipeError(f"stages[{after[0]}].distill: a distill stage cannot follow the quantize stage "
                          f"(stages[{quant[0]}]): training would move weights off their fixed int8 grid. Distill "
                          "before quantizing, or distill while quantizing: quantize with method qat and a "
                          "distill key in that stage")
    later = [i for i, s in enumerate(stages) if isinstance(s, PruneStage) and quant and i > quant[0]]
    if later:
        raise RecipeError(f"stages[{later[0]}]: a prune stage cannot follow the quantize stage "
                          f"(stages[{quant[0]}]); prune first, then quantize")
    export = _export(raw.get("export", {}), "export")
    from slimkit.tune.analyze_recipe import parse_analyze  # these parsers import this module's helpers
    from slimkit.tune.recipe import parse_tune

    analyze = parse_analyze(raw.get("analyze"), "analyze", layers)
    tune = parse_tune(raw.get("tune"), "tune", stages)
    recipe = Recipe(version, seed, layers, fine_tune, stages, export, analyze, tune,
                    distributed=_distributed(raw.get("distributed", {}), "distributed"))
    check_effects(raw, recipe)
    return recipe
