"""Recipe: YAML file, YAML string or dict -> frozen, validated dataclasses.

Every validation error names the exact field path (``stages[0].prune.sparsity``) and the bad value.
The format is the one in the project's API contract; keys are fixed, new keys are additions.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from slimkit.errors import NotSupportedYetError, RecipeError
from slimkit.optim import OPTIMIZERS, UpdateRule, make_rule
from slimkit.plugins import parse_options

#: Neutral layer kinds a selector may name. ``conv1d``/``conv2d``/``conv3d`` narrow ``conv`` by rank.
LAYER_KINDS = (
    "dense", "conv", "conv1d", "conv2d", "conv3d",
    "depthwise_conv", "depthwise_conv1d", "depthwise_conv2d",
    "embedding", "batchnorm",
)
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy", "mse")
SCOPES = ("global", "layer")
SCHEDULE_KINDS = ("constant", "polynomial")

_UNSET: Any = object()  # marks "key absent" where None is a meaningful value (fine_tune: null)


@dataclass(frozen=True)
class LayerSelector:
    """Which layers a stage touches: name globs and kinds, minus exclude globs."""

    names: tuple[str, ...] = ("*",)
    kinds: tuple[str, ...] | None = None  # None: every kind the algorithm supports
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class FineTune:
    """Training settings shared by every stage that fine-tunes.

    ``optimizer`` names a registered update rule (:mod:`slimkit.optim`); ``optimizer_options`` is
    its options dataclass, None for its defaults. Both adapters run the same rule, so twins train
    alike. Batches are drawn in an order core computes (``slimkit.batches``), the last one partial.
    """

    epochs: int = 2
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    loss: str = "sparse_categorical_crossentropy"
    from_logits: bool = True
    shuffle: bool = True
    optimizer_options: Any = None

    def rule(self) -> UpdateRule:
        """The optimizer's update rule with its options."""
        return make_rule(self.optimizer, self.optimizer_options)


@dataclass(frozen=True)
class Schedule:
    """How sparsity grows over fine-tuning; ``begin``/``end`` are fractions of all fine-tuning steps."""

    kind: str = "polynomial"
    begin: float = 0.0
    end: float = 0.8
    every: int = 10
    initial: float = 0.0
    power: float = 3.0


@dataclass(frozen=True)
class PruneStage:
    """A pruning stage. ``fine_tune`` is None for one-shot pruning.

    ``method`` names a registered pruning method (:data:`slimkit.pruning.methods.PRUNING_METHODS`)
    and ``options`` is that method's options dataclass (``criterion``, ``round_to``, ``samples`` of
    ``channel``; ``n``, ``m`` of ``n:m``). ``sparsity`` is the fraction of weights (magnitude) or of
    channels (channel) removed; for ``n:m`` it is implied: ``1 - n / m``.
    """

    method: str
    sparsity: float
    scope: str
    schedule: Schedule
    layers: LayerSelector
    fine_tune: FineTune | None
    options: Any = None

    @property
    def name(self) -> str:
        return f"prune:{self.method}"




@dataclass(frozen=True)
class WeightQuant:
    """How kernels are quantized.

    ``reduce_range`` (on by default) uses 7-bit weights ([-64, 64]): onnxruntime's u8s8 kernels on
    x86 CPUs without VNNI add pairs of u8 x s8 products in int16 and saturate with full-range
    weights, so the deployed model would silently differ from the simulated one. ``learn`` is the
    QAT weight quantizer: ``minmax`` (range of the current weights) or ``lsq`` (learned step size).
    """

    bits: int = 8
    per_channel: bool = True
    symmetric: bool = True
    reduce_range: bool = True
    learn: str = "minmax"


@dataclass(frozen=True)
class ActivationQuant:
    """How activations are quantized: uint8 asymmetric by default (onnxruntime's default).

    ``calibration`` picks the observer for post-training ranges over ``samples`` inputs;
    ``percentile`` is the coverage of the percentile observer. ``learn`` is the QAT activation
    quantizer: ``ema`` (moving average of batch ranges) or ``lsq`` (learned step size).
    """

    bits: int = 8
    symmetric: bool = False
    signed: bool = False
    calibration: str = "minmax"
    samples: int = 256
    percentile: float = 99.99
    learn: str = "ema"
    momentum: float = 0.9
    calibration_options: Any = None


@dataclass(frozen=True)
class QuantOverride:
    """Weight settings for the layers a selector picks, over the stage's own."""

    layers: LayerSelector
    weights: WeightQuant


