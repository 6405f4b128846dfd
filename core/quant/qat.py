"""Quantization-aware training: fine-tune through fake-quant with straight-through rounding.

Activations follow a moving average of batch ranges (``ema``) or learn their step size (``lsq``,
initialised from calibration); kernels are quantized from their current range (``minmax``) or
learn their step size too. Bits from 2 to 8 are simulated. DoReFa-Net (``dorefa``, 1 to 8 bits) and
binarization (``bnn``, 1 bit) set their grids themselves: their kernels freeze to the values they
compute, on a grid their fixed parameters reproduce. Training runs through the adapter's
fine-tuning path, the one pruning uses, so pruning masks keep holding. Afterwards every site is
frozen to fixed numpy parameters: the model the stage returns computes what the export computes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.adapter import FitFn, HookChain, ModelAdapter, TrainHooks
from slimkit.errors import DataError, RecipeError
from slimkit.plugins import NoOptions
from slimkit.quant.calibrate import calibrate_recording
from slimkit.quant.fake_quant import LSQ_MIN_SCALE, mode_of
from slimkit.quant.methods import QUANT_METHODS, QuantContext, QuantMethod, QuantOutcome
from slimkit.quant.plan import FakeQuantSpec, SiteParams
from slimkit.quant.stage import Prepared, calibrated_acts, finish, weight_params
from slimkit.quant.specs import activation_params, activation_spec, kernel_params
from slimkit.recipe import ActivationQuant, QuantizeStage, WeightQuant


class StepCounter(TrainHooks):
    """Counts optimizer steps for the report."""

    def __init__(self) -> None:
        self.total_steps = 0

    def step_end(self, step: int) -> None:
        self.total_steps = step


def quantize_aware(prepared: Prepared, stage: QuantizeStage, x: np.ndarray, train_data: Any,
                   fit_fn: FitFn | None, progress: TrainHooks | None, field: str,
                   verbose: bool = True, objective: Any = None) -> tuple[ModelAdapter, dict, dict, int]:
    """Fine-tunes ``prepared`` with fake-quant and returns the frozen model.

    Returns:
        ``(model, params, ranges, steps)``: the fixed fake-quant adapter, its parameters, the
        activation ranges the parameters cover, and the optimizer steps run.

    Raises:
        DataError: an activation site never saw a training batch (its range was never learned).
    """
    plan = prepared.plan
    sim = prepared.adapter.with_fake_quant(plan)
    init: dict[str, SiteParams] = {}
    if any(learns(a.spec) for a in plan.acts):
        nodes = [a.node for a in plan.acts]
        ranges = calibrate_recording(prepared.adapter, nodes, x, stage.activations, field, verbose=verbose).ranges
        init.update(calibrated_acts(plan, ranges))
    for site in plan.layers:
        if learns(site.kernel):
            kernel = prepared.adapter.get_weights(site.layer)["kernel"]
            init[f"{site.layer}/kernel"] = SiteParams.of(kernel_params(kernel, site.kernel))
    if init:
        sim.set_quant_params(init)  # lsq sites start from these and keep learning
    counter = StepCounter()
    # objective: the stage's distillation loss (distillation-aware QAT), else the task loss
    sim.fit(train_data, stage.fine_tune, HookChain(counter, *([progress] if progress else [])), fit_fn, objective)

    state = sim.quant_state()
    trained = sim.without_fake_quant()
    acts: dict[str, SiteParams] = {}
    ranges: dict[str, tuple[float, float]] = {}
    for a in plan.acts:
        got = state.get(a.node, {})
        own = mode_of(a.spec.mode).frozen_activation(a.spec)
        if own is not None:  # a grid the mode defines (dorefa, bnn): nothing learned from data
            fixed, ranges[a.node] = own
            if fixed is not None:
                acts[a.node] = fixed
            continue
        if learns(a.spec):
            acts[a.node] = _learned(a.node, a.spec, got)
            continue
        lo, hi = float(np.asarray(got.get("min", np.nan))), float(np.asarray(got.get("max", np.nan)))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise DataError(f"{field}: activation {a.node!r} saw no training batch, so its range was "
                            "never learned; check train_data")
        ranges[a.node] = (lo, hi)
        acts[a.node] = SiteParams.of(activation_params(lo, hi, a.spec))
    learned = {f"{s.layer}/kernel": _learned(f"{s.layer}/kernel", s.kernel, state.get(f"{s.layer}/kernel", {}))
               for s in plan.layers if learns(s.kernel)}
    for s in plan.layers:
        # Modes that map weights to values themselves (dorefa, bnn): the kernel becomes those values,
        # which its fixed parameters reproduce exactly (and the export writes as integers).
        frozen = mode_of(s.kernel.mode).frozen_kernel(trained.get_weights(s.layer)["kernel"], s.kernel)
        if frozen is not None:
            trained.set_weights(s.layer, {"kernel": frozen[0]})
            learned[f"{s.layer}/kernel"] = frozen[1]
    params = {**acts, **weight_params(trained, plan, acts, learned)}
    return finish(trained, plan, params), params, ranges, counter.total_steps


def _learned(key: str, spec: Any, state: dict[str, np.ndarray]) -> SiteParams:
    """Fixed params from a learned step size (clamped positive) and its zero point."""
    if "scale" not in state:
        raise DataError(f"learned quantizer {key!r} has no scale; was it trained?")
    scale = np.maximum(np.asarray(state["scale"], np.float32), np.float32(LSQ_MIN_SCALE))
    zp = np.clip(np.rint(np.asarray(state["zero_point"])), spec.qmin, spec.qmax).astype(np.int32)
    return SiteParams(scale.reshape(zp.shape), zp, spec.qmin, spec.qmax, spec.axis if scale.ndim else None)


def learns(spec: FakeQuantSpec) -> bool:
    """Whether the site's mode learns its scale (it then starts from calibrated parameters)."""
    return mode_of(spec.mode).learns_scale


@QUANT_METHODS.register("qat", NoOptions)
class QAT(QuantMethod):
    """``method: qat``: fine-tunes through fake-quant; kernels and activations in the modes the
    recipe's ``weights.learn`` and ``activations.learn`` name, with the bits each mode simulates
    (2 to 8; dorefa 1 to 8; bnn 1)."""

    trains = True

    def check(self, stage: QuantizeStage, path: str) -> None:
        if stage.fine_tune is None or stage.fine_tune.epochs == 0:
            raise RecipeError(f"{path}.fine_tune: qat trains; give it fine_tune with epochs >= 1")

    def kernel_mode(self, weights: WeightQuant) -> str:
        return weights.learn

    def activation_spec(self, acts: ActivationQuant) -> FakeQuantSpec:
        return activation_spec(acts, acts.learn)

    def run(self, prepared: Prepared, stage: QuantizeStage, ctx: QuantContext) -> QuantOutcome:
        model, params, ranges, steps = quantize_aware(prepared, stage, ctx.sample, ctx.train_data, ctx.fit_fn,
                                                      ctx.progress, ctx.field, ctx.verbose, ctx.objective)
        return QuantOutcome(model, params, ranges, steps)
