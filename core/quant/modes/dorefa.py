"""``dorefa``: DoReFa-Net's k-bit quantizers (Zhou et al., 2016, "DoReFa-Net: Training Low Bitwidth
Convolutional Neural Networks with Low Bitwidth Gradients").

Weights (``n = 2^k - 1``): ``w_t = tanh(w) / (2 max|tanh(w)|) + 0.5``, ``q = round(n w_t)`` with a
straight-through gradient, ``w_q = 2 q / n - 1``: values on the symmetric grid of ``2^k`` odd
multiples of ``1 / n`` in [-1, 1] (no zero level). slimkit multiplies ``w_q`` by ``alpha = max|w|``
(per output channel when ``weights.per_channel``, else per layer; the tanh normaliser follows the
same grouping): the paper's transform alone puts every layer's weights in [-1, 1], which changes the
output scale of every layer without a batch norm after it. ``alpha`` and the normaliser are constants
to the gradient; it reaches ``w`` through tanh and the rounding. A weight that is exactly zero (a
pruned one) stays zero. The values are the integers ``2q - n`` (odd, in [-n, n]) times ``alpha / n``:
an int8 container holds them for k <= 7.

Activations: ``clip(x, 0, 1)``, then ``round(n x) / n`` straight-through. The clip's lower end needs
a site that is never negative, so the site must be a ReLU (ReLU6) output, else a RecipeError; the
paper keeps the first layer's input and the last layer's output float, as excluding those layers
does. The values export as uint8 with scale ``1 / n`` and zero point ``255 - n``: QuantizeLinear then
saturates at 1.0 exactly where the clip does (and the ReLU before it does the lower end).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from slimkit.ops import NUMPY_OPS, TensorOps
from slimkit.plugins import NoOptions
from slimkit.quant.fake_quant import along, fake_quantize, other_axes
from slimkit.quant.modes.base import QUANT_MODES, Mode, straight_through
from slimkit.quant.plan import FakeQuantSpec, SiteParams, never_negative

if TYPE_CHECKING:
    from slimkit.graph import LayerGraph

#: uint8, the container of frozen activation sites.
_UINT8 = (0, 255)


def levels(bits: int) -> int:
    """``n = 2^k - 1``: steps of a k-bit DoReFa grid."""
    return 2 ** int(bits) - 1


def step(n: int) -> float:
    """``1 / n`` as float32 (a Python float holding a float32 value, as QuantizeLinear's scale)."""
    return float(np.float32(1.0 / n))


def kernel_grid(ops: TensorOps, x: Any, spec: Any, n: int) -> tuple[Any, Any]:
    """``(levels, scale)``: the odd integers ``2q - n`` of each weight (straight-through gradient) and
    ``alpha / n`` per channel of ``spec.axis`` (or per tensor); the value is ``levels * scale``."""
    axes = other_axes(spec, x)
    t = ops.tanh(x)
    peak = ops.stop_gradient(ops.amax(ops.abs(t), axes))
    peak = ops.where(peak > 0, peak, ops.full_like(peak, 1.0))
    v = (t / (along(ops, peak, spec, x) * 2.0) + 0.5) * float(n)
    q = straight_through(ops, ops.round(v), v)
    alpha = ops.stop_gradient(ops.amax(ops.abs(x), axes))
    alpha = ops.where(alpha > 0, alpha, ops.full_like(alpha, 1.0))  # an all-zero channel: any scale
    return q * 2.0 - float(n), alpha / float(n)


@QUANT_MODES.register("dorefa", NoOptions)
class DoReFa(Mode):
    learnable_for = ("weights", "activations")
    bits = (1, 8)
    own_grid = True

    def integer_range(self, bits: int, role: str, signed: bool, reduce_range: bool = False) -> tuple[int, int]:
        n = levels(bits)
        return (-n, n) if role == "kernel" else (0, n)

    def forward(self, ops: TensorOps, site: Any, x: Any, training: bool) -> Any:
        n = int(site.qmax)
        if site.role == "activation":
            return fake_quantize(ops, ops.clip(x, 0.0, 1.0), step(n), 0.0, 0, n)
        q, scale = kernel_grid(ops, x, site, n)
        y = q * along(ops, scale, site, x)
        return ops.where(ops.abs(x) > 0, y, ops.full_like(y, 0.0))

    def frozen(self, spec: FakeQuantSpec, role: str) -> FakeQuantSpec:
        frozen = super().frozen(spec, role)
        if role == "activation":  # the k-bit grid in uint8, saturating at 1.0 (frozen_activation)
            frozen = FakeQuantSpec(*_UINT8, spec.symmetric, spec.axis, frozen.mode, spec.momentum, spec.bits, False)
        return frozen

    def frozen_activation(self, spec: FakeQuantSpec) -> tuple[SiteParams, tuple[float, float]]:
        n = spec.qmax
        params = SiteParams(np.float32(step(n)), np.int32(_UINT8[1] - n), *_UINT8)
        return params, (0.0, 1.0)

    def frozen_kernel(self, kernel: np.ndarray, spec: FakeQuantSpec) -> tuple[np.ndarray, SiteParams]:
        kernel = np.asarray(kernel, np.float32)
        q, scale = kernel_grid(NUMPY_OPS, kernel, spec, spec.qmax)
        values = np.where(kernel != 0, q * along(NUMPY_OPS, scale, spec, kernel), 0.0).astype(np.float32)
        scale = np.asarray(scale, np.float32)
        return values, SiteParams(scale, np.zeros(scale.shape, np.int32), spec.qmin, spec.qmax,
                                  spec.axis if scale.ndim else None)

    def site_problem(self, graph: "LayerGraph", node: str) -> str | None:
        if never_negative(graph, node):
            return None
        return ("it is not a ReLU output, so it can be negative, and DoReFa clips activations to [0, 1] "
                "(DoReFa-Net keeps the first layer's input and the last layer's output float)")
