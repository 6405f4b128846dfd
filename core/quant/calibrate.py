"""Calibration: forward passes through the adapter, activation ranges from core's observers.

The adapter only runs the model and hands back tensors (:meth:`ModelAdapter.layer_outputs`); the
observers (min-max, percentile, entropy, MSE) live in :mod:`slimkit.quant.observers`. Inputs are fed
in small batches so memory stays bounded however large the model's activations are; an adapter that
shows each tensor as it is computed (:meth:`~slimkit.adapter.StructureAdapter.stream_outputs`) has it
observed at once, so a pass holds no site tensor at all.

The same passes record what later steps would otherwise run the float model again for: its outputs on
the first inputs (the fidelity check's reference) and each site's :class:`~slimkit.quant.moments.Moments`
on the first inputs (what export's mapping of sites onto the ONNX graph compares).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from slimkit import progress
from slimkit.adapter import MODEL_OUTPUT, ModelAdapter, collective
from slimkit.data import all_finite, as_inputs, head, n_samples, take
from slimkit.errors import DataError, PluginError
from slimkit.quant import reuse
from slimkit.quant.moments import Moments, first_rows
from slimkit.quant.observers import OBSERVERS, build_observer
from slimkit.recipe import ActivationQuant


#: Activation bytes one calibration pass may hold (every site's tensor for its inputs at once).
PASS_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Calibrated:
    """Calibration's result.

    Attributes:
        ranges: observed ``(min, max)`` of each node's output.
        outputs: the float model's outputs (as ``predict`` gives them) on the first ``record`` inputs,
            read in the same passes; None when none were asked for or the adapter cannot read them so.
        moments: each node's :class:`Moments` over the first ``summarize`` inputs; None when none were
            asked for.
    """

    ranges: dict[str, tuple[float, float]]
    outputs: np.ndarray | None = None
    moments: dict[str, Moments] | None = None


def calibrate_recording(
    adapter: ModelAdapter,
    nodes: list[str],
    x: np.ndarray,
    settings: ActivationQuant,
    field: str,
    batch_size: int = 16,
    verbose: bool = True,
    record: int = 0,
    summarize: int = 0,
) -> Calibrated:
    """Observed ``(min, max)`` of each node's output over the first ``settings.samples`` inputs, and
    the model's outputs on the first ``record`` of them (the float reference the fidelity check needs,
    without another forward pass).

    Args:
        adapter: the float model.
        nodes: graph node names (activation sites).
        x: calibration inputs in the model's layout.
        settings: observer choice and sample count.
        field: the recipe path, for messages.
        batch_size: at most this many inputs per forward pass (fewer when their activations would
            hold more than :data:`PASS_BYTES`).
        verbose: show progress (a bar, or a line per quarter of the samples).
        record: how many of the first inputs' model outputs to return.
        summarize: over how many of the first inputs each node's :class:`Moments` are taken.

    Inside :func:`slimkit.quant.reuse.reusing`, tensors an earlier call observed on the same model,
    inputs and settings are returned without a forward pass, and only the others are observed.

    Raises:
        DataError: ``x`` is empty, of the wrong shape, or contains non-finite values.
    """
    try:
        x = as_inputs(x, "calib_data")
    except DataError as exc:
        raise DataError(f"{exc}; {field} needs inputs to calibrate activation ranges (pass calib_data= or "
                        "train_data=)") from exc
    adapter.check_input(head(x, 1), "calib_data")
    x = head(x, settings.samples)
    if not all_finite(x):
        raise DataError("calib_data: contains NaN or infinite values")
    cache = reuse.active()
    if cache is None:
        found = _observe(adapter, list(nodes), x, settings, batch_size, verbose, record, summarize)
        return Calibrated(found.ranges, found.outputs, found.moments if summarize > 0 else None)
    return _reusing(cache, adapter, list(dict.fromkeys(nodes)), x, settings, batch_size, verbose, record,
                    summarize)


@dataclass(frozen=True)
class _Run:
    """What one run of calibration passes found: ranges, recorded outputs (None when none were asked for
    or the adapter cannot read them so), the pass size after the first pass, each tensor's bytes
    per input (:data:`MODEL_OUTPUT` among them when it was read) and each node's moments on the first
    inputs (when asked for)."""

    ranges: dict[str, tuple[float, float]]
    outputs: np.ndarray | None
    step: int
    nbytes: dict[str, int]
    moments: dict[str, Moments]


def _step(batch_size: int, per_input: int) -> int:
    """Inputs per pass after the first: as many as fit in :data:`PASS_BYTES`, at most ``batch_size``."""
    return max(1, min(int(batch_size), PASS_BYTES // max(1, per_input)))


def _observe(adapter: ModelAdapter, nodes: list[str], x: np.ndarray, settings: ActivationQuant, batch_size: int,
             verbose: bool, record: int, summarize: int = 0, extra_bytes: int = 0, step: int | None = None) -> _Run:
    """Calibration passes over ``x`` for ``nodes``, recording the outputs of the first ``record`` inputs
    and the nodes' moments over the first ``summarize``.

    ``extra_bytes``: bytes per input of tensors an earlier run observed that a single run would hold
    too, so that the pass size (and with it the batches every observer sees) is the one a single run for
    all of them would choose; ``step``: that pass size, when already known."""
    n = n_samples(x)
    end = n if nodes else min(n, record)  # only outputs asked for: the passes that read them
    observers = {n: build_observer(settings.calibration, settings.calibration_options, settings) for n in nodes}
    # an observer that may keep its batches gets copies; the built-in ones keep none (see observers.base)
    borrow = all(getattr(type(o), "keeps_batches", True) is False for o in observers.values())
    start = time.perf_counter()
    recorded: list[np.ndarray] | None = [] if record > 0 else None
    moments: dict[str, Moments] = {}
    lo, size, passes, shown = 0, 1, 0, 0
    nbytes: dict[str, int] = {}
    label = f"calibration ({settings.calibration})"
    bar = progress.task(label, end, verbose, tensors=len(nodes))
    while lo < end:
        # The first pass reads one input, which tells what every tensor of the plan costs per input;
        # later passes take as many inputs as fit in PASS_BYTES (at most batch_size), so the memory
        # held at once does not grow with the number of samples or with the model's activations.
        wanted = list(nodes) + ([MODEL_OUTPUT] if recorded is not None and lo < record else [])
        got: set[str] = set()

        def consume(name: str, values: np.ndarray, first: int = lo) -> None:
            got.add(name)
            if passes == 0:
                nbytes[name] = int(np.asarray(values).nbytes)
            if name == MODEL_OUTPUT:
                if recorded is not None:
                    recorded.append(np.array(values[:record - first], dtype=np.float32))  # kept: a copy
                return
            observers[name].update(values if borrow else np.array(values))
            if first < summarize:
                part = first_rows(values, summarize - first)
                moments[name] = moments[name].merge(part) if name in moments else part

        adapter.stream_outputs(take(x, slice(lo, lo + size)), wanted, consume, size)
        missing = [w for w in nodes if w not in got]
        if missing:
            raise DataError(f"calibration: the pass over the model gave no values for {missing[0]!r}")
        if MODEL_OUTPUT in wanted and MODEL_OUTPUT not in got:
            recorded = None  # this adapter reads it only by predict: the caller runs that
        if passes == 0:
            step = step or _step(batch_size, sum(nbytes.values()) + extra_bytes)
        lo, passes = lo + size, passes + 1
        size = step
        bar.update(min(lo, end))
        if lo >= end or lo >= (shown + 1) * end / 4:  # a line per quarter of the samples
            shown = int(4 * lo / end)
            bar.line(f"{label}: {min(lo, end)}/{end} samples, {len(nodes)} tensors "
                     f"({time.perf_counter() - start:.1f}s)")
    bar.finish()
    _merge_ranks(observers, settings)
    ranges = {}
    for name, obs in observers.items():
        lo, hi = obs.range()
        ranges[name] = (float(lo), float(hi))
    kept = np.concatenate(recorded) if recorded else None
    return _Run(ranges, None if kept is None else kept.astype(np.float32, copy=False), int(step or 1), nbytes,
                moments)


def _merge_ranks(observers: dict[str, object], settings: ActivationQuant) -> None:
    """In a distributed job, every rank's observers become those of one process that saw all the ranks'
    calibration inputs (each rank calibrates on its own share)."""
    coll = collective.current()
    if coll.size <= 1:
        return
    for name in sorted(observers):  # the same order on every rank
        merge = getattr(observers[name], "merge", None)
        if merge is None:
            raise PluginError(f"activations.calibration: observer {settings.calibration!r} has no merge(collective, "
                              f"what) method, which calibration across {coll.size} ranks needs")
        merge(coll, f"calibration of {name!r} across ranks")


def _reusing(cache: reuse.ReuseCache, adapter: ModelAdapter, nodes: list[str], x: np.ndarray,
             settings: ActivationQuant, batch_size: int, verbose: bool, record: int, summarize: int) -> Calibrated:
    """:func:`calibrate_recording` inside :func:`slimkit.quant.reuse.reusing`: tensors observed earlier
    under the same key at the pass size this request implies are returned as they were; the others are
    observed in one run of passes at that size and kept. Every range is thus the one a run without the
    cache computes (the same observer over the same batches)."""
    entry = cache.calibration(reuse.calibration_key(adapter, settings, x, batch_size))
    wanted = nodes + ([MODEL_OUTPUT] if record > 0 else [])
    rows = min(record, n_samples(x))
    unknown = [w for w in wanted if w not in entry]
    observed: set[str] = set()
    if unknown:  # their size per input is learnt on the first pass; the known ones' counts towards the step
        extra = sum(entry[w].nbytes for w in wanted if w in entry)
        run = _observe(adapter, [u for u in unknown if u != MODEL_OUTPUT], x, settings, batch_size, verbose,
                       record if MODEL_OUTPUT in unknown else 0, summarize, extra_bytes=extra)
        _keep(entry, run, MODEL_OUTPUT in unknown, summarize)
        observed.update(unknown)
        step = run.step
    else:
        step = _step(batch_size, sum(entry[w].nbytes for w in wanted))
    invariant = bool(getattr(OBSERVERS.get(settings.calibration).impl, "batch_invariant", False))
    stale = [w for w in wanted if w not in observed and _stale(w, entry[w], step, rows, invariant)]
    if stale:  # observed in batches of another size (a request for other tensors): observe again at this one
        run = _observe(adapter, [s for s in stale if s != MODEL_OUTPUT], x, settings, batch_size, verbose,
                       record if MODEL_OUTPUT in stale else 0, summarize, step=step)
        _keep(entry, run, MODEL_OUTPUT in stale, summarize)
        observed.update(stale)
    fresh = sum(1 for node in nodes if node in observed)
    cache.count("calibration", hits=int(not observed), misses=int(bool(observed)))
    cache.count("calibration_tensors", hits=len(nodes) - fresh, misses=fresh)
    if not observed:
        progress.info(f"calibration ({settings.calibration}): {len(nodes)} tensors reused from an earlier "
                      "run on the same model and inputs", verbose)
    outputs = entry[MODEL_OUTPUT].value if record > 0 else None
    # moments only when every node has them over these rows (an earlier run may not have taken them)
    summarized = [entry[node].moments for node in nodes]
    moments = None
    if summarize > 0 and all(m is not None and m[0] == summarize for m in summarized):
        moments = {node: m[1] for node, m in zip(nodes, summarized)}
    return Calibrated({node: entry[node].value for node in nodes},
                      None if outputs is None else outputs[:rows].copy(), moments)


def _stale(name: str, kept: reuse.Observed, step: int, rows: int, invariant: bool = False) -> bool:
    """True when ``kept`` is not what a run at pass size ``step`` recording ``rows`` outputs would give.

    ``invariant``: the observer's result does not depend on how inputs are batched (min-max: the range
    of the union is the range of the ranges), so any pass size gives it."""
    if name != MODEL_OUTPUT:
        return not invariant and kept.step != step
    # outputs the adapter cannot read in calibration passes stay unreadable: nothing to observe again
    return kept.value is not None and (kept.step != step or len(kept.value) < rows)


def _keep(entry: dict[str, reuse.Observed], run: _Run, outputs: bool, summarize: int = 0) -> None:
    """Adds a run's ranges (with their moments over the first ``summarize`` inputs, and its recorded
    outputs, when it was asked for them) to a cache entry."""
    for name, value in run.ranges.items():
        moments = (summarize, run.moments[name]) if summarize > 0 and name in run.moments else None
        entry[name] = reuse.Observed(value, run.step, run.nbytes.get(name, 0), moments)
    if outputs:  # None: the adapter cannot read them in these passes, which stays true
        entry[MODEL_OUTPUT] = reuse.Observed(run.outputs, run.step, run.nbytes.get(MODEL_OUTPUT, 0))
