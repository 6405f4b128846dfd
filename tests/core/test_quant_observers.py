"""slimkit.quant.observers: range statistics over calibration batches."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.quant.observers import (
    EntropyObserver,
    HistogramObserver,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    kl_threshold_index,
    make_observer,
)
from slimkit.quant.params import QuantParams


def _batches(rng, n=4, shape=(5, 3, 4, 6)):
    return [rng.normal(i, 1 + i, shape).astype(np.float32) for i in range(n)]


def test_minmax_per_tensor_equals_numpy():
    rng = np.random.default_rng(0)
    obs = MinMaxObserver()
    batches = _batches(rng)
    for b in batches:
        obs.update(b)
    lo, hi = obs.range()
    allx = np.concatenate([b.ravel() for b in batches])
    assert lo.shape == () and lo.dtype == np.float32
    assert lo == allx.min() and hi == allx.max()


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_minmax_per_channel_equals_numpy(axis):
    rng = np.random.default_rng(1)
    obs = MinMaxObserver(axis=axis)
    batches = _batches(rng)
    for b in batches:
        obs.update(b)
    lo, hi = obs.range()
    allx = np.concatenate(batches, axis=0 if axis != 0 else 1)  # keep the channel axis intact
    other = tuple(d for d in range(allx.ndim) if d != axis % allx.ndim)
    np.testing.assert_array_equal(lo, allx.min(axis=other))
    np.testing.assert_array_equal(hi, allx.max(axis=other))
    assert lo.shape == (batches[0].shape[axis],)
    p = obs.params(symmetric=True)
    assert isinstance(p, QuantParams) and p.axis == axis and p.scale.shape == lo.shape


def test_minmax_channel_count_change_and_bad_axis():
    obs = MinMaxObserver(axis=1)
    obs.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="channel count changed on axis 1: 3 then 4"):
        obs.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="axis 1 out of range for a 1-D batch"):
        obs.update(np.zeros(5))


@pytest.mark.parametrize("name", ["minmax", "percentile", "entropy", "mse"])
def test_range_before_update_errors(name):
    obs = make_observer(name)
    with pytest.raises(ValueError, match="observed no data"):
        obs.range()
    obs.update(np.array([]))  # an empty batch is still no data
    with pytest.raises(ValueError, match="observed no data"):
        obs.range()


def test_make_observer():
    assert type(make_observer("minmax", axis=0)) is MinMaxObserver
    assert make_observer("minmax", axis=0).axis == 0
    assert type(make_observer("Percentile", percentile=99.0)) is PercentileObserver
    assert make_observer("percentile", percentile=99.0).percentile == 99.0
    assert type(make_observer("entropy")) is EntropyObserver
    assert type(make_observer("mse", bits=4)) is MSEObserver
    with pytest.raises(ValueError, match="unknown observer 'kl'; valid names: entropy, minmax, mse, percentile"):
        make_observer("kl")


@pytest.mark.parametrize("name", ["percentile", "entropy", "mse"])
def test_histogram_observers_are_per_tensor_only(name):
    with pytest.raises(ValueError, match="per-tensor only: axis must be None, got 0"):
        make_observer(name, axis=0)


def test_histogram_rebinning_keeps_total_count_and_shape():
    rng = np.random.default_rng(2)
    obs = HistogramObserver(bins=256, absolute=False)
    sizes = [1000, 500, 2000, 700]
    for i, n in enumerate(sizes):  # each batch widens the range on one or both sides
        obs.update(rng.uniform(-(i + 1), 2 * (i + 1), n))
    assert obs.total == pytest.approx(sum(sizes), abs=1e-6)
    assert np.all(obs.counts >= 0)
    lo, hi = obs.range()
    assert obs.lo == pytest.approx(float(lo)) and obs.hi == pytest.approx(float(hi))
    rng = np.random.default_rng(2)
    allx = np.concatenate([rng.uniform(-(i + 1), 2 * (i + 1), n) for i, n in enumerate(sizes)])
    assert lo == np.float32(allx.min()) and hi == np.float32(allx.max())
    # the re-binned histogram still locates the mass: its quantiles match the exact ones of all data
    for f in (0.1, 0.5, 0.9):
        assert obs._quantile(f) == pytest.approx(np.quantile(allx, f), abs=0.1)  # noqa: SLF001


def test_histogram_rebin_proportional():
    obs = HistogramObserver(bins=4, absolute=True)
    obs.update(np.array([0.5, 1.5, 2.5, 3.5]))  # edges 0..3.5, a bit uneven
    obs.update(np.array([0.1, 7.0]))  # widen to [0, 7]: old counts halve into the new bins
    # old bins [0, .875) [.875, 1.75) [1.75, 2.625) [2.625, 3.5] -> new [0, 1.75) [1.75, 3.5) ...
    np.testing.assert_allclose(obs.counts, [3.0, 2.0, 0.0, 1.0])
    assert obs.total == pytest.approx(6.0) and obs.hi == 7.0


def test_histogram_from_a_single_point_then_widening():
    obs = HistogramObserver(bins=8, absolute=True)
    obs.update(np.zeros(10))
    obs.update(np.array([4.0, -4.0]))
    assert obs.total == pytest.approx(12.0)
    assert obs.counts[0] == pytest.approx(10.0) and obs.counts[-1] == pytest.approx(2.0)


def test_histogram_drops_non_finite():
    obs = HistogramObserver(bins=8)
    obs.update(np.array([1.0, np.nan, np.inf, -2.0]))
    assert obs.total == 2.0 and obs.hi == 2.0


def _uniform_with_outliers(seed=3):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-1, 1, 100_000), np.full(5, 100.0)]).astype(np.float32)


def test_percentile_ignores_outliers_symmetric():
    x = _uniform_with_outliers()
    obs = PercentileObserver(percentile=99.99)
    for b in np.array_split(x, 3):
        obs.update(b)
    lo, hi = obs.range()
    assert hi == pytest.approx(1.0, abs=0.06)  # one histogram bin is 100/2048 ~ 0.05 wide
    assert lo == -hi


def test_percentile_asymmetric_tails():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.uniform(-1, 3, 200_000), [-50.0, 80.0]])
    obs = PercentileObserver(percentile=99.9, symmetric=False)
    obs.update(x)
    lo, hi = obs.range()
    assert lo == pytest.approx(-1.0 + 0.004, abs=0.07)
    assert hi == pytest.approx(3.0 - 0.004, abs=0.07)
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\]"):
        PercentileObserver(percentile=0)


def test_percentile_non_negative_data_gives_zero_low():
    obs = PercentileObserver(percentile=99.0)
    obs.update(np.random.default_rng(5).uniform(0, 2, 50_000))
    lo, hi = obs.range()
    assert lo == 0.0 and hi == pytest.approx(1.98, abs=0.02)


def _gaussian_with_outliers(seed=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, 1_000_000)
    x[:2] = [30.0, -30.0]
    return x


@pytest.mark.parametrize("cls", [EntropyObserver, MSEObserver])
def test_entropy_and_mse_clip_outliers(cls):
    x = _gaussian_with_outliers()
    obs = cls(bits=8)
    for b in np.array_split(x, 4):
        obs.update(b)
    lo, hi = obs.range()
    assert lo == -hi
    assert 2.0 < hi < 0.5 * np.abs(x).max(), hi


def test_mse_beats_minmax_on_its_own_objective():
    from slimkit.quant.params import params_from_range, quant_error

    x = _gaussian_with_outliers(7).astype(np.float32)
    obs = MSEObserver(bits=8)
    obs.update(x)
    t = float(obs.range()[1])
    assert quant_error(x, params_from_range(-t, t)) < quant_error(x, params_from_range(x.min(), x.max()))


def test_entropy_non_negative_data_gives_zero_low():
    rng = np.random.default_rng(8)
    obs = EntropyObserver()
    obs.update(np.abs(rng.normal(0, 1, 200_000)))
    lo, hi = obs.range()
    assert lo == 0.0 and 1.0 < hi


def test_kl_threshold_keeps_everything_for_a_flat_histogram_of_few_bins():
    assert kl_threshold_index(np.ones(100), 128) == 100  # fewer bins than levels: no clipping
    hist = np.ones(256)
    assert kl_threshold_index(hist, 128) == 256  # uniform data: clipping only loses information


def test_mse_all_zero_data():
    obs = MSEObserver()
    obs.update(np.zeros(10))
    lo, hi = obs.range()
    assert lo == 0.0 and hi == 0.0
