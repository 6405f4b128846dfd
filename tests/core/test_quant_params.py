"""slimkit.quant.params: ONNX QuantizeLinear/DequantizeLinear math and onnxruntime's scale/zero-point rules."""

from __future__ import annotations

import dataclasses
import inspect
import zlib

import numpy as np
import pytest

from slimkit.quant.params import (
    QuantParams,
    check_calibrated,
    dequantize,
    fake_quantize,
    params_from_range,
    qrange,
    quant_error,
    quantize,
)

UNIT = QuantParams(scale=np.float32(1.0), zero_point=0)


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    "bits, signed, narrow, reduce_range, expected",
    [
        (8, True, False, False, (-128, 127)),
        (8, False, False, False, (0, 255)),
        (8, True, True, False, (-127, 127)),
        (4, True, False, False, (-8, 7)),
        (4, True, True, False, (-7, 7)),
        (4, False, False, False, (0, 15)),
        (2, True, False, False, (-2, 1)),
        (8, False, False, True, (0, 127)),  # 7-bit, as ORT's reduce_range
        (8, True, False, True, (-64, 64)),  # ORT's ONNX_INT_TYPE_REDUCED_RANGE[INT8]
        (4, True, False, True, (-4, 3)),
        (4, False, False, True, (0, 7)),
    ],
)
def test_qrange(bits, signed, narrow, reduce_range, expected):
    assert qrange(bits, signed, narrow, reduce_range) == expected


@pytest.mark.parametrize("bits", [1, 9, 8.0, True])
def test_qrange_rejects_bad_bits(bits):
    with pytest.raises(ValueError, match="bits must be an integer in 2..8"):
        qrange(bits, True)


def test_qrange_matches_onnxruntime_tables():
    qu = pytest.importorskip("onnxruntime.quantization.quant_utils")
    from onnx import TensorProto

    for qtype, signed in ((TensorProto.INT8, True), (TensorProto.UINT8, False)):
        for reduce_range in (False, True):
            for symmetric in (False, True):
                qmin, qmax = qu.get_qmin_qmax_for_qType(qtype, reduce_range=reduce_range, symmetric=symmetric)
                ours = qrange(8, signed, narrow=symmetric, reduce_range=reduce_range)
                assert ours == (int(qmin), int(qmax)), (qtype, reduce_range, symmetric)


# ---------------------------------------------------------------- QuantParams


def test_quant_params_is_frozen_and_typed():
    p = QuantParams(scale=0.5, zero_point=3, bits=8, signed=False)
    assert p.scale.dtype == np.float32 and p.zero_point.dtype == np.int32
    assert (p.qmin, p.qmax) == (0, 255)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.bits = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(scale=0.0, zero_point=0), "scale must be finite and > 0"),
        (dict(scale=np.nan, zero_point=0), "scale must be finite and > 0"),
        (dict(scale=1.0, zero_point=200), "outside the quantized range"),
        (dict(scale=[1.0, 2.0], zero_point=[0, 0]), "per-tensor params"),
        (dict(scale=1.0, zero_point=0, axis=0), "per-channel params"),
        (dict(scale=[1.0, 2.0], zero_point=[0], axis=0), "same|shape"),
        (dict(scale=1.0, zero_point=0.5), "zero_point must hold integers"),
        (dict(scale=1.0, zero_point=0, bits=9), "bits must be an integer"),
    ],
)
def test_quant_params_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantParams(**kwargs)


# ---------------------------------------------------------------- quantize / dequantize


def test_round_half_to_even():
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 0.49, 0.51])
    assert quantize(x, UNIT).tolist() == [0, 2, 2, 4, 0, -2, -2, 0, 1]
    assert quantize(x, UNIT).dtype == np.int32


def test_round_half_to_even_with_zero_point_after_rounding():
    # ONNX rounds x/scale first, then adds the zero point: 0.5 -> 0 (+3) = 3, 1.5 -> 2 (+3) = 5
    p = QuantParams(scale=np.float32(1.0), zero_point=3, signed=False)
    assert quantize([0.5, 1.5, -0.5], p).tolist() == [3, 5, 3]


def test_saturation():
    assert quantize([1000.0, -1000.0, 127.4, -128.4, 3e38, -np.inf], UNIT).tolist() == [127, -128, 127, -128, 127, -128]
    u8 = QuantParams(scale=np.float32(0.1), zero_point=10, signed=False)
    assert quantize([-5.0, 100.0], u8).tolist() == [0, 255]
    narrow = QuantParams(scale=np.float32(1.0), zero_point=0, narrow=True)
    assert quantize([-200.0, 200.0], narrow).tolist() == [-127, 127]
    four = QuantParams(scale=np.float32(1.0), zero_point=0, bits=4)
    assert quantize([-9.0, 9.0], four).tolist() == [-8, 7]


