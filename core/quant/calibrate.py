"""Calibration: forward passes through the adapter, activation ranges from core's observers.

The adapter only runs the model and hands back tensors (:meth:`ModelAdapter.layer_outputs`); the
observers (min-max, percentile, entropy, MSE) live in :mod:`slimkit.quant.observers`. Inputs are fed
in small batches so memory stays bounded however large the model's activations are.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from slimkit.adapter import MODEL_OUTPUT, ModelAdapter
from slimkit.data import all_finite, as_inputs, head, n_samples, take
from slimkit.errors import DataError
from slimkit.quant.observers import build_observer
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
    """

    ranges: dict[str, tuple[float, float]]
    outputs: np.ndarray | None = None


def calibrate_recording(
    adapter: ModelAdapter,
    nodes: list[str],
    x: np.ndarray,
    settings: ActivationQuant,
    field: str,
    batch_size: int = 16,
    verbose: bool = True,
    record: int = 0,
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
        verbose: print a progress line per quarter of the samples.

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
    n = n_samples(x)
    observers = {n: build_observer(settings.calibration, settings.calibration_options, settings) for n in nodes}
    start = time.perf_counter()
    recorded: list[np.ndarray] | None = [] if record > 0 else None
    lo, size, passes, shown = 0, 1, 0, 0
    while lo < n:
        # The first pass reads one input, which tells what every tensor of the plan costs per input;
        # later passes take as many inputs as fit in PASS_BYTES (at most batch_size), so the memory
        # held at once does not grow with the number of samples or with the model's activations.
        wanted = list(nodes) + ([MODEL_OUTPUT] if recorded is not None and lo < record else [])
        outputs = adapter.layer_outputs(take(x, slice(lo, lo + size)), wanted, size)
        for name in nodes:
            observers[name].update(outputs[name])
        if MODEL_OUTPUT in wanted:
            if MODEL_OUTPUT in outputs and recorded is not None:
                recorded.append(outputs[MODEL_OUTPUT][:record - lo])
            else:  # this adapter reads it only by predict: the caller runs that
                recorded = None
        if passes == 0:
            per_input = max(1, sum(int(np.asarray(v).nbytes) for v in outputs.values()))
            step = max(1, min(int(batch_size), PASS_BYTES // per_input))
        del outputs
        lo, passes = lo + size, passes + 1
        size = step
        if verbose and (lo >= n or lo >= (shown + 1) * n / 4):
            shown = int(4 * lo / n)
            print(f"[slimkit] calibration ({settings.calibration}): {min(lo, n)}/{n} "
                  f"samples, {len(nodes)} tensors ({time.perf_counter() - start:.1f}s)",
                  file=sys.stderr, flush=True)
    ranges = {}
    for name, obs in observers.items():
        lo, hi = obs.range()
        ranges[name] = (float(lo), float(hi))
    kept = np.concatenate(recorded) if recorded else None
    return Calibrated(ranges, None if kept is None else kept.astype(np.float32, copy=False))
