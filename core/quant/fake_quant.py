"""Fake quantization written once: the ONNX arithmetic, the modes' forward passes and site state.

Every adapter's fake-quant wrapper (a Keras layer, a PyTorch module, the numpy fake's layer) holds
one site's variables and calls :func:`forward` with its :class:`slimkit.ops.TensorOps`; the modes
are registered plugins (:mod:`slimkit.quant.modes`). What the exported QDQ model computes, in
float32: ``q = clip(round_half_even(x / scale) + zero_point, qmin, qmax)``, ``y = (q - zero_point) *
scale``. Rounding is straight-through (gradient 1) and clipped values get no gradient, so models
train through every mode.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from slimkit.ops import TensorOps
from slimkit.quant.plan import SiteParams

#: Smallest scale a learned (lsq) site uses: keeps ``x / scale`` finite, far below any useful step.
LSQ_MIN_SCALE = 1e-8
_F32_TINY = float(np.finfo(np.float32).tiny)


class SiteState(Protocol):
    """One site as its wrapper holds it: plain attributes and framework variables.

    Attributes (Python values): ``mode`` (a :data:`slimkit.quant.plan.MODES` name), ``qmin``,
    ``qmax``, ``symmetric``, ``axis`` (per-channel axis or None), ``momentum`` (ema), ``role``
    (``activation``, ``kernel`` or ``bias``), ``site`` (its key, for messages).
    Variables (scalars, or ``(C,)`` along ``axis``): ``scale``, ``zero_point``, ``range_min``,
    ``range_max`` (NaN until an ema update) and the scalar ``ready`` (1 once parameters are set or
    an lsq scale was initialised).
    """

    mode: str
    qmin: int
    qmax: int
    symmetric: bool
    axis: int | None
    momentum: float
    role: str
    site: str
    scale: Any
    zero_point: Any
    range_min: Any
    range_max: Any
    ready: Any


# ---------------------------------------------------------------------------------------- arithmetic
def once_ready(ops: TensorOps, ready: Any, y: Any, x: Any) -> Any:
    """``where(ready, y, x)`` for a site's scalar ``ready`` flag: ``y`` itself where the ops can read the
    flag as true now (eager PyTorch; not while tracing), which spares the select a copy of every
    activation; ``y`` must be a fresh tensor (the fake-quantized values), as the select's result is."""
    read = getattr(ops, "eager_flag", None)
    if read is not None and read(ready) is True:
        return y
    return ops.where(ready, y, x)


def fake_quantize(ops: TensorOps, x: Any, scale: Any, zero_point: Any, qmin: int, qmax: int) -> Any:
    """``(clip(round(x / scale) + zp, qmin, qmax) - zp) * scale``, rounding straight-through.

    Ops may offer ``fake_quantize_frozen(x, scale, zero_point, qmin, qmax)``: the same values in fewer
    passes when no gradient is recorded (inference: calibration checks, fidelity, verification), or
    None to take this path."""
    frozen = getattr(ops, "fake_quantize_frozen", None)
    if frozen is not None:
        out = frozen(x, scale, zero_point, float(qmin), float(qmax))
        if out is not None:
            return out
    v = x / scale
    rounded = v + ops.stop_gradient(ops.round(v) - v)
    q = ops.clip(rounded + zero_point, float(qmin), float(qmax))
    return (q - zero_point) * scale


def range_params(ops: TensorOps, lo: Any, hi: Any, qmin: int, qmax: int, symmetric: bool) -> tuple[Any, Any]:
    """Scale and zero point (float32) of ``[lo, hi]`` extended to include 0, as
    :func:`slimkit.quant.params.params_from_range` computes them: the scale in float64, stored as
    float32; a degenerate range (``lo == hi == 0``) gets scale 1 and zero point 0."""
    lo = ops.minimum(ops.cast(lo, "float32"), 0.0)
    hi = ops.maximum(ops.cast(hi, "float32"), 0.0)
    if symmetric:
        absmax = ops.maximum(ops.abs(lo), ops.abs(hi))
        lo, hi = -absmax, absmax
    lo64 = ops.cast(lo, "float64")
    scale64 = (ops.cast(hi, "float64") - lo64) / float(qmax - qmin)
    degenerate = scale64 < _F32_TINY
    safe = ops.where(degenerate, ops.full_like(scale64, 1.0), scale64)
    if symmetric:
        zp = ops.full_like(safe, float(np.round((qmin + qmax) / 2.0)))
    else:
        zp = ops.round(float(qmin) - lo64 / safe)
    zp = ops.where(degenerate, ops.full_like(zp, 0.0), ops.clip(zp, float(qmin), float(qmax)))
    return ops.cast(safe, "float32"), ops.cast(zp, "float32")


def dynamic_params(ops: TensorOps, x: Any, qmin: int, qmax: int) -> tuple[Any, Any]:
    """ONNX ``DynamicQuantizeLinear``'s per-tensor scale and zero point, in float32: ``scale = (max -
    min) / (qmax - qmin)`` over the range extended to 0 (1 for an all-zero tensor), ``zp =
    round(clip(qmin - min / scale, qmin, qmax))``."""
    lo = ops.minimum(ops.amin(x, None), 0.0)
    hi = ops.maximum(ops.amax(x, None), 0.0)
    span = hi - lo
    scale = ops.where(span > 0, span / float(qmax - qmin), ops.full_like(span, 1.0))
    zp = ops.round(ops.clip(float(qmin) - lo / scale, float(qmin), float(qmax)))
    return scale, zp


