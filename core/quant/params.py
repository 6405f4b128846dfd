"""Quantization parameters and the QuantizeLinear / DequantizeLinear math, in numpy only.

Everything here reproduces ONNX semantics as onnxruntime implements them, so that a fake-quantized
tensor computed here equals what the exported QDQ model computes:

* ``quantize`` is ONNX ``QuantizeLinear``: ``q = saturate(rint(x / scale) + zero_point)`` with the
  division done in float32 and round-half-to-even.
* ``dequantize`` is ONNX ``DequantizeLinear``: ``(q - zero_point) * scale`` in float32.
* ``params_from_range`` follows ``onnxruntime.quantization.quant_utils.compute_scale_zp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_F32_TINY = float(np.finfo(np.float32).tiny)


def qrange(bits: int, signed: bool, narrow: bool = False, reduce_range: bool = False) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` of a ``bits``-wide quantized type.

    Args:
        bits: Width of the quantized values, 2 to 8.
        signed: Signed (int8: [-128, 127]) or unsigned (uint8: [0, 255]).
        narrow: Symmetric narrow signed range, e.g. int8 [-127, 127] (ignored for unsigned).
        reduce_range: Use ``bits - 1`` bits (uint8 -> [0, 127], int4 -> [-4, 3]), as onnxruntime does
            for u8s8 kernels without VNNI. Signed 8-bit is the one exception and gives [-64, 64],
            exactly onnxruntime's ``ONNX_INT_TYPE_REDUCED_RANGE[INT8]``. Takes precedence over
            ``narrow``, as in onnxruntime's ``get_qmin_qmax_for_qType``.

    Returns:
        ``(qmin, qmax)`` as Python ints; always ``qmin <= 0 <= qmax``.

    Raises:
        ValueError: If ``bits`` is not an int in 2..8.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= int(bits) <= 8:
        raise ValueError(f"bits must be an integer in 2..8, got {bits!r}")
    bits = int(bits)
    if reduce_range:
        if signed and bits == 8:
            return -64, 64
        bits -= 1
        narrow = False
    if not signed:
        return 0, 2**bits - 1
    half = 2 ** (bits - 1)
    return (-(half - 1), half - 1) if narrow else (-half, half - 1)


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization parameters ``x ~= (q - zero_point) * scale``.

    Attributes:
        scale: float32 array, shape ``()`` (per-tensor) or ``(C,)`` (per-channel), every element > 0.
        zero_point: int32 array of the same shape, within ``[qmin, qmax]``.
        bits: Width of the quantized values, 2 to 8.
        signed: Signed or unsigned integer type.
        axis: Per-channel axis of the quantized tensor, or None for per-tensor.
        narrow: Symmetric narrow range (int8 [-127, 127]).
        reduce_range: ``bits - 1`` range, see ``qrange``.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    bits: int = 8
    signed: bool = True
    axis: int | None = None
    narrow: bool = False
    reduce_range: bool = False

    def __post_init__(self) -> None:
        scale = np.array(self.scale, dtype=np.float32)
        zp_raw = np.asarray(self.zero_point)
        if not np.all(zp_raw == np.round(zp_raw)):
            raise ValueError(f"zero_point must hold integers, got {zp_raw!r}")
        zero_point = np.array(zp_raw, dtype=np.int32)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero_point)
        qmin, qmax = qrange(self.bits, self.signed, self.narrow, self.reduce_range)  # validates bits
        if scale.ndim > 1 or scale.shape != zero_point.shape:
            raise ValueError(
                f"scale and zero_point must both have shape () or (C,), got {scale.shape} and {zero_point.shape}"
            )
        if self.axis is None and scale.ndim != 0:
            raise ValueError(f"per-tensor params (axis=None) need scalar scale, got shape {scale.shape}")
        if self.axis is not None and scale.ndim != 1:
            raise ValueError(f"per-channel params (axis={self.axis}) need 1-D scale, got shape {scale.shape}")
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError(f"scale must be finite and > 0, got {scale!r}")
        if np.any(zero_point < qmin) or np.any(zero_point > qmax):
            raise ValueError(f"zero_point {zero_point!r} outside the quantized range [{qmin}, {qmax}]")

    @property
    def qmin(self) -> int:
        """Smallest quantized value."""
        return qrange(self.bits, self.signed, self.narrow, self.reduce_range)[0]

    @property
    def qmax(self) -> int:
        """Largest quantized value."""
        return qrange(self.bits, self.signed, self.narrow, self.reduce_range)[1]


def params_from_range(
    min_val: Any,
    max_val: Any,
    bits: int = 8,
    signed: bool = True,
    symmetric: bool = True,
    axis: int | None = None,
    narrow: bool = False,
    reduce_range: bool = False,
    strict: bool = False,
) -> QuantParams:
    """Scale and zero point covering ``[min_val, max_val]``, as onnxruntime's ``compute_scale_zp``.

    The range is first extended to include 0 (``min <= 0 <= max``) so that 0 is exactly
    representable. Symmetric: ``absmax = max(|min|, |max|)``, the range becomes ``[-absmax, absmax]``,
    ``scale = 2 * absmax / (qmax - qmin)`` and ``zero_point = round_half_even((qmin + qmax) / 2)``
    (0 for signed, 128 for uint8). Asymmetric: ``scale = (max - min) / (qmax - qmin)`` and
    ``zero_point = round_half_even(qmin - min / scale)``. The scale is computed in float64 and then
    stored as float32, as onnxruntime does.

    A degenerate range (``min == max == 0`` after the extension, e.g. an all-zero weight channel of a
    pruned layer) gets ``scale = 1.0, zero_point = 0`` (as onnxruntime, also for unsigned symmetric):
    every value of such a channel is 0 and quantizes exactly, and a per-channel tensor with one dead
    channel must stay exportable. Pass ``strict=True`` to reject it instead.

    Args:
        min_val: Minimum, a scalar or a ``(C,)`` array for per-channel.
        max_val: Maximum, same shape as ``min_val``.
        bits: Width of the quantized values, 2 to 8.
        signed: Signed or unsigned integer type.
        symmetric: Symmetric range around 0 (see above).
        axis: Per-channel axis of the tensor these params will quantize; None for per-tensor.
        narrow: Narrow signed range (int8 [-127, 127]).
        reduce_range: ``bits - 1`` range, see ``qrange``.
        strict: Raise instead of returning scale 1.0 for a degenerate range.

    Returns:
        The ``QuantParams``.

    Raises:
        ValueError: On mismatched shapes, non-finite values, a per-channel range without ``axis`` (or
            the reverse), or, with ``strict``, a degenerate range.
    """
    rmin = np.array(min_val, dtype=np.float32)
    rmax = np.array(max_val, dtype=np.float32)
    if rmin.shape != rmax.shape:
        raise ValueError(f"min_val and max_val shapes differ: {rmin.shape} vs {rmax.shape}")
    if axis is None:
        if rmin.size != 1:
            raise ValueError(f"per-tensor params need scalar min/max, got shape {rmin.shape}; pass axis")
        rmin, rmax = rmin.reshape(()), rmax.reshape(())
    elif rmin.ndim != 1:
        raise ValueError(f"per-channel params (axis={axis}) need 1-D min/max, got shape {rmin.shape}")
    if not (np.all(np.isfinite(rmin)) and np.all(np.isfinite(rmax))):
        raise ValueError(f"min/max must be finite (uncalibrated range?): min={rmin!r}, max={rmax!r}")
    qmin, qmax = qrange(bits, signed, narrow, reduce_range)

    rmin = np.minimum(rmin, np.float32(0))
    rmax = np.maximum(rmax, np.float32(0))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, absmax
    scale64 = (rmax.astype(np.float64) - rmin.astype(np.float64)) / float(qmax - qmin)
    degenerate = scale64 < _F32_TINY
    if strict and np.any(degenerate):
        raise ValueError(
            f"uncalibrated range: min == max == 0 for {int(np.sum(degenerate))} of {degenerate.size} "
            "element(s); calibrate first or pass strict=False"
        )
    safe = np.where(degenerate, 1.0, scale64)
    if symmetric:
        zp = np.broadcast_to(np.round((qmin + qmax) / 2.0), safe.shape)
    else:
        zp = np.round(qmin - rmin / safe)
    zp = np.where(degenerate, 0, np.clip(zp, qmin, qmax))
    scale = np.where(degenerate, np.float32(1.0), scale64.astype(np.float32)).astype(np.float32)
    return QuantParams(
        scale=scale,
        zero_point=zp.astype(np.int32),
        bits=bits,
        signed=signed,
        axis=axis,
        narrow=narrow,
        reduce_range=reduce_range,
    )


def check_calibrated(min_val: Any, max_val: Any, name: str) -> None:
    """Reject an uncalibrated range before export (tf2onnx crashes on one).

    Args:
        min_val: Observed minimum, scalar or array.
        max_val: Observed maximum, same shape.
        name: Tensor name for the error message.

    Raises:
        ValueError: Naming the tensor, when any element has ``max <= min`` or a non-finite bound.
    """
    lo = np.asarray(min_val, dtype=np.float64)
    hi = np.asarray(max_val, dtype=np.float64)
    if lo.shape != hi.shape:
        raise ValueError(f"tensor {name!r}: min and max shapes differ: {lo.shape} vs {hi.shape}")
    bad = ~(np.isfinite(lo) & np.isfinite(hi) & (hi > lo))
    if np.any(bad):
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape)) if bad.ndim else ()
        raise ValueError(
            f"uncalibrated range for tensor {name!r}: max <= min (or non-finite) at {int(bad.sum())} of "
            f"{bad.size} element(s), first at index {first}: min={float(lo[first])}, max={float(hi[first])}; "
            "run calibration before export"
        )


def _broadcast(values: np.ndarray, p: QuantParams, ndim: int, shape: tuple[int, ...]) -> np.ndarray:
    """Reshape per-channel ``values`` so they broadcast along ``p.axis`` of an array of ``shape``."""
    if p.axis is None:
        return values
    if not -ndim <= p.axis < ndim:
        raise ValueError(f"axis {p.axis} out of range for a {ndim}-D tensor")
    axis = p.axis % ndim
    if shape[axis] != values.shape[0]:
        raise ValueError(f"tensor has {shape[axis]} channels on axis {p.axis}, params have {values.shape[0]}")
    new_shape = [1] * ndim
    new_shape[axis] = values.shape[0]
    return values.reshape(new_shape)


def quantize(x: Any, p: QuantParams) -> np.ndarray:
    """ONNX ``QuantizeLinear``: ``saturate(rint(x / scale) + zero_point)``.

    The division is done in float32 and rounded half-to-even (``np.rint``), then saturated to
    ``[p.qmin, p.qmax]``.

    Args:
        x: Real values, any shape (per-channel: ``p.axis`` indexes the channels).
        p: Quantization parameters.

    Returns:
        int32 array of quantized values, same shape as ``x``.
    """
    x = np.asarray(x, dtype=np.float32)
    scale = _broadcast(p.scale, p, x.ndim, x.shape)
    zp = _broadcast(p.zero_point, p, x.ndim, x.shape)
    q = np.asarray(np.rint(x / scale))  # 0-d inputs too: ufuncs return scalars for them
    if p.qmax - p.qmin <= 1 << 16:
        # 8/16-bit grids: float32 in place is exact (integer zero points; a quotient too large for
        # float32 to add it exactly saturates either way) and spares a float64 copy of every kernel
        q += zp
        np.clip(q, p.qmin, p.qmax, out=q)
        return q.astype(np.int32)
    q = q.astype(np.float64) + zp  # int32 bounds are not float32 numbers
    return np.clip(q, p.qmin, p.qmax).astype(np.int32)


def dequantize(q: Any, p: QuantParams) -> np.ndarray:
    """ONNX ``DequantizeLinear``: ``(q - zero_point) * scale`` in float32.

    Args:
        q: Quantized integer values, any shape.
        p: Quantization parameters.

    Returns:
        float32 array, same shape as ``q``.
    """
    q = np.asarray(q).astype(np.int32)
    scale = _broadcast(p.scale, p, q.ndim, q.shape)
    zp = _broadcast(p.zero_point, p, q.ndim, q.shape)
    return (q - zp).astype(np.float32) * scale


def fake_quantize(x: Any, p: QuantParams) -> np.ndarray:
    """``dequantize(quantize(x, p), p)``: the float32 values a QDQ pair produces."""
    return dequantize(quantize(x, p), p)


def quant_error(x: Any, p: QuantParams) -> float:
    """Mean squared error between ``x`` and its fake-quantized version."""
    x = np.asarray(x, dtype=np.float32)
    diff = fake_quantize(x, p).astype(np.float64) - x.astype(np.float64)
    return float(np.mean(diff * diff))
