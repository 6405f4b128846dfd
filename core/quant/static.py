"""Post-training static quantization: calibrate activation ranges, then fix every site."""

from __future__ import annotations

import numpy as np

from slimkit.adapter import ModelAdapter
from slimkit.plugins import NoOptions
from slimkit.quant.calibrate import calibrate
from slimkit.quant.methods import QUANT_METHODS, QuantContext, QuantMethod, QuantOutcome, check_post_training_bits
from slimkit.quant.stage import Prepared, calibrated_acts, finish, weight_params
from slimkit.recipe import QuantizeStage


def quantize_static(prepared: Prepared, stage: QuantizeStage, x: np.ndarray, field: str,
                    verbose: bool = True) -> tuple[ModelAdapter, dict, dict]:
    """Calibrates ``prepared``'s activation sites on ``x`` and returns the fixed fake-quant model.

    Returns:
        ``(model, params, ranges)``: the fake-quant adapter, every site's parameters and the
        calibrated activation ranges.
    """
    nodes = [a.node for a in prepared.plan.acts]
    ranges = calibrate(prepared.adapter, nodes, x, stage.activations, field, verbose=verbose)
    acts = calibrated_acts(prepared.plan, ranges)
    params = {**acts, **weight_params(prepared.adapter, prepared.plan, acts)}
    return finish(prepared.adapter, prepared.plan, params), params, ranges


@QUANT_METHODS.register("static", NoOptions)
class Static(QuantMethod):
    """``method: static``: int8 kernels per channel, uint8 activations from calibration."""

    def check(self, stage: QuantizeStage, path: str) -> None:
        check_post_training_bits(stage, path, "static")

    def run(self, prepared: Prepared, stage: QuantizeStage, ctx: QuantContext) -> QuantOutcome:
        model, params, ranges = quantize_static(prepared, stage, ctx.sample, ctx.field, ctx.verbose)
        return QuantOutcome(model, params, ranges)
