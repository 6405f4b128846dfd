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
from slimkit.reprs import short_repr
from slimkit.recipe import (
    LAYER_KINDS, LOSSES, MAX_OPSET, MIN_OPSET, SCHEDULE_KINDS, SCOPES, ActivationQuant, FineTune, LayerSelector, OnnxExport, PruneStage,
    QuantizeStage, QuantOverride, Recipe, Schedule, WeightQuant,
)

#: Upper bounds of integer fields, where the frameworks bound them or a larger value can only be a
#: mistake (a run that never ends). ``seed``: numpy's and Keras' seeds are 32-bit.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 2**20
MAX_SAMPLES = 2**20  # calibration inputs; calibration memory does not grow with them, time does
MAX_EVERY = 10**6    # schedule.every, in optimizer steps


def _keys(raw: Any, path: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected a mapping, got {type(raw).__name__} {short_repr(raw)}")
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise RecipeError(
            f"{path}: unknown key {short_repr(unknown[0])}; allowed keys are {', '.join(allowed)}"
        )
    return raw


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _int(raw: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RecipeError(f"{path}: expected an integer, got {short_repr(raw)}")
    if lo is not None and raw < lo:
        raise RecipeError(f"{path}: {short_repr(raw)} is below the minimum {lo}")
    if hi is not None and raw > hi:
        raise RecipeError(f"{path}: {short_repr(raw)} is above the maximum {hi}")
    return raw


def _float(raw: Any, path: str, lo: float, hi: float, hi_open: bool = False, lo_open: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise RecipeError(f"{path}: expected a number, got {short_repr(raw)}")
    try:
        value = float(raw)
    except OverflowError:  # an integer past float's range (10**400)
        value = math.inf
    if not math.isfinite(value):
        raise RecipeError(f"{path}: expected a finite number, got {short_repr(raw)}")
    bad_lo = value <= lo if lo_open else value < lo
    bad_hi = value >= hi if hi_open else value > hi
    if bad_lo or bad_hi:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise RecipeError(f"{path}: {short_repr(raw)} is outside {interval}")
    return value


def _bool(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise RecipeError(f"{path}: expected true or false, got {short_repr(raw)}")
    return raw


def _choice(raw: Any, path: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise RecipeError(f"{path}: {short_repr(raw)} is not one of {', '.join(choices)}")
    return raw


def _str_list(raw: Any, path: str, check: Callable[[str, str], None] | None = None) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(s, str) for s in raw):
        raise RecipeError(f"{path}: expected a list of strings, got {short_repr(raw)}")
    for i, item in enumerate(raw):
        if check is not None:
            check(item, f"{path}[{i}]")
    return tuple(raw)


def _check_kind(kind: str, path: str) -> None:
    _choice(kind, path, LAYER_KINDS)


def _build(cls: type, raw: Any, path: str, base: Any, fields: Mapping[str, Callable[[Any, str], Any]]) -> Any:
    """Overlays the keys present in ``raw`` on ``base`` (a dataclass instance), validating each."""
    raw = _keys(raw, path, tuple(fields))
    updates = {key: fields[key](value, _join(path, key)) for key, value in raw.items()}
    return dataclasses.replace(base, **updates) if updates else base


def _selector(raw: Any, path: str, base: LayerSelector) -> LayerSelector:
    return _build(LayerSelector, raw, path, base, {
        "names": lambda v, p: _str_list(v, p),
        "kinds": lambda v, p: None if v is None else _str_list(v, p, _check_kind),
        "exclude": lambda v, p: _str_list(v, p),
    })


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
    })


_FINE_TUNE_KEYS = ("epochs", "batch_size", "optimizer", "learning_rate", "loss", "from_logits", "shuffle")


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
    if sched.end < sched.begin:
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
        (("scope",) if cls.takes_scope else ()) + ("schedule", "layers", "fine_tune")
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
    schedule = _schedule(raw.get("schedule", {}), _join(path, "schedule"))
    if schedule.initial > sparsity:
        raise RecipeError(
            f"{path}.schedule.initial: {schedule.initial:g} exceeds the target sparsity {sparsity:g}"
        )
    stage_layers = _selector(raw["layers"], _join(path, "layers"), layers) if "layers" in raw else layers
    stage_ft = fine_tune
    if "fine_tune" in raw:
        stage_ft = _fine_tune(raw["fine_tune"], _join(path, "fine_tune"), fine_tune or FineTune())
    return PruneStage(name, sparsity, scope, schedule, stage_layers, stage_ft, options)


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


_QUANT_KEYS = ("method", "weights", "activations", "layers", "fine_tune", "fold_batchnorm", "overrides")


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
    stage = QuantizeStage(name, weights, acts, stage_layers, stage_ft, fold, tuple(overrides), options)
    method.check(stage, path)
    return stage


_NOT_YET_STAGES = ("distill",)


def _stage(raw: Any, path: str, layers: LayerSelector, fine_tune: FineTune | None) -> PruneStage | QuantizeStage:
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise RecipeError(f"{path}: a stage is a mapping with exactly one key (prune or quantize), got {short_repr(raw)}")
    (kind, body), = raw.items()
    if kind in _NOT_YET_STAGES:
        raise NotSupportedYetError(f"{path}.{kind}: the {kind!r} stage is not supported yet")
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


_TOP_KEYS = ("version", "seed", "layers", "fine_tune", "stages", "tune", "export")


def parse_recipe(raw: Mapping[str, Any]) -> Recipe:
    raw = _keys(raw, "recipe", _TOP_KEYS)
    version = _int(raw.get("version", 1), "version")
    if version != 1:
        raise RecipeError(f"version: {version} is not supported; this slimkit reads version 1")
    seed = _int(raw.get("seed", 0), "seed", lo=0, hi=MAX_SEED)
    if "tune" in raw and raw["tune"] is not None:
        raise NotSupportedYetError("tune: accuracy-driven tuning is not supported yet")
    layers = _selector(raw.get("layers", {}), "layers", LayerSelector())
    fine_tune = _fine_tune(raw.get("fine_tune", {}), "fine_tune", FineTune())
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise RecipeError(f"stages: expected a non-empty list of stages, got {short_repr(stages_raw)}")
    stages = tuple(_stage(s, f"stages[{i}]", layers, fine_tune) for i, s in enumerate(stages_raw))
    quant = [i for i, s in enumerate(stages) if isinstance(s, QuantizeStage)]
    if len(quant) > 1:
        raise RecipeError(f"stages[{quant[1]}]: only one quantize stage is allowed (stages[{quant[0]}] is one)")
    later = [i for i, s in enumerate(stages) if isinstance(s, PruneStage) and quant and i > quant[0]]
    if later:
        raise RecipeError(f"stages[{later[0]}]: a prune stage cannot follow the quantize stage "
                          f"(stages[{quant[0]}]); prune first, then quantize")
    export = _export(raw.get("export", {}), "export")
    recipe = Recipe(version, seed, layers, fine_tune, stages, export)
    check_effects(raw, recipe)
    return recipe