@dataclass(frozen=True)
class QuantizeStage:
    """A quantization stage: ``static`` or ``dynamic`` post-training, or ``qat`` (fine-tunes).

    Attributes:
        method: static | dynamic | qat.
        weights: kernel settings; ``overrides`` change them per layer.
        activations: activation settings.
        layers: the layers to quantize; the rest stay float (skip by name or kind with ``exclude``
            and ``kinds``).
        fine_tune: QAT training settings; None for post-training methods.
        fold_batchnorm: fold batch norms into the preceding conv/dense first.
        overrides: per-layer weight settings, later ones win.
    """

    method: str
    weights: WeightQuant
    activations: ActivationQuant
    layers: LayerSelector
    fine_tune: FineTune | None
    fold_batchnorm: bool = True
    overrides: tuple[QuantOverride, ...] = ()
    options: Any = None

    @property
    def name(self) -> str:
        return f"quantize:{self.method}"


@dataclass(frozen=True)
class OnnxExport:
    """ONNX export settings.

    ``tolerance`` bounds max|onnx - framework| relative to max(1, max|framework|) for float models.
    A quantized model must match its simulation within one step of the output's scale, or within
    ``quant_tolerance`` of the output's range: in deep networks a rounding tie that the frameworks'
    float sums break differently in one layer moves later layers by a step or two.
    """

    opset: int = 17
    verify: bool = True
    tolerance: float = 1e-4
    quant_tolerance: float = 0.02


@dataclass(frozen=True)
class Recipe:
    """A validated compression recipe; build it with :meth:`Recipe.load`."""

    version: int
    seed: int
    layers: LayerSelector
    fine_tune: FineTune | None
    stages: tuple[PruneStage | QuantizeStage, ...]
    export: OnnxExport

    @classmethod
    def load(cls, source: "Recipe | Mapping[str, Any] | str | os.PathLike[str]") -> "Recipe":
        """Loads a recipe from a dict, a YAML string, or a path to a YAML file.

        Args:
            source: a mapping, a YAML document, or a path ending in .yaml/.yml.

        Returns:
            The validated recipe.

        Raises:
            RecipeError: the recipe is malformed; the message names the field path.
        """
        if isinstance(source, Recipe):
            return source
        if isinstance(source, os.PathLike) or (
            isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
        ):
            path = Path(source)
            if not path.is_file():
                raise RecipeError(f"recipe file not found: {path}")
            source = path.read_text(encoding="utf-8")
        if isinstance(source, str):
            try:
                source = yaml.safe_load(source)
            except yaml.YAMLError as exc:
                raise RecipeError(f"recipe is not valid YAML: {exc}") from exc
        if not isinstance(source, Mapping):
            raise RecipeError(f"recipe must be a mapping of keys, got {type(source).__name__}")
        return _parse_recipe(source)


# ---------------------------------------------------------------------------------------------
# Parsing helpers: each takes the raw value and its path, returns a typed value or raises.


