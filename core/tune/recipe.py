"""The recipe's ``tune:`` section: what the tuner optimises, over which settings, with which strategy.

::

    tune:
      strategy: basic            # basic | sensitivity | optuna | annealing (registered strategies)
      tolerance: {relative: 0.01}          # or {absolute: 0.005}: the metric may drop this much
      budget: {size_mb: 2.0, macs: 1.0e8, latency_ms: 12.0}   # measured on the trial's ONNX file
      max_trials: 20
      time_limit: 600            # seconds; the best so far is returned when it runs out
      space: {sparsity: [0.0, 0.25, 0.5, 0.75], float_layers: true, calibration: [minmax, percentile]}
      trial_fine_tune: {steps: 200}
      storage: sqlite:///study.db  # optuna: a shared or resumable study
      study: digits
      log: trials.json           # the trial log, rewritten after every trial

Keys other than these are the strategy's own options (``sampler`` of optuna, ``cooling`` of annealing).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from slimkit.errors import RecipeError
from slimkit.plugins import parse_options
from slimkit.recipe_fields import boolean, choice, integer, join, keys, number, str_list
from slimkit.reprs import short_repr

#: Metrics a tolerance may name; ``mse`` is the one where lower is better.
METRICS = ("eval_fn", "accuracy", "mse")
BUDGET_UNITS = ("latency_ms", "size_mb", "macs")
MAX_TRIALS = 100_000


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the float model's metric a result may be: ``relative`` (a fraction of the
    baseline) or ``absolute`` (in the metric's units)."""

    relative: float | None = None
    absolute: float | None = None


@dataclass(frozen=True)
class Budget:
    """Limits measured on each trial's exported ONNX file: onnxruntime latency per sample on this machine
    (``latency_ms``), file size in MB (10^6 bytes, ``size_mb``) and multiply-accumulates per sample
    counted on the graph (``macs``)."""

    latency_ms: float | None = None
    size_mb: float | None = None
    macs: float | None = None

    def items(self) -> list[tuple[str, float]]:
        return [(k, getattr(self, k)) for k in BUDGET_UNITS if getattr(self, k) is not None]


@dataclass(frozen=True)
class Space:
    """The settings a search may change.

    Attributes:
        sparsity: the per-layer pruning ratios a layer of the prune stage may take.
        float_layers: whether layers of the quantize stage may stay float.
        calibration: calibration methods to try (empty: the stage's own only).
        percentile: percentiles to try with ``calibration: percentile``.
        per_channel: weight granularities to try (empty: the stage's own only).
        bits: weight bit widths a layer may take (below 8 only with ``method: qat``).
    """

    sparsity: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    float_layers: bool = True
    calibration: tuple[str, ...] = ()
    percentile: tuple[float, ...] = ()
    per_channel: tuple[bool, ...] = ()
    bits: tuple[int, ...] = ()


@dataclass(frozen=True)
class Tune:
    """Validated ``tune:`` settings; ``options`` is the strategy's options dataclass."""

    strategy: str = "basic"
    tolerance: Tolerance | None = None
    budget: Budget | None = None
    metric: str | None = None
    max_trials: int = 20
    time_limit: float | None = None
    space: Space = Space()
    trial_fine_tune_steps: int | None = None
    storage: str | None = None
    study: str | None = None
    log: str | None = None
    options: Any = None

    @property
    def goal(self) -> str:
        """``compression`` with a tolerance (most compressed within it), else ``metric`` (best metric
        within the budget)."""
        return "compression" if self.tolerance is not None else "metric"


_KEYS = ("strategy", "tolerance", "budget", "metric", "max_trials", "time_limit", "space", "trial_fine_tune",
         "storage", "study", "log")


def parse_tune(raw: Any, path: str, stages: tuple[Any, ...]) -> Tune | None:
    """The ``tune:`` settings, or None when the section is absent.

    Raises:
        RecipeError: a bad key or value; the message names its path (``tune.tolerance.relative``).
    """
    if raw is None:
        return None
    from slimkit.tune.strategies.base import STRATEGIES

    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected a mapping, got {type(raw).__name__} {short_repr(raw)}")
    name = raw.get("strategy", "basic")
    entry = STRATEGIES.get(name, join(path, "strategy"))
    own = {k: v for k, v in raw.items() if k not in _KEYS}
    options = parse_options(entry.options, own, path, also_allowed=_KEYS)
    tune = Tune(strategy=name, options=options)
    if "tolerance" in raw:
        tune = replace(tune, tolerance=_tolerance(raw["tolerance"], join(path, "tolerance")))
    if "budget" in raw:
        tune = replace(tune, budget=_budget(raw["budget"], join(path, "budget")))
    if tune.tolerance is None and tune.budget is None:
        raise RecipeError(f"{path}: give a tolerance (the most compressed model within it) or a budget (the most "
                          "accurate model within it), or both: tolerance: {relative: 0.01}, budget: {size_mb: 2}")
    if raw.get("metric") is not None:
        tune = replace(tune, metric=choice(raw["metric"], join(path, "metric"), METRICS))
    tune = replace(tune, max_trials=integer(raw.get("max_trials", 20), join(path, "max_trials"), 1, MAX_TRIALS))
    if raw.get("time_limit") is not None:
        tune = replace(tune, time_limit=number(raw["time_limit"], join(path, "time_limit"), 0, 1e7, lo_open=True))
    tune = replace(tune, space=_space(raw.get("space", {}), join(path, "space"), stages))
    if raw.get("trial_fine_tune") is not None:
        ft = keys(raw["trial_fine_tune"], join(path, "trial_fine_tune"), ("steps",))
        steps_path = join(join(path, "trial_fine_tune"), "steps")
        if "steps" not in ft:
            raise RecipeError(f"{steps_path}: required (the optimizer steps each pruning trial fine-tunes)")
        tune = replace(tune, trial_fine_tune_steps=integer(ft["steps"], steps_path, 1, 10**7))
    for key in ("storage", "study", "log"):
        if raw.get(key) is not None:
            value = raw[key]
            if not isinstance(value, str) or not value:
                raise RecipeError(f"{join(path, key)}: expected a non-empty string, got {short_repr(value)}")
            tune = replace(tune, **{key: value})
    if tune.storage is not None and not entry.impl.uses_storage:
        raise RecipeError(f"{join(path, 'storage')}: strategy {name} keeps no study; a storage is for strategies "
                          f"that search with Optuna ({', '.join(n for n in STRATEGIES.names() if STRATEGIES.get(n).impl.uses_storage)})")
    entry.impl.check(tune, stages, path)
    return tune