def test_dequantize_is_affine_in_float32():
    p = QuantParams(scale=np.float32(0.25), zero_point=-3)
    out = dequantize(np.array([-128, -3, 0, 127]), p)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([-125, 0, 3, 130], np.float32) * np.float32(0.25))


@pytest.mark.parametrize("axis", [0, -1, 3])
def test_per_channel_broadcast_on_4d_kernel(axis):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3, 3, 4)).astype(np.float32)  # both axis 0 and -1 have 4 channels
    chans = np.moveaxis(x, axis, 0).reshape(4, -1)
    p = params_from_range(chans.min(1), chans.max(1), axis=axis)
    q = quantize(x, p)
    for c in range(4):
        sl = [slice(None)] * 4
        sl[axis] = c
        pc = QuantParams(scale=p.scale[c], zero_point=p.zero_point[c])
        np.testing.assert_array_equal(q[tuple(sl)], quantize(x[tuple(sl)], pc))
        np.testing.assert_array_equal(fake_quantize(x, p)[tuple(sl)], fake_quantize(x[tuple(sl)], pc))
    # channels with different ranges get different scales
    assert len(set(p.scale.tolist())) == 4


def test_per_channel_channel_count_mismatch():
    p = params_from_range(np.full(3, -1.0), np.full(3, 1.0), axis=0)
    with pytest.raises(ValueError, match="tensor has 4 channels on axis 0, params have 3"):
        quantize(np.zeros((4, 2)), p)
    with pytest.raises(ValueError, match="axis 0 out of range"):
        quantize(np.float32(1.0), p)


def test_fake_quant_error_at_most_half_a_step():
    rng = np.random.default_rng(2)
    x = rng.uniform(-3.0, 5.0, 10_000).astype(np.float32)
    for signed, symmetric in ((True, True), (False, False), (True, False)):
        p = params_from_range(x.min(), x.max(), signed=signed, symmetric=symmetric)
        err = np.abs(fake_quantize(x, p) - x)
        assert err.max() <= p.scale / 2 * (1 + 1e-5), (signed, symmetric)
        assert quant_error(x, p) == pytest.approx(float(np.mean(err.astype(np.float64) ** 2)), rel=1e-6)
        assert quant_error(x, p) <= float(p.scale) ** 2 / 4


# ---------------------------------------------------------------- params_from_range


def test_symmetric_int8():
    p = params_from_range(-2.0, 1.0)
    assert p.zero_point == 0
    assert p.scale == np.float32(4.0 / 255)
    assert p.axis is None and p.signed and p.bits == 8


def test_symmetric_uint8_zero_point_is_midpoint():
    assert params_from_range(-2.0, 1.0, signed=False).zero_point == 128
    assert params_from_range(-2.0, 1.0, signed=False, reduce_range=True).zero_point == 64  # round(63.5)


def test_asymmetric_uint8_computed_zero_point():
    p = params_from_range(-1.0, 3.0, signed=False, symmetric=False)
    scale = 4.0 / 255
    assert p.scale == np.float32(scale)
    assert p.zero_point == int(np.round(0 - (-1.0) / scale))  # 63.75 -> 64
    assert p.zero_point == 64
    # real zero is exactly representable
    assert fake_quantize([0.0], p)[0] == 0.0


def test_asymmetric_zero_point_rounds_half_to_even():
    # qmin - rmin/scale = 0 + 1.5 -> 2 and 0 + 2.5 -> 2 (round half to even, as numpy.round in ORT)
    assert params_from_range(-1.5, 253.5, signed=False, symmetric=False).zero_point == 2
    assert params_from_range(-2.5, 252.5, signed=False, symmetric=False).zero_point == 2


def test_range_extended_to_include_zero():
    p = params_from_range(2.0, 5.0, signed=False, symmetric=False)
    q = params_from_range(0.0, 5.0, signed=False, symmetric=False)
    assert p.scale == q.scale and p.zero_point == q.zero_point
    assert p.zero_point == 0 and p.scale == np.float32(5.0 / 255)
    neg = params_from_range(-5.0, -2.0, signed=True, symmetric=False)
    assert neg.zero_point == 127 and neg.scale == np.float32(5.0 / 255)


