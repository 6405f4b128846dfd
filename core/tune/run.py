"""The tuning run behind ``compress()`` for a recipe with ``tune:``: baseline, trials, best, result.

The run measures the float model once (its ONNX file's metric, size, MACs and latency), then asks the
strategy for candidates until it has none, ``max_trials`` trials are done (across every process of a
shared study), ``time_limit`` has passed (checked between trials) or Ctrl-C. Each trial is compressed,
exported and measured (:mod:`slimkit.tune.trial`); within the run the float export and calibration
statistics are computed once and reused (:mod:`slimkit.quant.reuse`). The result is the best trial's
model with the plain recipe that reproduces it, and the whole trial log in ``report.tuning``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from slimkit import progress
from slimkit.checks import quick_checks
from slimkit.data import first_sample, head
from slimkit.errors import SlimkitWarning
from slimkit.recipe import PruneStage, QuantizeStage, Recipe
from slimkit.registry import adapter_class
from slimkit.tune.log import TrialRecord, TuningReport
from slimkit.tune.objective import Goal
from slimkit.tune.space import SearchSpace, build_space
from slimkit.tune.strategies.base import STRATEGIES, StrategyContext
from slimkit.pruning.methods import zeroes_kernels
from slimkit.tune.trial import Data, TrialRunner, metric_name, onnx_metric


def tune_compress(model: Any, recipe: Recipe, train_data: Any = None, calib_data: Any = None, eval_data: Any = None,
                  eval_fn: Callable[[Any], float] | None = None, fit_fn: Any = None, verbose: bool = True,
                  teacher: Any = None) -> Any:
    """Runs ``recipe.tune`` over ``model`` and returns the best trial as a CompressionResult whose
    ``recipe`` reproduces it without ``tune:`` and whose ``report.tuning`` holds every trial.

    Raises:
        DataError: no ``eval_data`` or ``eval_fn`` to judge trials.
        RecipeError: nothing to search, or a storage that cannot be opened.
    """
    from slimkit.compress import CompressionResult
    from slimkit.export import export_onnx

    tune = recipe.tune
    start = time.perf_counter()
    data = Data(train_data, calib_data, eval_data, eval_fn, fit_fn, teacher)
    cls = adapter_class(model)
    original = cls(model)
    name = metric_name(tune.metric, data, original)
    layers = original.layers()
    space = build_space(recipe, tune, layers)
    sample = first_sample(calib_data, train_data, eval_data, 16)
    original_bits = sum(32 * int(w.size) for info in layers for w in original.get_weights(info.name).values())
    show = _Progress(verbose, tune.max_trials, tune.strategy)
    with _reuse() as cache, tempfile.TemporaryDirectory(prefix="slimkit-tune-") as folder:
        # the float model as deployed: the baseline every trial is compared with
        base_path = Path(folder) / "float.onnx"
        with quick_checks(gzip=zeroes_kernels(recipe.stages)):  # as every trial's file is checked and measured
            row = export_onnx(model, base_path, sample, recipe.export)
        from slimkit import deploy

        if name == "eval_fn":
            from slimkit.metrics import call_eval_fn

            baseline = call_eval_fn(eval_fn, model)
        else:
            baseline = onnx_metric(str(base_path), eval_data, name)
        careful = tune.budget is not None and tune.budget.latency_ms is not None
        measures = {"size_mb": row.bytes / 1e6, "gzip_mb": None if row.gzip_bytes is None else row.gzip_bytes / 1e6,
                    "macs": int(deploy.load_bench().macs(str(base_path))),
                    "latency_ms": deploy.load_bench().latency_ms(str(base_path), head(sample, 1),
                                                                 repeats=30 if careful else 10, warmup=5 if careful else 2)}
        goal = Goal(tune, name, baseline, higher_is_better=name != "mse")
        log = TuningReport(tune.strategy, goal.describe(), name, baseline, measures)
        show.line(f"tune ({tune.strategy}): baseline {name} {baseline:.4g}, float ONNX {measures['size_mb']:.3g} MB, "
                  f"{measures['latency_ms']:.3g} ms; target {log.target}; {len(space.dims)} settings searched")
        runner = TrialRunner(model, recipe, space, data, goal, Path(folder), sample, original_bits)
        runner.base_macs = measures["macs"]
        analysis = _Analysis(model, recipe, space, data, verbose)
        ctx = StrategyContext(goal, recipe.seed, analysis.get, tune.storage, tune.study, tune.max_trials)
        entry = STRATEGIES.get(tune.strategy, "tune.strategy")
        strategy = entry.impl(tune.options, space, ctx)
        candidates: dict[int, Any] = {}
        best_result: tuple[int, Any] | None = None
        try:
            try:
                while True:
                    done = strategy.trials_done()
                    count = len(log.trials) if done is None else done
                    if count >= tune.max_trials:
                        log.stopped_by = "max_trials"
                        break
                    if tune.time_limit is not None and time.perf_counter() - start >= tune.time_limit:
                        log.stopped_by = "time_limit"
                        break
                    candidate = strategy.propose()
                    if candidate is None:
                        log.stopped_by = "strategy"
                        break
                    number = strategy.trial_number(len(log.trials))
                    try:
                        record, result = runner.run(number, candidate)
                    except KeyboardInterrupt:
                        strategy.abandon(candidate)
                        raise
                    log.trials.append(record)
                    candidates[number] = candidate
                    strategy.observe(candidate, record)
                    best = _best(goal, log.trials)
                    if result is not None and best is not None and best.number == number:
                        best_result = (number, result)  # only the best trial's model is kept in memory
                    log.best = None if best is None else best.number
                    show.trial(record, best, count + 1, name)
                    if tune.log is not None:
                        log.to_json(tune.log)
            except KeyboardInterrupt:
                log.interrupted = True
                log.stopped_by = "interrupt"
                show.line("tune: interrupted; returning the best trial so far")
            others = strategy.shared_records()
        finally:
            strategy.close()
            show.finish()
        everything = log.trials + others
        best = _best(goal, everything)
        log.sensitivity_seconds = analysis.seconds
        if best is None:
            from slimkit.errors import DataError

            raise DataError(f"tune: no trial finished ({'interrupted' if log.interrupted else log.stopped_by}); "
                            "nothing to return" + (f"; last error: {log.trials[-1].error}" if log.trials else ""))
        log.best = best.number
        log.trials = sorted(everything, key=lambda t: t.number)
        candidate = candidates.get(best.number) or space.make(best.settings)
        final_raw = runner.recipe_of(candidate, short=False)
        short = tune.trial_fine_tune_steps is not None and space.prune_index is not None
        if best_result is None or best_result[0] != best.number or short:
            # another process's trial, or one fine-tuned briefly: build it again with the full recipe
            show.line(f"tune: building trial {best.number} with the recipe's full fine-tuning")
            record, result = runner.run(best.number, candidate, short=False)
            if result is None:
                from slimkit.errors import DataError

                raise DataError(f"tune: the best trial ({best.number}) failed when built again: {record.error}")
            best = dataclasses.replace(best, metric=record.metric, compression=record.compression,
                                       size_mb=record.size_mb, macs=record.macs, latency_ms=record.latency_ms, steps=record.steps,
                                       feasible=record.feasible, violations=record.violations)
            log.trials = [best if t.number == best.number and t.worker == best.worker else t for t in log.trials]
        else:
            result = best_result[1]
        log.met = best.feasible
        log.recipe = final_raw
        log.seconds = time.perf_counter() - start
        log.reuse = dict(getattr(cache, "stats", {}) or {})
        log.message = _message(goal, best, log)
        if tune.log is not None:
            log.to_json(tune.log)
    if not log.met:
        warnings.warn(f"tune: {log.message}", SlimkitWarning, stacklevel=3)
    show.line(f"tune: {log.message}")
    report = result.report
    report.metrics_before = {name: baseline}
    report.metrics_after = {name: best.metric} if best.metric is not None else {}
    report.tuning = log
    report.sensitivity = analysis.computed  # the curves the strategy read, if it asked for them
    report.files = []  # the trial's file lived in the run's temporary folder
    plain = dataclasses.replace(Recipe.load(final_raw), source=recipe.source)
    return CompressionResult(result.model, report, plain, result.sample, result.known)


def _best(goal: Goal, records: list[TrialRecord]) -> TrialRecord | None:
    finished = [r for r in records if r.error is None]
    return max(finished, key=goal.rank) if finished else None


def _message(goal: Goal, best: TrialRecord, log: TuningReport) -> str:
    what = f"trial {best.number}: {goal.metric_name} {best.metric:.4g}, {best.compression:.2f}x smaller weights, " \
           f"{best.size_mb:.3g} MB, {best.latency_ms:.3g} ms"
    if best.feasible:
        return f"best of {len(log.trials)} trials meeting {log.target}: {what}"
    def miss(unit: str) -> str:
        if unit == "tolerance":
            floor = goal.floor()
            return f"{goal.metric_name} {best.metric:.4g} against {floor:.4g}" if floor is not None else unit
        value = {"latency_ms": best.latency_ms, "size_mb": best.size_mb, "macs": best.macs}.get(unit)
        return f"{unit} {value:.4g}" if value is not None else unit

    missed = ", ".join(miss(k) for k in best.violations)
    return f"no configuration met {log.target} in {len(log.trials)} trials; the closest was {what} (missed {missed})"


@contextlib.contextmanager
def _reuse() -> Any:
    """The run's reuse cache (float exports and calibration statistics computed once)."""
    try:
        from slimkit.quant.reuse import ReuseCache, reusing
    except ImportError:  # pragma: no cover - until the cache lands
        yield None
        return
    cache = ReuseCache()
    with reusing(cache):
        yield cache


