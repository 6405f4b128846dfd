"""Post-training static quantization: calibrate activation ranges, fix every site, and keep the fewest
layers float that the outputs' fidelity needs (:mod:`slimkit.quant.fallback`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimkit import checks
from slimkit.adapter import ModelAdapter
from slimkit.data import head
from slimkit.plugins import bounded
from slimkit.quant.calibrate import Calibrated, calibrate_recording
from slimkit.quant.known_outputs import MAPPING_SAMPLES
from slimkit.quant.fallback import MIN_QUANT_CORRELATION, fall_back, format_correlation
from slimkit.quant.methods import (
    FIDELITY_SAMPLES, QUANT_METHODS, QuantContext, QuantMethod, QuantOutcome, check_post_training_bits,
)
from slimkit.quant.plan import QuantPlan, plan_sites
from slimkit.quant.stage import Prepared, calibrated_acts, finish, weight_params
from slimkit.recipe import QuantizeStage

#: The fallback's default target: 0.01 above the correlation below which a quantized model is warned about,
#: because it is reached on the simulated model and calibration inputs, and onnxruntime's integer kernels
#: break rounding ties differently (random-weight ResNet50V2: simulated 0.9503, onnxruntime 0.9487).
FALLBACK_TARGET = round(MIN_QUANT_CORRELATION + 0.01, 6)


def quantize_static(prepared: Prepared, stage: QuantizeStage, x: np.ndarray, field: str,
                    verbose: bool = True) -> tuple[ModelAdapter, dict, Calibrated]:
    """Calibrates ``prepared``'s activation sites on ``x`` and returns the fixed fake-quant model.

    Returns:
        ``(model, params, calibrated)``: the fake-quant adapter, every site's parameters and what
        calibration found: the activation ranges, the float model's outputs on the first
        :data:`FIDELITY_SAMPLES` calibration inputs (None when the adapter cannot read them in the
        calibration passes) and each site's moments on the first :data:`MAPPING_SAMPLES` (export's
        mapping compares them; the float model is not run again for them).
    """
    nodes = [a.node for a in prepared.plan.acts]
    found = calibrate_recording(prepared.adapter, nodes, x, stage.activations, field, verbose=verbose,
                                record=checks.fidelity_samples(), summarize=MAPPING_SAMPLES)
    acts = calibrated_acts(prepared.plan, found.ranges)
    params = {**acts, **weight_params(prepared.adapter, prepared.plan, acts)}
    return finish(prepared.adapter, prepared.plan, params), params, found


@dataclass(frozen=True)
class StaticOptions:
    """Options of ``method: static``.

    Attributes:
        min_correlation: when the int8 model's outputs correlate less than this with the float model's
            on the calibration inputs, layers are kept float (earliest first) until they do.
        max_float_share: at most this share of the selected layers is kept float; 0 turns the fallback off.
    """

    min_correlation: float = bounded(FALLBACK_TARGET, 0.0, 1.0)
    max_float_share: float = bounded(0.5, 0.0, 1.0)


@QUANT_METHODS.register("static", StaticOptions)
class Static(QuantMethod):
    """``method: static``: int8 kernels per channel, uint8 activations from calibration; sensitive
    layers kept float when the outputs would stop following the float model's."""

    def check(self, stage: QuantizeStage, path: str) -> None:
        check_post_training_bits(stage, path, "static")

    def run(self, prepared: Prepared, stage: QuantizeStage, ctx: QuantContext) -> QuantOutcome:
        model, params, calibrated = quantize_static(prepared, stage, ctx.sample, ctx.field, ctx.verbose)
        ranges, reference, moments = calibrated.ranges, calibrated.outputs, calibrated.moments
        options: StaticOptions = self.options
        if options.max_float_share == 0 or len(prepared.plan.layers) < 2:
            return QuantOutcome(model, params, ranges, reference=reference, site_moments=moments)
        specs = {s.layer: s.kernel for s in prepared.plan.layers}
        acts = self.activation_spec(stage.activations)

        def replan(floated: set[str]) -> QuantPlan:
            kept = {name: spec for name, spec in specs.items() if name not in floated}
            return plan_sites(prepared.graph, kept, acts, stage.method, self.quantizes_outputs)

        found = fall_back(prepared.adapter, prepared.graph, prepared.plan, params, model,
                          lambda plan, p: finish(prepared.adapter, plan, p), replan,
                          head(ctx.sample, checks.fidelity_samples(reference)), options.min_correlation, options.max_float_share,
                          ctx.verbose, reference)
        if not found.floated:
            return QuantOutcome(model, params, ranges, outputs=found.outputs, site_moments=moments)
        kept_ranges = {node: r for node, r in ranges.items() if node in found.params}
        total = len(prepared.plan.layers)
        missed = "" if found.reached(options.min_correlation) else \
            f", short of min_correlation {options.min_correlation} (max_float_share {options.max_float_share})"
        more = f" and {len(found.floated) - 8} more" if len(found.floated) > 8 else ""
        message = (f"{len(found.floated)} of {total} selected layers kept float so that the outputs follow the "
                   f"float model's (correlation {format_correlation(found.before)} with every layer int8, "
                   f"{format_correlation(found.after)} "
                   f"now{missed}): {', '.join(found.floated[:8])}{more}")
        return QuantOutcome(found.model, found.params, kept_ranges, plan=found.plan, floated=found.floated,
                            warnings=(message,), outputs=found.outputs, site_moments=moments)

