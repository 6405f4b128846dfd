"""Fidelity-driven fallback: keep the fewest layers float that bring int8 outputs back to the float model's.

Post-training int8 changes each layer's output a little; deep networks that amplify small changes
(random-weight or poorly conditioned ones, long chains of depthwise blocks) can turn that into outputs
that no longer follow the float model's. Intel Neural Compressor's answer is to fall back sensitive
layers to float until an accuracy target holds; slimkit does the same without labels, on the outputs'
Pearson correlation with the float model's over the calibration inputs.

Which layers: a prefix of the quantized layers in graph order, its length found by bisection. An error
made early passes through every later layer, so early layers are the ones amplification makes costly,
and a contiguous float region has one float/int8 boundary, so onnxruntime still runs everything after it
as integer kernels. Each trial is one forward pass of the simulated model over the same inputs, about
log2(layers) of them. A float layer whose input and output would both stay quantized (its neighbours
keep them on the grid) is put back: onnxruntime would quantize its weights anyway
(:func:`slimkit.quant.plan.float_between_sites`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from slimkit import progress
from slimkit.adapter import ModelAdapter
from slimkit.data import PROBE_BATCH
from slimkit.graph import LayerGraph
from slimkit.quant.known_outputs import outputs_on
from slimkit.quant.plan import QuantPlan, SiteParams, float_between_sites

#: A quantized model whose outputs correlate less than this with the float model's is reported and warned
#: about (and is the default target of the static method's fallback): int8 then changes what the model
#: computes, not just its precision.
MIN_QUANT_CORRELATION = 0.95


def output_correlation(ref: np.ndarray, got: np.ndarray) -> float | None:
    """Pearson r of two models' outputs over all samples and outputs; None when it is undefined
    (shapes differ, fewer than two values, or a constant output)."""
    ref, got = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    if ref.shape != got.shape or ref.size < 2 or np.std(ref) == 0 or np.std(got) == 0:
        return None
    return float(np.corrcoef(ref, got)[0, 1])


@dataclass(frozen=True)
class Fallback:
    """The outcome: the model to keep, its plan and parameters, and what the search did.

    Attributes:
        model: the fixed fake-quant model.
        plan: its sites (a subset of the full plan's).
        params: its sites' parameters.
        floated: layers kept float, in graph order.
        before: the full plan's correlation with the float model (None if undefined).
        after: the kept model's.
        trials: forward passes the search made (the full plan's included).
        outputs: the float model's and the kept model's outputs on the compared inputs.
    """

    model: ModelAdapter
    plan: QuantPlan
    params: dict[str, SiteParams]
    floated: tuple[str, ...]
    before: float | None
    after: float | None
    trials: int
    outputs: tuple[np.ndarray, np.ndarray]

    def reached(self, target: float) -> bool:
        """The kept model's outputs correlate at least ``target`` with the float model's."""
        return self.after is not None and self.after >= target


def fall_back(
    float_model: ModelAdapter,
    graph: LayerGraph,
    plan: QuantPlan,
    params: dict[str, SiteParams],
    quantized: ModelAdapter,
    build: Callable[[QuantPlan, dict[str, SiteParams]], ModelAdapter],
    replan: Callable[[set[str]], QuantPlan],
    x: Any,
    target: float,
    max_share: float,
    verbose: bool = True,
    reference: np.ndarray | None = None,
) -> Fallback:
    """The plan with the shortest float prefix whose outputs correlate at least ``target`` with the float model's.

    Args:
        float_model: the float model the plan quantizes.
        graph: its layer graph.
        plan: the full plan; ``params`` holds every one of its sites' parameters.
        params: site parameters (a smaller plan's sites are a subset: sites belong to the layers
            that read or write a tensor, and calibration does not depend on which layers are float).
        quantized: the fixed fake-quant model of the full plan.
        build: makes the fixed fake-quant model of a plan and its parameters.
        replan: the plan of the stage's layers less the given float ones.
        x: the inputs to compare outputs on.
        target: the correlation to reach.
        max_share: at most this share of the plan's layers is kept float.
        verbose: show a line per trial.
        reference: the float model's outputs on the first rows of ``x``, when calibration read them.

    Returns:
        The full plan when it already reaches ``target`` (or nothing may fall back), else the shortest
        prefix that does, else the trial that came closest.
    """
    ref = outputs_on(float_model, x, reference)
    order = [s.layer for s in plan.layers]
    cache: dict[int, tuple[float | None, QuantPlan, dict[str, SiteParams], ModelAdapter, tuple[str, ...],
                           np.ndarray]] = {}

    def trial(k: int) -> float:
        if k not in cache:
            floated = _closed(graph, set(order[:k]), replan)
            sub = replan(floated) if floated else plan
            keys = set(sub.site_keys())
            sub_params = {key: p for key, p in params.items() if key in keys}
            model = build(sub, sub_params) if k else quantized
            got = model.predict(x, PROBE_BATCH)
            r = output_correlation(ref, got)
            cache[k] = (r, sub, sub_params, model, tuple(n for n in order if n in floated), got)
            if verbose and k:
                progress.info(f"fallback: {len(cache[k][4])} of {len(order)} layers float, outputs correlate "
                              f"{format_correlation(r)} with the float model's (target {target})")
        r = cache[k][0]
        return -1.0 if r is None else r

    limit = int(max_share * len(order))
    if trial(0) < target and limit > 0 and trial(limit) >= target:
        lo, hi = 0, limit  # trial(lo) misses the target, trial(hi) reaches it
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if trial(mid) >= target:
                hi = mid
            else:
                lo = mid
        best = hi
    else:
        best = max(cache, key=lambda k: (trial(k), -k))  # the full plan, unless a fallback came closer
    r, sub, sub_params, model, floated, got = cache[best]
    return Fallback(model, sub, sub_params, floated, cache[0][0], r, len(cache), (ref, got))


def _closed(graph: LayerGraph, floated: set[str], replan: Callable[[set[str]], QuantPlan]) -> set[str]:
    """``floated`` less the layers onnxruntime would quantize anyway (input and output left on the grid)."""
    while floated:
        sandwiched = set(float_between_sites(graph, replan(floated))) & floated
        if not sandwiched:
            break
        floated = floated - sandwiched
    return floated


def format_correlation(r: float | None) -> str:
    """``r`` with two significant digits of its distance from 1 (at least four decimals, at most eight),
    so that a value short of a target such as 0.99999 never prints as ``1``; ``n/a`` when undefined."""
    if r is None:
        return "n/a"
    deficit = 1.0 - r
    decimals = 4 if deficit <= 0 else min(8, max(4, math.ceil(-math.log10(deficit)) + 1))
    return f"{r:.{decimals}f}".rstrip("0").rstrip(".")