def test_narrow_range_symmetric():
    p = params_from_range(-1.27, 0.5, narrow=True)
    assert (p.qmin, p.qmax) == (-127, 127)
    assert p.scale == np.float32(2.54 / 254)
    assert quantize([-1.27, 1.27, -5.0], p).tolist() == [-127, 127, -127]


def test_reduce_range_gives_seven_bits():
    p = params_from_range(0.0, 1.0, signed=False, symmetric=False, reduce_range=True)
    assert (p.qmin, p.qmax) == (0, 127)
    assert p.scale == np.float32(1.0 / 127)
    assert quantize([1.0, 2.0], p).tolist() == [127, 127]
    s = params_from_range(-1.0, 1.0, reduce_range=True)
    assert (s.qmin, s.qmax) == (-64, 64) and s.scale == np.float32(2.0 / 128)


def test_per_channel_params():
    p = params_from_range([-1.0, 0.0, -4.0], [1.0, 0.0, 2.0], axis=0)
    assert p.scale.shape == (3,) and p.zero_point.shape == (3,)
    np.testing.assert_array_equal(p.scale, np.array([2 / 255, 1.0, 8 / 255], np.float32))
    np.testing.assert_array_equal(p.zero_point, [0, 0, 0])


def test_degenerate_range_gives_unit_scale_unless_strict():
    p = params_from_range(0.0, 0.0)
    assert p.scale == 1.0 and p.zero_point == 0
    assert quantize([0.0], p).tolist() == [0]
    with pytest.raises(ValueError, match=r"uncalibrated range: min == max == 0 for 1 of 3"):
        params_from_range([-1.0, 0.0, 0.0], [1.0, 0.0, 2.0], axis=0, strict=True)
    params_from_range([-1.0, 0.5], [1.0, 2.0], axis=0, strict=True)  # fine


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(min_val=[0.0, 1.0], max_val=[1.0]), "shapes differ"),
        (dict(min_val=[-1.0, -1.0], max_val=[1.0, 1.0]), "per-tensor params need scalar min/max"),
        (dict(min_val=-1.0, max_val=1.0, axis=0), "need 1-D min/max"),
        (dict(min_val=np.inf, max_val=-np.inf), "must be finite"),
        (dict(min_val=-1.0, max_val=1.0, bits=1), "bits must be an integer"),
    ],
)
def test_params_from_range_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        params_from_range(**kwargs)


def test_check_calibrated_names_the_tensor():
    check_calibrated(-1.0, 1.0, "ok")
    check_calibrated([-1.0, 0.0], [1.0, 0.5], "ok")
    with pytest.raises(ValueError, match=r"uncalibrated range for tensor 'dense/act'.*1 of 3.*index \(1,\)"):
        check_calibrated([-1.0, 0.0, 0.0], [1.0, 0.0, 1.0], "dense/act")
    with pytest.raises(ValueError, match="tensor 'conv1'"):
        check_calibrated(np.inf, -np.inf, "conv1")
    with pytest.raises(ValueError, match="tensor 'x'.*min=nan"):
        check_calibrated(np.nan, 1.0, "x")


# ---------------------------------------------------------------- parity with onnxruntime


def _qdq_session(shape, scale, zero_point, axis):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    ttype = TensorProto.INT8 if zero_point.dtype == np.int8 else TensorProto.UINT8
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero_point, "z")]
    attrs = {} if axis is None else {"axis": axis}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [
            helper.make_tensor_value_info("q", ttype, list(shape)),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape)),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _test_data(rng, shape, p):
    """Random values plus exact halves (k + 0.5) * scale and far out-of-range values."""
    x = rng.normal(0.0, 1.5, shape).astype(np.float32)
    scale = np.broadcast_to(p.scale if p.axis is None else np.expand_dims(
        p.scale, [d for d in range(len(shape)) if d != p.axis]), shape)
    halves = rng.random(shape) < 0.25
    k = rng.integers(-140, 140, shape)
    x[halves] = ((k + 0.5) * scale.astype(np.float64)).astype(np.float32)[halves]
    x.reshape(-1)[:8] = [1e6, -1e6, 3e4, -3e4, 0.0, -0.0, 500.0, -500.0]
    return x