# ------------------------------------------------------------------------------------- per channel
def channel_axis(site: SiteState, x: Any) -> int | None:
    """The site's channel axis of ``x`` as a non-negative index, or None (per tensor)."""
    return None if site.axis is None else site.axis % len(x.shape)


def along(ops: TensorOps, v: Any, site: SiteState, x: Any) -> Any:
    """Per-channel ``v`` shaped to broadcast along the site's channel axis of ``x``."""
    axis = channel_axis(site, x)
    if axis is None:
        return v
    shape = [1] * len(x.shape)
    shape[axis] = -1
    return ops.reshape(v, tuple(shape))


def other_axes(site: SiteState, x: Any) -> tuple[int, ...] | None:
    """The axes reduced to get one value per channel (None: all of them)."""
    axis = channel_axis(site, x)
    return None if axis is None else tuple(i for i in range(len(x.shape)) if i != axis)


def value_range(ops: TensorOps, site: SiteState, x: Any) -> tuple[Any, Any]:
    """Minimum and maximum of ``x`` (no gradient), per channel or overall."""
    x = ops.stop_gradient(x)
    axes = other_axes(site, x)
    return ops.amin(x, axes), ops.amax(x, axes)


def batch_range(ops: TensorOps, site: SiteState, x: Any) -> tuple[Any, Any]:
    """:func:`value_range` of a training batch: over the global batch when the step is split over
    replicas (each observed its share), so every replica updates the site's state alike."""
    lo, hi = value_range(ops, site, x)
    return ops.across_replicas(lo, "min"), ops.across_replicas(hi, "max")


def quantize_with(ops: TensorOps, site: SiteState, x: Any, scale: Any, zero_point: Any) -> Any:
    """``x`` fake-quantized with per-site parameters broadcast along its channel axis."""
    return fake_quantize(ops, x, along(ops, scale, site, x), along(ops, zero_point, site, x), site.qmin, site.qmax)


# --------------------------------------------------------------------------------------------- forward
def forward(ops: TensorOps, site: SiteState, x: Any, training: bool) -> Any:
    """The fake-quantized float32 ``x`` as the site's mode computes it; ``training`` lets modes that
    learn from data (ema ranges, lsq's first scale) update the site's variables."""
    return mode_of(site.mode).forward(ops, site, x, bool(training))


# --------------------------------------------------------------------------------- parameters and state
def check_params(site: SiteState, channels: int | None, params: SiteParams,
                 rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``params``' scale and zero point as float32 arrays shaped like the site's variables.

    Args:
        site: the site (its key and per-channel axis).
        channels: the site's channel count (None: per tensor).
        params: the parameters to set.
        rank: the rank of the site's tensor, when known: per-channel parameters must then be along
            the site's own axis.

    Raises:
        ValueError: a per-tensor/per-channel mismatch, a channel count or axis that differs, a scale
            that is not finite and positive, or zero points that are not integers in the range.
    """
    where = f"fake-quant site {site.site!r}"
    scale = np.asarray(params.scale, dtype=np.float32)
    zp = np.asarray(params.zero_point)
    expected = () if channels is None else (int(channels),)
    if scale.shape != zp.shape or scale.ndim > 1:
        raise ValueError(f"{where}: scale {scale.shape} and zero_point {zp.shape} must both be () or (C,)")
    per_channel = params.axis is not None and scale.ndim == 1
    if per_channel != bool(expected) or (per_channel and scale.shape != expected):
        takes = "one per-tensor scale" if not expected else f"{expected[0]} per-channel scales"
        raise ValueError(f"{where} takes {takes}; got scale of shape {scale.shape} with axis={params.axis}")
    if per_channel and rank and site.axis is not None and params.axis % rank != site.axis % rank:
        raise ValueError(f"{where}: parameters are per channel on axis {params.axis}, the site on {site.axis}")
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError(f"{where}: scale must be finite and > 0, got {scale!r}")
    if not int(params.qmin) < int(params.qmax) or np.any(zp < params.qmin) or np.any(zp > params.qmax) \
            or not np.all(zp == np.round(zp)):
        raise ValueError(f"{where}: zero_point {zp!r} must be integers in [{params.qmin}, {params.qmax}]")
    return scale, zp.astype(np.float32)


def mode_after_params(mode: str) -> str:
    """The mode a site takes when parameters are set: its own if the mode keeps it (lsq learns on
    from them, dynamic keeps computing its range per batch), else ``fixed``."""
    return mode if mode_of(mode).keeps_mode_when_set else "fixed"


def frozen_spec(spec: Any, role: str) -> Any:
    """The spec a site of ``role`` (``kernel`` or ``activation``) takes when a stage freezes it:
    ``fixed`` with the integer range its parameters will have, or its own mode where the deployed
    model computes that mode too (see :meth:`slimkit.quant.modes.Mode.frozen`)."""
    return mode_of(spec.mode).frozen(spec, role)


def range_follows_params(mode: str) -> bool:
    """Whether a site of this mode takes the integer range of parameters set on it."""
    return mode_of(mode).takes_range_when_set


def state_of(mode: str, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What a site of ``mode`` holds, from its variables' values (``scale``, ``zero_point``,
    ``range_min``, ``range_max``, ``ready``); see :meth:`slimkit.quant.modes.Mode.state`."""
    return mode_of(mode).state(values)


def mode_of(name: str) -> Any:
    """The registered mode ``name``."""
    from slimkit.quant.modes import QUANT_MODES

    return QUANT_MODES.get(name).impl()
