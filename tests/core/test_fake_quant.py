"""Core's fake quantization (one implementation for every adapter) against the numpy reference math.

Runs over numpy (:data:`slimkit.ops.NUMPY_OPS`); the adapters' contract suite checks that their
wrappers compute the same through their own tensor ops.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slimkit.ops import NUMPY_OPS
from slimkit.quant import fake_quant
from slimkit.quant.modes import QUANT_MODES
from slimkit.quant.params import QuantParams, fake_quantize, params_from_range
from slimkit.quant.plan import MODES, SiteParams


@dataclasses.dataclass
class Site:
    mode: str
    qmin: int = -127
    qmax: int = 127
    symmetric: bool = True
    axis: int | None = None
    momentum: float = 0.9
    role: str = "activation"
    site: str = "t"
    channels: int | None = None

    def __post_init__(self) -> None:
        shape = () if self.channels is None else (self.channels,)
        self.scale = np.ones(shape, np.float32)
        self.zero_point = np.zeros(shape, np.float32)
        self.range_min = np.full(shape, np.nan, np.float32)
        self.range_max = np.full(shape, np.nan, np.float32)
        self.ready = np.zeros((), np.float32)


def run(site, x, training=False):
    return fake_quant.forward(NUMPY_OPS, site, np.asarray(x, np.float32), training)


X = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32) * 3


def test_every_mode_of_the_plan_is_a_registered_plugin():
    assert set(MODES) == set(QUANT_MODES.names())


def test_fixed_is_identity_until_set_then_onnx_quantize_dequantize():
    site = Site("fixed", qmin=0, qmax=255, symmetric=False)
    np.testing.assert_array_equal(run(site, X), X)
    p = params_from_range(X.min(), X.max(), 8, signed=False, symmetric=False)
    site.scale[...], site.zero_point[...], site.ready[...] = p.scale, p.zero_point, 1
    np.testing.assert_array_equal(run(site, X), fake_quantize(X, p))


def test_minmax_per_channel_matches_params_from_range():
    site = Site("minmax", qmin=-64, qmax=64, axis=1, channels=4, role="kernel")
    p = params_from_range(X.min(0), X.max(0), 8, True, True, axis=1, reduce_range=True)
    np.testing.assert_array_equal(run(site, X), fake_quantize(X, p))


def test_ema_starts_at_the_first_batch_and_moves_by_momentum():
    site = Site("ema", qmin=0, qmax=255, symmetric=False, momentum=0.8)
    np.testing.assert_array_equal(run(site, X, training=False), X)  # no range yet: identity
    run(site, X, training=True)
    assert site.range_min == X.min() and site.range_max == X.max()
    run(site, X * 2, training=True)
    np.testing.assert_allclose(site.range_max, 0.8 * X.max() + 0.2 * 2 * X.max(), rtol=1e-6)
    p = params_from_range(site.range_min, site.range_max, 8, signed=False, symmetric=False)
    np.testing.assert_array_equal(run(site, X), fake_quantize(X, p))


def test_dynamic_is_dynamic_quantize_linear():
    site = Site("dynamic", qmin=0, qmax=255, symmetric=False)
    lo, hi = min(0.0, float(X.min())), max(0.0, float(X.max()))
    scale = np.float32((hi - lo) / 255)
    zp = np.clip(np.rint(-lo / scale), 0, 255)
    expected = ((np.clip(np.rint(X / scale) + zp, 0, 255) - zp) * scale).astype(np.float32)
    np.testing.assert_array_equal(run(site, X), expected)


def test_lsq_first_training_batch_sets_the_scale_and_eval_before_passes_through():
    site = Site("lsq", qmin=-8, qmax=7)
    np.testing.assert_array_equal(run(site, X), X)
    run(site, X, training=True)
    np.testing.assert_allclose(site.scale, 2 * np.abs(X).mean() / np.sqrt(7), rtol=1e-6)
    assert float(site.ready) == 1.0


def test_setting_params_keeps_lsq_and_dynamic_and_fixes_the_rest():
    assert [fake_quant.mode_after_params(m) for m in MODES] == ["fixed", "fixed", "lsq", "fixed", "dynamic",
                                                                 "fixed", "bnn"]
    assert not fake_quant.range_follows_params("dynamic") and fake_quant.range_follows_params("ema")


def test_state_by_mode():
    values = {"scale": np.float32(0.5), "zero_point": np.float32(3), "range_min": np.float32(-1),
              "range_max": np.float32(2), "ready": np.float32(1)}
    assert fake_quant.state_of("fixed", values)["zero_point"] == 3
    assert fake_quant.state_of("ema", values) == {"min": -1, "max": 2}
    assert fake_quant.state_of("lsq", dict(values, scale=np.float32(-1)))["scale"] == np.float32(1e-8)
    assert fake_quant.state_of("minmax", values) == {} == fake_quant.state_of("fixed", dict(values, ready=0))


@pytest.mark.parametrize("params, message", [
    (SiteParams(np.ones(3, np.float32), np.zeros(3), -127, 127, 0), "takes one per-tensor scale"),
    (SiteParams(np.float32(0.0), np.float32(0), -127, 127), "scale must be finite and > 0"),
    (SiteParams(np.float32(0.1), np.float32(0.5), -127, 127), "must be integers in [-127, 127]"),
    (SiteParams(np.float32(0.1), np.float32(200), -127, 127), "must be integers in [-127, 127]"),
])
def test_bad_params_name_the_site(params, message):
    with pytest.raises(ValueError) as info:
        fake_quant.check_params(Site("fixed", site="conv1/kernel"), None, params)
    assert "fake-quant site 'conv1/kernel'" in str(info.value) and message in str(info.value)


def test_per_channel_params_must_be_along_the_sites_axis():
    site = Site("fixed", axis=-1, channels=4, site="k")
    p = QuantParams(np.ones(4, np.float32), np.zeros(4, np.int32), axis=0)
    with pytest.raises(ValueError, match="per channel on axis 0, the site on -1"):
        fake_quant.check_params(site, 4, SiteParams.of(p), rank=2)
    fake_quant.check_params(site, 4, SiteParams.of(dataclasses.replace(p, axis=1)), rank=2)