def _tolerance(raw: Any, path: str) -> Tolerance:
    raw = keys(raw, path, ("relative", "absolute"))
    if len(raw) != 1:
        raise RecipeError(f"{path}: give exactly one of relative (a fraction of the baseline metric, e.g. 0.01) "
                          f"or absolute (in the metric's units), got {short_repr(dict(raw))}")
    key, value = next(iter(raw.items()))
    where = join(path, key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise RecipeError(f"{where}: {value!r} is negative; a tolerance is how much worse the metric may get, "
                          "a number >= 0 (0.01 allows a 1% drop)")
    hi = 1.0 if key == "relative" else 1e12
    return Tolerance(**{key: number(value, where, 0.0, hi)})


def _budget(raw: Any, path: str) -> Budget:
    if not isinstance(raw, Mapping) or not raw:
        raise RecipeError(f"{path}: expected a mapping of limits ({', '.join(BUDGET_UNITS)}), got {short_repr(raw)}")
    unknown = [k for k in raw if k not in BUDGET_UNITS]
    if unknown:
        raise RecipeError(f"{path}: unknown unit {short_repr(unknown[0])}; a budget is given in "
                          f"{', '.join(BUDGET_UNITS)} (measured on the exported ONNX file)")
    return Budget(**{k: number(v, join(path, k), 0.0, 1e18, lo_open=True) for k, v in raw.items()})


def _space(raw: Any, path: str, stages: tuple[Any, ...]) -> Space:
    from slimkit.quant.observers import OBSERVERS

    raw = keys(raw, path, ("sparsity", "float_layers", "calibration", "percentile", "per_channel", "bits"))
    space = Space()
    if "sparsity" in raw:
        values = _numbers(raw["sparsity"], join(path, "sparsity"), 0.0, 1.0, hi_open=True)
        space = replace(space, sparsity=tuple(sorted(set(values))))
    if "float_layers" in raw:
        space = replace(space, float_layers=boolean(raw["float_layers"], join(path, "float_layers")))
    if "calibration" in raw:
        names = str_list(raw["calibration"], join(path, "calibration"),
                         lambda v, p: choice(v, p, OBSERVERS.names()))
        space = replace(space, calibration=tuple(dict.fromkeys(names)))
    if "percentile" in raw:
        space = replace(space, percentile=_numbers(raw["percentile"], join(path, "percentile"), 50.0, 100.0))
    if "per_channel" in raw:
        flags = raw["per_channel"] if isinstance(raw["per_channel"], list) else [raw["per_channel"]]
        space = replace(space, per_channel=tuple(dict.fromkeys(
            boolean(v, f"{join(path, 'per_channel')}[{i}]") for i, v in enumerate(flags))))
    if "bits" in raw:
        bits = raw["bits"] if isinstance(raw["bits"], list) else [raw["bits"]]
        space = replace(space, bits=tuple(sorted({integer(v, f"{join(path, 'bits')}[{i}]", 2, 8)
                                                  for i, v in enumerate(bits)}, reverse=True)))
        from slimkit.quant.methods import method_of
        from slimkit.recipe import QuantizeStage

        trained = [s for s in stages if isinstance(s, QuantizeStage) and method_of(s).trains]
        if any(b != 8 for b in space.bits) and not trained:
            raise RecipeError(f"{join(path, 'bits')}: bit widths below 8 are trained and simulated by a method that trains (qat): "
                              "post-training quantization (static, dynamic) exports 8-bit weights only")
    return space


def _numbers(raw: Any, path: str, lo: float, hi: float, hi_open: bool = False) -> tuple[float, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise RecipeError(f"{path}: expected a non-empty list of numbers")
    return tuple(number(v, f"{path}[{i}]", lo, hi, hi_open=hi_open) for i, v in enumerate(values))