class _Analysis:
    """The per-layer sensitivity analysis a strategy may ask for, run once."""

    def __init__(self, model: Any, recipe: Recipe, space: SearchSpace, data: Data, verbose: bool) -> None:
        self.model, self.recipe, self.space, self.data, self.verbose = model, recipe, space, data, verbose
        self.seconds: float | None = None
        self._value: Any = None

    def get(self) -> Any:
        if self._value is None:
            from slimkit.tune.sensitivity import sensitivity

            start = time.perf_counter()
            raw = {k: v for k, v in dict(self.recipe.raw).items() if k != "tune"}
            if "analyze" not in raw:
                raw["analyze"] = self.default_analysis()
            self._value = sensitivity(self.model, Recipe.load(raw), eval_data=self.data.eval_data,
                                      eval_fn=self.data.eval_fn, calib_data=self.data.calib_data,
                                      verbose=self.verbose)
            self.seconds = time.perf_counter() - start
        return self._value

    @property
    def computed(self) -> Any:
        """The analysis if a strategy asked for it, else None (never runs it)."""
        return self._value

    def default_analysis(self) -> dict[str, Any]:
        stages = self.recipe.stages
        prune = self.recipe.stages[self.space.prune_index] if self.space.prune_index is not None else None
        ratios = sorted({c for d in self.space.dims if d.name.startswith("sparsity:") for c in d.choices if c > 0})
        out: dict[str, Any] = {"quantize": {"bits": [8]} if any(isinstance(s, QuantizeStage) for s in stages) else None}
        # the curves of one layer pruned alone: by channels for channel pruning, by magnitude for the rest
        from slimkit.pruning.methods import method_of

        removes_channels = isinstance(prune, PruneStage) and not method_of(prune).sets_kernel_sparsity
        method = "channel" if removes_channels else "magnitude"
        out["prune"] = {"method": method, "ratios": ratios} if isinstance(prune, PruneStage) and ratios else None
        return out


