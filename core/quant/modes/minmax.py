"""``minmax``: the range of the current tensor (per channel on the site's axis); QAT's kernels."""

from __future__ import annotations

from typing import Any

from slimkit.ops import TensorOps
from slimkit.quant.fake_quant import quantize_with, range_params, value_range
from slimkit.plugins import NoOptions
from slimkit.quant.modes.base import QUANT_MODES, Mode


@QUANT_MODES.register("minmax", NoOptions)
class MinMax(Mode):
    learnable_for = ("weights",)

    def forward(self, ops: TensorOps, site: Any, x: Any, training: bool) -> Any:
        lo, hi = value_range(ops, site, x)
        scale, zp = range_params(ops, lo, hi, site.qmin, site.qmax, site.symmetric)
        return quantize_with(ops, site, x, scale, zp)
