"""``bnn``: binarization as BinaryNet (Courbariaux, Hubara et al., 2016, "Binarized Neural Networks").

Forward: ``sign(x)`` with ``sign(0) = +1``; backward: the "hardtanh" straight-through estimator, the
gradient passed where ``|x| <= 1`` and zeroed elsewhere.

Weights are scaled by XNOR-Net's ``alpha = mean|w|`` (Rastegari et al., 2016), per output channel when
``weights.per_channel`` (else per layer), a constant to the gradient: plain +-1 weights change the
output scale of every layer by orders of magnitude, which a pretrained model does not survive. The
mean is over the nonzero weights, and a weight that is exactly zero (a pruned one) stays zero. The
values are the integers -1, (0,) +1 times ``alpha``: int8 with scale ``alpha`` and zero point 0.

Activations are ``sign(x)`` unscaled, as in BinaryNet, so they need a site that can be negative: a ReLU
output (always +1), the model's input (BinaryNet keeps the first layer's input real-valued) and the
model's output are refused at planning. A binarized activation stays ``bnn`` in the quantized model
(the layers reading it keep float biases, as in training); no QuantizeLinear/DequantizeLinear pair
computes ``sign``, so such a model is not exported (its ``export_refusal``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from slimkit.ops import NUMPY_OPS, TensorOps
from slimkit.plugins import NoOptions
from slimkit.quant.fake_quant import along, other_axes
from slimkit.quant.modes.base import QUANT_MODES, Mode, straight_through
from slimkit.quant.plan import FakeQuantSpec, SiteParams, model_boundary, never_negative

if TYPE_CHECKING:
    from slimkit.graph import LayerGraph


def binarize(ops: TensorOps, x: Any) -> Any:
    """``sign(x)`` (+1 at 0) forward, the gradient of ``clip(x, -1, 1)`` backward."""
    signs = ops.where(x >= 0, ops.full_like(x, 1.0), ops.full_like(x, -1.0))
    return straight_through(ops, signs, ops.clip(x, -1.0, 1.0))


def kernel_scale(ops: TensorOps, x: Any, spec: Any) -> Any:
    """``alpha``: mean|w| over the nonzero weights of each channel of ``spec.axis`` (or of the tensor)."""
    axes = other_axes(spec, x)
    mag = ops.abs(ops.stop_gradient(x))
    nonzero = ops.mean(ops.where(mag > 0, ops.full_like(mag, 1.0), ops.full_like(mag, 0.0)), axes)
    alpha = ops.mean(mag, axes) / ops.maximum(nonzero, 1e-30)
    return ops.where(alpha > 0, alpha, ops.full_like(alpha, 1.0))  # an all-zero channel: any scale


@QUANT_MODES.register("bnn", NoOptions)
class BNN(Mode):
    learnable_for = ("weights", "activations")
    bits = (1, 1)
    own_grid = True
    keeps_mode_when_set = True  # parameters set on a binarized activation do not replace its sign
    export_refusal = ("it is binarized with sign() (activations.learn: bnn), which no QuantizeLinear/"
                      "DequantizeLinear pair computes, so onnxruntime cannot run it as an integer tensor (an "
                      "ONNX Sign gives 0 at 0 and runs in float); quantize activations with learn: ema or "
                      "dorefa to export (binarized weights export as int8)")

    def integer_range(self, bits: int, role: str, signed: bool, reduce_range: bool = False) -> tuple[int, int]:
        return -1, 1

    def forward(self, ops: TensorOps, site: Any, x: Any, training: bool) -> Any:
        signs = binarize(ops, x)
        if site.role == "activation":
            return signs
        y = signs * along(ops, kernel_scale(ops, x, site), site, x)
        return ops.where(ops.abs(x) > 0, y, ops.full_like(y, 0.0))

    def frozen(self, spec: FakeQuantSpec, role: str) -> FakeQuantSpec:
        return spec if role == "activation" else super().frozen(spec, role)

    def frozen_activation(self, spec: FakeQuantSpec) -> tuple[None, tuple[float, float]]:
        # No parameters: the layers reading +-1 keep float biases, as they trained. An int32 bias in units
        # of input scale (1) times alpha would move each bias by up to alpha / 2, and put it on the grid of
        # the +-alpha sums, where a sum of exactly 0 then takes its sign from float rounding noise.
        return None, (-1.0, 1.0)

    def frozen_kernel(self, kernel: np.ndarray, spec: FakeQuantSpec) -> tuple[np.ndarray, SiteParams]:
        kernel = np.asarray(kernel, np.float32)
        # alpha summed in float64: the same float32 whatever the layout (Keras (in, out), PyTorch (out, in))
        axes = other_axes(spec, kernel)
        mag = np.abs(kernel.astype(np.float64))
        alpha = mag.sum(axis=axes) / np.maximum(np.count_nonzero(mag, axis=axes), 1)
        scale = np.asarray(np.where(alpha > 0, alpha, 1.0), np.float32)
        signs = np.where(kernel >= 0, np.float32(1.0), np.float32(-1.0))
        values = np.where(kernel != 0, signs * along(NUMPY_OPS, scale, spec, kernel), 0.0).astype(np.float32)
        return values, SiteParams(scale, np.zeros(scale.shape, np.int32), -1, 1, spec.axis if scale.ndim else None)

    def site_problem(self, graph: "LayerGraph", node: str) -> str | None:
        if never_negative(graph, node):
            return "it is a ReLU output, never negative, so its sign would always be +1"
        boundary = model_boundary(graph, node)
        if boundary == "input":
            return "it is the model's input, which BinaryNet keeps real-valued (the first layer reads it)"
        if boundary == "output":
            return "it is the model's output, which would then be only +-1"
        return None
