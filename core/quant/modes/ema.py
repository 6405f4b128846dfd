"""``ema``: a moving average of each batch's range (training mode; the first batch sets it), and the
parameters of that range; identity before the first update."""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.ops import TensorOps
from slimkit.quant.fake_quant import along, batch_range, quantize_with, range_params
from slimkit.plugins import NoOptions
from slimkit.quant.modes.base import QUANT_MODES, Mode


@QUANT_MODES.register("ema", NoOptions)
class EMA(Mode):
    learnable_for = ("activations",)

    def state(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"min": np.array(values["range_min"], np.float32), "max": np.array(values["range_max"], np.float32)}

    def forward(self, ops: TensorOps, site: Any, x: Any, training: bool) -> Any:
        lo, hi = ops.read(site.range_min), ops.read(site.range_max)
        if training:
            bmin, bmax = batch_range(ops, site, x)
            m = float(site.momentum)
            lo = ops.where(ops.isnan(lo), bmin, lo * m + bmin * (1.0 - m))
            hi = ops.where(ops.isnan(hi), bmax, hi * m + bmax * (1.0 - m))
            ops.assign(site.range_min, lo)
            ops.assign(site.range_max, hi)
        ok = ops.logical_and(ops.isfinite(lo), ops.isfinite(hi))
        zero = ops.full_like(lo, 0.0)
        scale, zp = range_params(ops, ops.where(ok, lo, zero), ops.where(ok, hi, zero), site.qmin, site.qmax,
                                 site.symmetric)
        y = quantize_with(ops, site, x, scale, zp)
        return ops.where(along(ops, ok, site, x), y, x)
