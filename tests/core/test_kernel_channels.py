"""Per-channel kernel params reach the ONNX weight's axis only when every channel is the same channel."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from slimkit.deploy.qdq_edit import kernel_qparams
from slimkit.errors import ExportError
from slimkit.quant.plan import SiteParams


def _conv() -> onnx.NodeProto:
    return onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="conv")


def _params(channels: int, axis: int) -> SiteParams:
    return SiteParams(np.linspace(0.01, 0.02, channels).astype(np.float32), np.zeros(channels), -127, 127, axis)


def test_keras_layout_maps_each_channel_to_its_onnx_axis() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 8, 16)).astype(np.float32)  # Keras HWIO, channels on axis 3
    kernel[..., 5] = 0.0  # an all-zero channel
    kernel[..., 7] = kernel[..., 6]  # two identical channels
    w = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # ONNX OIHW, channels on axis 0
    q, _ = kernel_qparams("conv", _conv(), w, kernel, _params(16, -1))
    assert q.axis == 0
    np.testing.assert_array_equal(q.scale, _params(16, -1).scale)


def test_swapped_channels_are_refused_naming_the_first() -> None:
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(16, 8, 3, 3)).astype(np.float32)  # PyTorch OIHW
    w = kernel.copy()
    w[[2, 9]] = w[[9, 2]]
    with pytest.raises(ExportError, match=r"layer conv: channel 2 of the kernel \(native axis 0\) is not channel 2"):
        kernel_qparams("conv", _conv(), w, kernel, _params(16, 0))


def test_one_changed_value_is_refused() -> None:
    kernel = np.random.default_rng(2).normal(size=(4, 2, 3, 3)).astype(np.float32)
    w = kernel.copy()
    w[3, 1, 2, 2] += np.float32(1e-5)  # one value of 18, a millionth of the channel's magnitude
    with pytest.raises(ExportError, match="channel 3 of the kernel"):
        kernel_qparams("conv", _conv(), w, kernel, _params(4, 0))


def test_a_weight_written_as_the_kernel_is_needs_no_channel_summaries(monkeypatch) -> None:
    """PyTorch's layout is ONNX's: an identical weight maps channel to channel after one comparison;
    any other weight is still summarised per channel."""
    from slimkit.deploy import qdq_edit

    calls = []
    real = qdq_edit._channel_summary
    monkeypatch.setattr(qdq_edit, "_channel_summary", lambda rows: calls.append(rows.shape) or real(rows))
    kernel = np.random.default_rng(3).normal(size=(16, 8, 3, 3)).astype(np.float32)
    q, _ = kernel_qparams("conv", _conv(), kernel.copy(), kernel, _params(16, 0))
    assert q.axis == 0 and calls == []
    np.testing.assert_array_equal(q.scale, _params(16, 0).scale)
    moved = kernel.copy()
    moved[0, 0, 0, 0] = kernel[0, 0, 0, 1]
    moved[0, 0, 0, 1] = kernel[0, 0, 0, 0]  # the same channel values in another order: still channel 0
    kernel_qparams("conv", _conv(), moved, kernel, _params(16, 0))
    assert calls == [(16, 72), (16, 72)]
