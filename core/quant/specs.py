"""From the recipe's quantize settings to fake-quant specs and numpy parameters of each site."""

from __future__ import annotations

from fnmatch import fnmatchcase

import numpy as np

from slimkit.adapter import LayerInfo
from slimkit.quant.fake_quant import mode_of
from slimkit.quant.params import QuantParams, params_from_range, qrange
from slimkit.quant.plan import FakeQuantSpec, SiteParams
from slimkit.recipe import ActivationQuant, LayerSelector, QuantizeStage, WeightQuant

#: The int32 range of biases (QLinearConv adds an int32 bias to the int32 accumulator).
INT32_RANGE = (-(2**31), 2**31 - 1)


def _selected(layer: LayerInfo, selector: LayerSelector) -> bool:
    return (any(fnmatchcase(layer.name, g) for g in selector.names)
            and not any(fnmatchcase(layer.name, g) for g in selector.exclude)
            and (selector.kinds is None or any(layer.matches_kind(k) for k in selector.kinds)))


def weight_settings(stage: QuantizeStage, layer: LayerInfo) -> WeightQuant:
    """The stage's weight settings for ``layer``, with the last matching override applied."""
    settings = stage.weights
    for override in stage.overrides:
        if _selected(layer, override.layers):
            settings = override.weights
    return settings


def kernel_spec(w: WeightQuant, layer: LayerInfo, mode: str) -> FakeQuantSpec:
    """The kernel's spec: signed, per channel on the native output axis unless per-tensor; its integer
    range is the mode's (``qrange``, or the grid of a mode that defines its own: dorefa, bnn)."""
    # Reduce-range is about 8-bit u8s8 kernels saturating; lower widths fit the reduced range anyway.
    qmin, qmax = mode_of(mode).integer_range(w.bits, "kernel", True, reduce_range=w.reduce_range and w.bits == 8)
    return FakeQuantSpec(qmin, qmax, w.symmetric, layer.out_axis if w.per_channel else None, mode,
                         bits=w.bits, signed=True)


def bias_spec(kernel: FakeQuantSpec) -> FakeQuantSpec:
    """A bias site's spec: int32, zero point 0, per channel (axis 0) when the kernel is."""
    return FakeQuantSpec(INT32_RANGE[0], INT32_RANGE[1], True, 0 if kernel.axis is not None else None,
                         "fixed", bits=32, signed=True)


def activation_spec(a: ActivationQuant, mode: str) -> FakeQuantSpec:
    """The spec shared by every activation site, from the recipe's activation settings."""
    qmin, qmax = mode_of(mode).integer_range(a.bits, "activation", a.signed)
    return FakeQuantSpec(qmin, qmax, a.symmetric, None, mode, a.momentum, a.bits, a.signed)


def kernel_params(kernel: np.ndarray, spec: FakeQuantSpec) -> QuantParams:
    """Min-max parameters of a kernel, per channel along ``spec.axis`` or per tensor."""
    kernel = np.asarray(kernel, dtype=np.float32)
    if spec.axis is None:
        lo, hi = kernel.min(initial=0.0), kernel.max(initial=0.0)
    else:
        axes = tuple(i for i in range(kernel.ndim) if i != spec.axis % kernel.ndim)
        lo, hi = kernel.min(axis=axes), kernel.max(axis=axes)
    return params_from_range(lo, hi, spec.bits, True, spec.symmetric, spec.axis,
                             reduce_range=_reduced(spec))


def activation_params(lo: float, hi: float, spec: FakeQuantSpec) -> QuantParams:
    """Parameters of an activation site from its calibrated range."""
    return params_from_range(lo, hi, spec.bits, spec.signed, spec.symmetric, None)


def bias_params(input_scale: np.ndarray, kernel_scale: np.ndarray, axis: int | None) -> SiteParams:
    """int32 bias parameters: ``scale = input_scale * kernel_scale``, zero point 0.

    Per-tensor kernels still give a per-channel bias scale only if the kernel is per channel.
    """
    scale = (np.float32(input_scale) * np.asarray(kernel_scale, dtype=np.float32)).astype(np.float32)
    return SiteParams(scale, np.zeros(scale.shape, np.int32), *INT32_RANGE, axis=0 if scale.ndim else None)


def _reduced(spec: FakeQuantSpec) -> bool:
    """Whether a signed kernel spec's range is the reduced one (qrange's [-64, 64] for 8 bits)."""
    if not 2 <= spec.bits <= 8:  # qrange's widths; a 1-bit grid (bnn, dorefa) has no reduced range
        return False
    return (spec.qmin, spec.qmax) == qrange(spec.bits, True, reduce_range=True) and \
        (spec.qmin, spec.qmax) != qrange(spec.bits, True)
