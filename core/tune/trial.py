"""One trial: compress a candidate recipe, export it, and measure the deployed file.

The metric is computed on the trial's ONNX file in onnxruntime when it comes from ``eval_data`` (what
would be deployed is what is judged), or by the user's ``eval_fn`` on the compressed framework model.
Size and MACs are read from the file; latency is onnxruntime's on this machine.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from slimkit import checks, deploy
from slimkit.data import as_arrays, head, is_array_pair, n_samples, take
from slimkit.errors import DataError, RecipeError, SlimkitError, SlimkitWarning
from slimkit.metrics import call_eval_fn
from slimkit.pruning.methods import zeroes_kernels
from slimkit.recipe import PruneStage, Recipe
from slimkit.tune.log import TrialRecord
from slimkit.tune.objective import Goal
from slimkit.tune.space import Candidate, SearchSpace, candidate_recipe, describe

#: Inputs per onnxruntime run when the metric is computed on ``eval_data``.
EVAL_BATCH = 256


def worker_name() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


@dataclasses.dataclass(frozen=True)
class Data:
    """What compress() was given, passed on to every trial."""

    train_data: Any
    calib_data: Any
    eval_data: Any
    eval_fn: Callable[[Any], float] | None
    fit_fn: Any
    teacher: Any


def metric_name(tune_metric: str | None, data: Data, adapter: Any) -> str:
    """The metric the run optimises: the recipe's ``tune.metric``, else ``eval_fn`` when given, else the
    data's metric (accuracy for class ids, mse otherwise).

    Raises:
        DataError: neither ``eval_data`` nor ``eval_fn`` was given, or the named one was not.
    """
    if data.eval_fn is None and data.eval_data is None:
        raise DataError("tune: needs eval_data=(x, y) or eval_fn=callable(model) -> float to judge each trial")
    if tune_metric == "eval_fn" and data.eval_fn is None:
        raise DataError("tune.metric: eval_fn is named but compress() got no eval_fn")
    if tune_metric in ("accuracy", "mse") and data.eval_data is None:
        raise DataError(f"tune.metric: {tune_metric} is computed on eval_data, which compress() did not get")
    if tune_metric is not None:
        return tune_metric
    if data.eval_fn is not None:
        return "eval_fn"
    from slimkit.metrics import evaluate

    x, y = as_arrays(data.eval_data, "eval_data", need_labels=True)
    return next(iter(evaluate(adapter, (head(x, 2), y[:2]))))


class TrialRunner:
    """Runs candidates of one search space and measures them against one goal."""

    def __init__(self, model: Any, recipe: Recipe, space: SearchSpace, data: Data, goal: Goal, folder: Path,
                 sample: Any, original_bits: int) -> None:
        self.model = model
        self.recipe = recipe
        self.space = space
        self.data = data
        self.goal = goal
        self.folder = folder
        self.sample = sample
        self.original_bits = original_bits
        self.worker = worker_name()
        tune = recipe.tune
        from slimkit.pruning.methods import method_of

        self.count_macs = (tune.budget is not None and tune.budget.macs is not None) or any(
            isinstance(s, PruneStage) and not method_of(s).sets_kernel_sparsity for s in recipe.stages)
        self.base_macs: int | None = None  # the float model's, set by the run once measured
        self.careful_latency = tune.budget is not None and tune.budget.latency_ms is not None
        self.zeros = zeroes_kernels(recipe.stages)  # only then are trials' files gzipped

    def recipe_of(self, candidate: Candidate, short: bool) -> dict[str, Any]:
        """The candidate's plain recipe; ``short``: with the prune stages' fine-tuning cut to
        ``tune.trial_fine_tune.steps`` (one epoch over that many batches)."""
        raw = candidate_recipe(self.recipe, self.space, candidate)
        steps = self.recipe.tune.trial_fine_tune_steps
        if short and steps is not None:
            for item in raw["stages"]:
                body = item.get("prune") if isinstance(item, dict) else None
                if isinstance(body, dict) and body.get("fine_tune", {}) is not None:
                    body["fine_tune"] = {**dict(body.get("fine_tune") or {}), "epochs": 1}
        return raw

    def train_data(self, short: bool) -> Any:
        steps = self.recipe.tune.trial_fine_tune_steps
        data = self.data.train_data
        if not short or steps is None or data is None:
            return data
        if not is_array_pair(data):
            raise RecipeError("tune.trial_fine_tune: cutting each trial's fine-tuning to a number of steps needs "
                              "numpy train_data=(x, y); a tf.data.Dataset or DataLoader runs whole epochs")
        prune = [s for s in self.recipe.stages if isinstance(s, PruneStage) and s.fine_tune is not None]
        batch = prune[0].fine_tune.batch_size if prune else 64
        count = min(n_samples(data[0]), steps * batch)
        return take(data[0], slice(0, count)), np.asarray(data[1])[:count]

    def run(self, number: int, candidate: Candidate, short: bool = True) -> tuple[TrialRecord, Any]:
        """Compresses, exports and measures ``candidate``; returns its record and the compression result
        (None when the trial failed: the record carries the error)."""
        from slimkit.compress import compress

        start = time.perf_counter()
        record = TrialRecord(number, describe(candidate, self.space), worker=self.worker)
        raw = self.recipe_of(candidate, short)
        # a candidate's recipe that does not parse is slimkit's own mistake, not the candidate's: it raises
        trial_recipe = dataclasses.replace(Recipe.load(raw), source=self.recipe.source)
        try:
            # a trial's warnings (a shortfall, a low correlation) describe that candidate: they go to its
            # record, not to the user's console once per trial
            with warnings.catch_warnings(record=True) as caught, checks.quick_checks(gzip=self.zeros):
                warnings.simplefilter("always", SlimkitWarning)
                result = compress(self.model, trial_recipe, train_data=self.train_data(short),
                                  calib_data=self.data.calib_data, fit_fn=self.data.fit_fn, verbose=False,
                                  teacher=self.data.teacher)
                path = self.folder / f"trial-{number}.onnx"
                row = result.export_onnx(path)
                self.measure(record, result, path, row)
            record.notes = [str(w.message) for w in caught if issubclass(w.category, SlimkitWarning)]
        except SlimkitError as exc:  # one failed candidate (say, an export that does not verify) is a result
            record.error = f"{type(exc).__name__}: {exc}"
            record.seconds = time.perf_counter() - start
            return record, None
        record.seconds = time.perf_counter() - start
        return record, result

    def measure(self, record: TrialRecord, result: Any, path: Path, row: Any) -> None:
        """Fills the record's measurements from the trial's file and model."""
        bench = deploy.load_bench()
        record.size_mb = row.bytes / 1e6
        record.gzip_mb = None if row.gzip_bytes is None else row.gzip_bytes / 1e6
        # MACs change only when channels are removed; counting them reads the whole graph (a second on a
        # ResNet50), so other trials carry the float model's count
        record.macs = int(bench.macs(str(path))) if self.count_macs or self.base_macs is None else self.base_macs
        one = head(self.sample, 1)
        exports = result.report.quant_exports
        if self.careful_latency or not exports or exports[-1].int8_latency_ms is None:
            record.latency_ms = bench.latency_ms(str(path), one, repeats=30 if self.careful_latency else 10,
                                                 warmup=5 if self.careful_latency else 2)
        else:
            record.latency_ms = exports[-1].int8_latency_ms
        record.compression = self.original_bits / max(1, deployed_bits(result.report))
        record.steps = sum(int(stage.steps or 0) for stage in result.report.stages)
        record.metric = self.metric(result.model, str(path))
        record.violations = self.goal.violations(record.metric, {
            "latency_ms": record.latency_ms, "size_mb": record.size_mb, "macs": record.macs})
        record.feasible = not record.violations

    def metric(self, model: Any, path: str) -> float:
        """The goal's metric: ``eval_fn(model)``, or the metric of the ONNX file's outputs on ``eval_data``."""
        if self.goal.metric_name == "eval_fn":
            return call_eval_fn(self.data.eval_fn, model)
        return onnx_metric(path, self.data.eval_data, self.goal.metric_name)


def onnx_metric(path: str, eval_data: Any, name: str | None) -> float:
    """Accuracy or MSE of the ONNX file at ``path`` on ``eval_data``, run in onnxruntime."""
    from slimkit.metrics import _data_metric

    x, y = as_arrays(eval_data, "eval_data", need_labels=True)
    runtime = deploy.load_runtime()
    outs = [runtime.run(path, take(x, slice(lo, lo + EVAL_BATCH))) for lo in range(0, n_samples(x), EVAL_BATCH)]
    metrics = _data_metric(np.concatenate(outs), np.asarray(y))
    if name not in metrics:
        raise DataError(f"tune.metric: {name} cannot be computed on eval_data (its labels give {', '.join(metrics)})")
    return metrics[name]


def deployed_bits(report: Any) -> int:
    """The weight bits the compressed model stores: non-zero weights times their bit width (32 for float
    layers, the kernel's bits for quantized ones, 8 for weight-only int8)."""
    kernel_bits = {q.site.rsplit("/", 1)[0]: q.bits for q in report.quant if q.kind == "kernel"}
    quantized = set(report.quantized)
    weight_only = set(report.weight_only)
    total = 0
    for layer in report.layers:
        if layer.name in quantized:
            bits = kernel_bits.get(layer.name, 8)
        elif layer.name in weight_only:
            bits = 8
        else:
            bits = 32
        total += layer.nonzeros * bits
    return total
