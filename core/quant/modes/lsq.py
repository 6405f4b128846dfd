"""``lsq``: a learned step size (Esser et al., 2020, "Learned Step Size Quantization").

The scale is a trained variable with a fixed zero point. It starts from the parameters set on the
site (a calibration), else from the first training batch: ``2 * mean|x| / sqrt(qmax)``, the zero
point from that batch's range. Its gradient is scaled by ``g = 1 / sqrt(N * qmax)``, ``N`` being the
elements one scale covers: the weights per output channel (per-channel kernels) or per tensor, and
the features of one sample for activations (the batch does not count), as the paper defines it.
The forward pass uses ``max(scale, 1e-8)`` with a straight-through gradient, so a scale pushed
below stays trainable. In eval mode a site without a scale yet passes values through.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.ops import TensorOps
from slimkit.quant.fake_quant import (
    LSQ_MIN_SCALE, batch_range, channel_axis, once_ready, other_axes, quantize_with, range_params, value_range,
)
from slimkit.plugins import NoOptions
from slimkit.quant.modes.base import QUANT_MODES, Mode, params_state


def elements_per_scale(ops: TensorOps, site: Any, x: Any) -> Any:
    """``N`` of the gradient scale: elements one scale covers, per sample for activations."""
    n = ops.size(x)
    if site.role == "activation" and len(x.shape) > 0:
        n = n / ops.size(x, 0)
    axis = channel_axis(site, x)
    if axis is not None:
        n = n / ops.size(x, axis)
    return ops.maximum(n, 1.0)


@QUANT_MODES.register("lsq", NoOptions)
class LSQ(Mode):
    learnable_for = ("weights", "activations")

    keeps_mode_when_set = True  # set parameters are where learning starts
    learns_scale = True

    def state(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return params_state(values, np.maximum(np.asarray(values["scale"], np.float32), np.float32(LSQ_MIN_SCALE)))

    def forward(self, ops: TensorOps, site: Any, x: Any, training: bool) -> Any:
        ready = ops.read(site.ready) > 0
        if training:
            data = ops.stop_gradient(x)
            init_scale = ops.mean(ops.abs(data), other_axes(site, data)) * (2.0 / max(site.qmax, 1) ** 0.5)
            init_scale = ops.maximum(init_scale, LSQ_MIN_SCALE)
            observed = value_range(ops, site, data)
            if site.role == "activation":  # a batch split over replicas starts every replica alike
                init_scale, observed = ops.across_replicas(init_scale, "mean"), batch_range(ops, site, data)
            _, init_zp = range_params(ops, *observed, site.qmin, site.qmax, site.symmetric)
            ops.assign(site.scale, ops.where(ready, ops.stop_gradient(ops.read(site.scale)), init_scale))
            ops.assign(site.zero_point, ops.where(ready, ops.read(site.zero_point), init_zp))
            ops.assign(site.ready, ops.full_like(ops.read(site.ready), 1.0))
        scale = ops.read(site.scale)
        # value max(scale, min), gradient straight through to the variable ...
        scale = scale + ops.stop_gradient(ops.maximum(scale, LSQ_MIN_SCALE) - scale)
        # ... then value unchanged, gradient times g
        g = 1.0 / ops.sqrt(elements_per_scale(ops, site, x) * float(max(site.qmax, 1)))
        scale = ops.stop_gradient(scale) + (scale * g - ops.stop_gradient(scale * g))
        y = quantize_with(ops, site, x, scale, ops.read(site.zero_point))
        return y if training else once_ready(ops, ready, y, x)