def _keys(raw: Any, path: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected a mapping, got {type(raw).__name__} {raw!r}")
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise RecipeError(
            f"{path}: unknown key {unknown[0]!r}; allowed keys are {', '.join(allowed)}"
        )
    return raw


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _int(raw: Any, path: str, lo: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RecipeError(f"{path}: expected an integer, got {raw!r}")
    if lo is not None and raw < lo:
        raise RecipeError(f"{path}: {raw} is below the minimum {lo}")
    return raw


def _float(raw: Any, path: str, lo: float, hi: float, hi_open: bool = False, lo_open: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise RecipeError(f"{path}: expected a number, got {raw!r}")
    value = float(raw)
    if not math.isfinite(value):
        raise RecipeError(f"{path}: expected a finite number, got {raw!r}")
    bad_lo = value <= lo if lo_open else value < lo
    bad_hi = value >= hi if hi_open else value > hi
    if bad_lo or bad_hi:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise RecipeError(f"{path}: {raw!r} is outside {interval}")
    return value


def _bool(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise RecipeError(f"{path}: expected true or false, got {raw!r}")
    return raw


def _choice(raw: Any, path: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise RecipeError(f"{path}: {raw!r} is not one of {', '.join(choices)}")
    return raw


def _str_list(raw: Any, path: str, check: Callable[[str, str], None] | None = None) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(s, str) for s in raw):
        raise RecipeError(f"{path}: expected a list of strings, got {raw!r}")
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
        "epochs": lambda v, p: _int(v, p, lo=0),
        "batch_size": lambda v, p: _int(v, p, lo=1),
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
        raise RecipeError(f"{path}: expected an optimizer name or a mapping with name and options, got {raw!r}")
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
        "every": lambda v, p: _int(v, p, lo=1),
        "initial": lambda v, p: _float(v, p, 0.0, 1.0, hi_open=True),
        "power": lambda v, p: _float(v, p, 0.0, 100.0, lo_open=True),
    })
    if sched.end < sched.begin:
        raise RecipeError(f"{path}.end: {sched.end:g} is before {path}.begin {sched.begin:g}")
    return sched


def _prune(raw: Any, path: str, layers: LayerSelector, fine_tune: FineTune | None) -> PruneStage:
    from slimkit.pruning.methods import PRUNING_METHODS

    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected a mapping, got {type(raw).__name__} {raw!r}")
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
    return _build(WeightQuant, raw, path, base, {
        "bits": lambda v, p: _bits(v, p),
        "per_channel": _bool,
        "symmetric": _bool,
        "reduce_range": _bool,
        "learn": lambda v, p: _learn(v, p, "weights"),
    })


def _bits(raw: Any, path: str) -> int:
    bits = _int(raw, path)
    if not 2 <= bits <= 8:
        raise RecipeError(f"{path}: {bits} bits is not supported; quantization simulates 2 to 8 bits")
    return bits


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
    return _build(ActivationQuant, {k: v for k, v in raw.items() if k != "calibration"}, path, base, {
        "bits": lambda v, p: _bits(v, p),
        "symmetric": _bool,
        "signed": _bool,
        "samples": lambda v, p: _int(v, p, lo=1),
        "percentile": lambda v, p: _float(v, p, 50.0, 100.0, lo_open=True),
        "learn": lambda v, p: _learn(v, p, "activations"),
        "momentum": lambda v, p: _float(v, p, 0.0, 1.0, hi_open=True),
    })


_ACT_KEYS = ("bits", "symmetric", "signed", "calibration", "samples", "percentile", "learn", "momentum")


_QUANT_KEYS = ("method", "weights", "activations", "layers", "fine_tune", "fold_batchnorm", "overrides")


def _quantize(raw: Any, path: str, layers: LayerSelector, fine_tune: FineTune | None) -> QuantizeStage:
    from slimkit.quant.methods import QUANT_METHODS

    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected a mapping, got {type(raw).__name__} {raw!r}")
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
        raise RecipeError(f"{path}.overrides: expected a list of {{layers, weights}}, got {raw_over!r}")
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
        raise RecipeError(f"{path}: a stage is a mapping with exactly one key (prune or quantize), got {raw!r}")
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
        "opset": lambda v, p: _int(v, p, lo=13),
        "verify": _bool,
        "tolerance": lambda v, p: _float(v, p, 0.0, 1.0, lo_open=True),
        "quant_tolerance": lambda v, p: _float(v, p, 0.0, 1.0, lo_open=True),
    })


_TOP_KEYS = ("version", "seed", "layers", "fine_tune", "stages", "tune", "export")


def _parse_recipe(raw: Mapping[str, Any]) -> Recipe:
    raw = _keys(raw, "recipe", _TOP_KEYS)
    version = _int(raw.get("version", 1), "version")
    if version != 1:
        raise RecipeError(f"version: {version} is not supported; this slimkit reads version 1")
    seed = _int(raw.get("seed", 0), "seed", lo=0)
    if "tune" in raw and raw["tune"] is not None:
        raise NotSupportedYetError("tune: accuracy-driven tuning is not supported yet")
    layers = _selector(raw.get("layers", {}), "layers", LayerSelector())
    fine_tune = _fine_tune(raw.get("fine_tune", {}), "fine_tune", FineTune())
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise RecipeError(f"stages: expected a non-empty list of stages, got {stages_raw!r}")
    stages = tuple(_stage(s, f"stages[{i}]", layers, fine_tune) for i, s in enumerate(stages_raw))
    quant = [i for i, s in enumerate(stages) if isinstance(s, QuantizeStage)]
    if len(quant) > 1:
        raise RecipeError(f"stages[{quant[1]}]: only one quantize stage is allowed (stages[{quant[0]}] is one)")
    later = [i for i, s in enumerate(stages) if isinstance(s, PruneStage) and quant and i > quant[0]]
    if later:
        raise RecipeError(f"stages[{later[0]}]: a prune stage cannot follow the quantize stage "
                          f"(stages[{quant[0]}]); prune first, then quantize")
    export = _export(raw.get("export", {}), "export")
    return Recipe(version, seed, layers, fine_tune, stages, export)