class _Progress:
    """A task over the trials (trial n/N, the best so far beside the bar) with a line per trial: its metric,
    compression and latency, the best so far; summary lines go through :func:`slimkit.progress.info`."""

    def __init__(self, verbose: bool, total: int, strategy: str) -> None:
        self.verbose, self.total = verbose, total
        self.task = progress.task(f"tune ({strategy})", total, verbose)

    def line(self, text: str) -> None:
        progress.info(text, self.verbose)

    def trial(self, record: TrialRecord, best: TrialRecord | None, count: int, name: str) -> None:
        if record.error is not None:
            self.task.update(count)
            self.task.line(f"tune trial {count}/{self.total}: failed ({record.error[:120]}) ({record.seconds:.1f}s)")
            return
        mark = "meets the target" if record.feasible else "misses " + ", ".join(record.violations)
        best_text = "-" if best is None else (f"#{best.number} {name} {best.metric:.4g}, {best.compression:.2f}x"
                                              + ("" if best.feasible else " (closest)"))
        self.task.update(count, best=best_text)
        self.task.line(f"tune trial {count}/{self.total}: {name} {record.metric:.4g}, {record.compression:.2f}x, "
                       f"{record.size_mb:.3g} MB, {record.latency_ms:.3g} ms, {mark}; best {best_text} "
                       f"({record.seconds:.1f}s)")

    def finish(self) -> None:
        self.task.finish()