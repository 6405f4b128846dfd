"""``dynamic``: ONNX ``DynamicQuantizeLinear`` on the current tensor (per tensor, uint8 range)."""

from __future__ import annotations

from typing import Any

from slimkit.ops import TensorOps
from slimkit.quant.fake_quant import dynamic_params, fake_quantize
from slimkit.plugins import NoOptions
from slimkit.quant.modes.base import QUANT_MODES, Mode


@QUANT_MODES.register("dynamic", NoOptions)
class Dynamic(Mode):
    runtime_range = True

    keeps_mode_when_set = True  # its range is the tensor's at every call
    takes_range_when_set = False

    def forward(self, ops: TensorOps, site: Any, x: Any, training: bool) -> Any:
        scale, zp = dynamic_params(ops, ops.stop_gradient(x), site.qmin, site.qmax)
        return fake_quantize(ops, x, scale, zp, site.qmin, site.qmax)