@pytest.mark.parametrize(
    "case",
    ["int8_per_tensor_asym", "int8_per_tensor_sym", "uint8_per_tensor_asym", "uint8_per_tensor_sym",
     "int8_per_channel_axis0", "int8_per_channel_axis1"],
)
def test_quantize_matches_onnxruntime_bitwise(case):
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    shape = (8, 6, 5, 7)
    signed = case.startswith("int8")
    symmetric = "_sym" in case or "channel" in case
    axis = None if "per_tensor" in case else int(case[-1])
    if axis is None:
        p = params_from_range(-2.3, 3.1, signed=signed, symmetric=symmetric)
    else:
        c = shape[axis]
        p = params_from_range(-rng.uniform(0.5, 3, c), rng.uniform(0.5, 3, c), signed=signed,
                              symmetric=symmetric, axis=axis)
    zdt = np.int8 if signed else np.uint8
    sess = _qdq_session(shape, p.scale, p.zero_point.astype(zdt), axis)
    x = _test_data(rng, shape, p)
    q_ort, y_ort = sess.run(None, {"x": x})
    assert q_ort.dtype == zdt
    q = quantize(x, p)
    np.testing.assert_array_equal(q, q_ort.astype(np.int32))
    y = fake_quantize(x, p)
    assert y.dtype == np.float32
    assert y.tobytes() == y_ort.tobytes()  # bitwise
    # the halves and the saturation cases were really exercised
    assert np.any(q == p.qmin) and np.any(q == p.qmax)


def test_exact_halves_match_onnxruntime():
    x = (np.arange(-300, 300, dtype=np.float32) + np.float32(0.5)).reshape(20, 30)
    p = QuantParams(scale=np.float32(1.0), zero_point=np.int32(0))
    q_ort, _ = _qdq_session(x.shape, p.scale, np.int8(0), None).run(None, {"x": x})
    np.testing.assert_array_equal(quantize(x, p), q_ort.astype(np.int32))
    assert quantize([0.5, 1.5, 2.5, -0.5], p).tolist() == [0, 2, 2, 0]


RANGES = [(-1.0, 1.0), (-0.3, 2.7), (0.25, 3.0), (-5.0, -0.5), (0.0, 0.0), (-1e-3, 7.3), (-2.5, 252.5)]


def _ort_compute_scale_zp():
    qu = pytest.importorskip("onnxruntime.quantization.quant_utils")
    fn = getattr(qu, "compute_scale_zp", None)
    if fn is None:
        return None
    params = list(inspect.signature(fn).parameters)
    assert params[:4] == ["rmin", "rmax", "qmin", "qmax"] and "symmetric" in params, params
    return fn


@pytest.mark.parametrize("rmin, rmax", RANGES)
@pytest.mark.parametrize("signed, symmetric, reduce_range", [
    (True, True, False), (True, False, False), (False, False, False), (False, True, False),
    (False, False, True), (True, True, True),
])
def test_params_from_range_matches_onnxruntime(rmin, rmax, signed, symmetric, reduce_range):
    p = params_from_range(rmin, rmax, signed=signed, symmetric=symmetric, reduce_range=reduce_range)
    qmin, qmax = qrange(8, signed, reduce_range=reduce_range)
    fn = _ort_compute_scale_zp()
    if fn is not None:
        qdt = np.int8 if signed else np.uint8
        zp, scale = fn(np.array(rmin, np.float32), np.array(rmax, np.float32), np.array(qmin, qdt),
                       np.array(qmax, qdt), symmetric=symmetric)
        assert p.scale.tobytes() == np.asarray(scale, np.float32).tobytes()
        assert int(p.zero_point) == int(zp)
    else:  # the same formula, written out independently
        lo, hi = min(rmin, 0.0), max(rmax, 0.0)
        if symmetric:
            lo, hi = -max(-lo, hi), max(-lo, hi)
        scale = (hi - lo) / (qmax - qmin)
        if scale == 0:
            assert p.scale == 1.0 and p.zero_point == 0
        else:
            zp = round((qmin + qmax) / 2) if symmetric else round(qmin - lo / scale)
            assert p.scale == np.float32(scale) and p.zero_point == zp


def test_per_channel_params_match_onnxruntime_per_channel_loop():
    fn = _ort_compute_scale_zp()
    rng = np.random.default_rng(5)
    mins, maxs = -rng.uniform(0, 2, 16).astype(np.float32), rng.uniform(0, 2, 16).astype(np.float32)
    mins[3] = maxs[3] = 0.0
    p = params_from_range(mins, maxs, axis=0)
    for c in range(16):
        if fn is not None:
            zp, scale = fn(mins[c], maxs[c], np.array(-128, np.int8), np.array(127, np.int8), symmetric=True)
        else:
            absmax = max(-float(mins[c]), float(maxs[c]))
            scale, zp = (np.float32(2 * absmax / 255), 0) if absmax else (np.float32(1.0), 0)
        assert p.scale[c] == np.float32(scale) and p.zero_point[c] == int(zp)
