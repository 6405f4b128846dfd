"""``fixed``: the scale and zero point a calibration (or the user) set; identity until then."""

from __future__ import annotations

from typing import Any

from slimkit.ops import TensorOps
import numpy as np

from slimkit.quant.fake_quant import once_ready, quantize_with
from slimkit.plugins import NoOptions
from slimkit.quant.modes.base import QUANT_MODES, Mode, params_state


@QUANT_MODES.register("fixed", NoOptions)
class Fixed(Mode):
    exportable = True

    def state(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return params_state(values)

    def forward(self, ops: TensorOps, site: Any, x: Any, training: bool) -> Any:
        scale = ops.stop_gradient(ops.read(site.scale))
        y = quantize_with(ops, site, x, scale, ops.read(site.zero_point))
        return once_ready(ops, ops.read(site.ready) > 0, y, x)
