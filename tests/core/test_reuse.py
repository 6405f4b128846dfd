"""Reuse within a tuning run (slimkit.quant.reuse) on the numpy fake: calibration statistics and float
exports served again only under the same model, inputs and settings, identical to computing them anew,
and nothing kept outside ``reusing()``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import slimkit
from slimkit.adapter import MODEL_OUTPUT
from slimkit.quant import calibrate as calibration
from slimkit.quant.reuse import ReuseCache, active, export_float, reusing
from slimkit.recipe import ActivationQuant

from fake_adapter import FakeAdapter, make_mlp

NODES = ["input", "fc1", "fc2/relu", "logits"]
SETTINGS = ActivationQuant(samples=40)


class Counting(FakeAdapter):
    """Records the tensors each layer_outputs pass reads, and writes a file for export_onnx."""

    def __init__(self, model):
        super().__init__(model)
        self.passes: list[tuple[int, tuple[str, ...]]] = []
        self.exports: list[tuple[str, int]] = []

    def layer_outputs(self, x, names, batch_size=256):
        self.passes.append((len(x), tuple(names)))
        return super().layer_outputs(x, names, batch_size)

    def export_onnx(self, path, sample, opset):
        self.exports.append((path, opset))
        # a stand-in file whose bytes depend on what an exporter's would: weights, opset, traced input
        Path(path).write_bytes(b"".join(a.tobytes() for _, a in self.state_arrays()) + bytes([opset])
                               + np.asarray(sample, np.float32).tobytes())


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)


def calibrate(adapter, nodes, x, settings=SETTINGS, record=0):
    return calibration.calibrate_recording(adapter, nodes, x, settings, "q", verbose=False, record=record)


def test_tensors_observed_once_are_returned_without_a_forward_pass(x):
    adapter = Counting(make_mlp(seed=3))
    expected = calibrate(Counting(make_mlp(seed=3)), NODES[1:], x, record=8)
    with reusing() as cache:
        first = calibrate(adapter, NODES, x, record=8)
        passes = len(adapter.passes)
        again = calibrate(adapter, NODES[1:], x, record=8)  # a trial quantizing fewer tensors
        assert len(adapter.passes) == passes  # no forward pass
        assert cache.stats["calibration"] == {"hits": 1, "misses": 1}
        assert cache.stats["calibration_tensors"] == {"hits": 3, "misses": 4}
    assert again.ranges == expected.ranges == {n: first.ranges[n] for n in NODES[1:]}
    np.testing.assert_array_equal(again.outputs, expected.outputs)
    assert cache.stats["float_export"] == {"hits": 0, "misses": 0}


def test_missing_tensors_are_observed_together_and_added(x):
    adapter = Counting(make_mlp(seed=3))
    with reusing() as cache:
        calibrate(adapter, ["fc1"], x)
        adapter.passes.clear()
        got = calibrate(adapter, ["fc1", "fc2/relu", "logits"], x)
        # one run of passes (all 40 inputs: one, then 16 at a time) reading only the two new tensors
        assert adapter.passes == [(n, ("fc2/relu", "logits")) for n in (1, 16, 16, 7)]
        assert cache.stats["calibration_tensors"] == {"hits": 1, "misses": 3}
        adapter.passes.clear()
        calibrate(adapter, ["logits", "fc1"], x)
        assert adapter.passes == []
    assert got.ranges == calibrate(Counting(make_mlp(seed=3)), ["fc1", "fc2/relu", "logits"], x).ranges


def test_recorded_outputs_are_kept_and_extended(x):
    adapter = Counting(make_mlp(seed=3))
    with reusing():
        calibrate(adapter, NODES, x, record=4)
        adapter.passes.clear()
        got = calibrate(adapter, NODES, x, record=8)  # more outputs than kept: read them again
        assert adapter.passes and all(names == (MODEL_OUTPUT,) for _, names in adapter.passes)
        adapter.passes.clear()
        fewer = calibrate(adapter, NODES, x, record=2)
        assert adapter.passes == []
    np.testing.assert_array_equal(got.outputs, calibrate(Counting(make_mlp(seed=3)), NODES, x, record=8).outputs)
    np.testing.assert_array_equal(fewer.outputs, got.outputs[:2])


@pytest.mark.parametrize("change", ["settings", "percentile", "samples", "inputs", "weights", "batch"])
def test_anything_the_statistics_depend_on_misses(x, change):
    adapter = Counting(make_mlp(seed=3))
    settings, batch = ActivationQuant(samples=40, calibration="percentile"), 16
    with reusing() as cache:
        calibration.calibrate_recording(adapter, NODES, x, settings, "q", batch, verbose=False)
        if change == "settings":
            settings = dataclasses.replace(settings, calibration="minmax")
        elif change == "percentile":
            settings = dataclasses.replace(settings, percentile=99.0)
        elif change == "samples":
            settings = dataclasses.replace(settings, samples=30)
        elif change == "inputs":
            x = x.copy()
            x[5, 3] += 1e-3
        elif change == "weights":
            weights = adapter.get_weights("fc2")
            weights["kernel"][0, 0] += 1e-3
            adapter.set_weights("fc2", weights)
        else:
            batch = 8
        adapter.passes.clear()
        got = calibration.calibrate_recording(adapter, NODES, x, settings, "q", batch, verbose=False)
        assert adapter.passes, change
        assert cache.stats["calibration"] == {"hits": 0, "misses": 2}
    fresh = calibration.calibrate_recording(adapter, NODES, x, settings, "q", batch, verbose=False)
    assert got.ranges == fresh.ranges


def test_qat_only_settings_do_not_change_the_key(x):
    adapter = Counting(make_mlp(seed=3))
    with reusing() as cache:
        calibrate(adapter, NODES, x)
        calibrate(adapter, NODES, x, dataclasses.replace(SETTINGS, learn="lsq", momentum=0.5))
    assert cache.stats["calibration"] == {"hits": 1, "misses": 1}


def test_tensors_seen_in_batches_of_another_size_are_observed_again(x, monkeypatch):
    # per input: input 32 + fc1 64 + fc2/relu 48 + logits 16 bytes; passes hold at most 1600 bytes, so
    # all four tensors go 10 inputs a pass and the last three 12: a histogram observer folds other batches
    monkeypatch.setattr(calibration, "PASS_BYTES", 1600)
    settings = ActivationQuant(samples=40, calibration="percentile", percentile=90.0)
    adapter = Counting(make_mlp(seed=3))
    with reusing() as cache:
        calibrate(adapter, NODES, x, settings)
        assert adapter.passes[1][0] == 10
        adapter.passes.clear()
        got = calibrate(adapter, NODES[1:], x, settings)
        assert [n for n, _ in adapter.passes] == [1, 12, 12, 12, 3]
        assert cache.stats["calibration"] == {"hits": 0, "misses": 2}
        adapter.passes.clear()
        calibrate(adapter, NODES[1:], x, settings)
        assert adapter.passes == []
    assert got.ranges == calibrate(Counting(make_mlp(seed=3)), NODES[1:], x, settings).ranges


def test_minmax_ranges_are_reused_whatever_the_pass_size(x, monkeypatch):
    # min-max over batches is the same whatever they hold: a request whose pass size differs (a trial that
    # keeps other layers float asks for fewer tensors) is answered from the cache, equal to a fresh run
    monkeypatch.setattr(calibration, "PASS_BYTES", 1600)
    settings = ActivationQuant(samples=40, calibration="minmax")
    adapter = Counting(make_mlp(seed=3))
    with reusing() as cache:
        calibrate(adapter, NODES, x, settings)
        adapter.passes.clear()
        got = calibrate(adapter, NODES[1:], x, settings)
        assert adapter.passes == [] and cache.stats["calibration"]["hits"] == 1
    assert got.ranges == calibrate(Counting(make_mlp(seed=3)), NODES[1:], x, settings).ranges


def test_nothing_is_cached_outside_reusing(x, tmp_path):
    adapter = Counting(make_mlp(seed=3))
    assert active() is None
    calibrate(adapter, NODES, x)
    calibrate(adapter, NODES, x)
    assert len(adapter.passes) == 8  # two runs of four passes (1, 16, 16, 7 inputs)
    export_float(adapter, str(tmp_path / "a.onnx"), x[:1], 17)
    export_float(adapter, str(tmp_path / "b.onnx"), x[:1], 17)
    assert len(adapter.exports) == 2
    with reusing() as cache:
        assert active() is cache
        calibrate(adapter, NODES, x)
        export_float(adapter, str(tmp_path / "c.onnx"), x[:1], 17)
    assert active() is None
    adapter.passes.clear()
    calibrate(adapter, NODES, x)
    export_float(adapter, str(tmp_path / "d.onnx"), x[:1], 17)
    assert len(adapter.passes) == 4 and len(adapter.exports) == 4


def test_float_export_is_copied_while_the_key_holds(x, tmp_path):
    adapter = Counting(make_mlp(seed=3))
    with reusing() as cache:
        export_float(adapter, str(tmp_path / "a.onnx"), x[:1], 17)
        export_float(adapter.copy_of(adapter.model), str(tmp_path / "b.onnx"), x[:1], 17)  # another copy, same arrays
        assert len(adapter.exports) == 1 and cache.stats["float_export"] == {"hits": 1, "misses": 1}
        assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
        kept = list(cache._dir.iterdir())
        export_float(adapter, str(tmp_path / "c.onnx"), x[:1], 18)  # another opset
        export_float(adapter, str(tmp_path / "d.onnx"), x[1:2], 17)  # another traced input
        weights = adapter.get_weights("fc1")
        weights["bias"][0] += 1.0
        adapter.set_weights("fc1", weights)
        export_float(adapter, str(tmp_path / "e.onnx"), x[:1], 17)  # other weights
        assert len(adapter.exports) == 4 and cache.stats["float_export"] == {"hits": 1, "misses": 4}
    assert not kept[0].exists()  # the cache's files went with the block


def test_least_recently_used_files_are_dropped_beyond_the_budget(x, tmp_path):
    adapter = Counting(make_mlp(seed=3))
    cache = ReuseCache(max_export_bytes=1)
    with reusing(cache):
        export_float(adapter, str(tmp_path / "a.onnx"), x[:1], 17)
        export_float(adapter, str(tmp_path / "b.onnx"), x[1:2], 17)
        export_float(adapter, str(tmp_path / "c.onnx"), x[:1], 17)  # dropped: exported again
    assert len(adapter.exports) == 3 and len(list(cache._dir.iterdir())) == 1
    cache.close()  # a cache passed in stays open after the block, for its owner
    assert cache._dir is None


def test_nested_blocks_keep_the_outer_cache(x):
    adapter = Counting(make_mlp(seed=3))
    with reusing() as outer:
        calibrate(adapter, NODES, x)
        with reusing(ReuseCache()) as inner:
            assert inner is outer
            calibrate(adapter, NODES, x)
        assert active() is outer
    assert outer.stats["calibration"] == {"hits": 1, "misses": 1}


def test_compress_runs_differing_in_excluded_layers_calibrate_once(fake_registered, mlp, classification_data):
    x, _ = classification_data

    def recipe(exclude):
        return {"seed": 0, "stages": [{"quantize": {"method": "static", "activations": {"samples": 64},
                                                    "layers": {"exclude": exclude}}}]}

    plain = [slimkit.compress(mlp, recipe(e), calib_data=x, verbose=False) for e in ([], ["logits"])]
    with reusing() as cache:
        reused = [slimkit.compress(mlp, recipe(e), calib_data=x, verbose=False) for e in ([], ["logits"])]
    assert cache.stats["calibration"] == {"hits": 1, "misses": 1}
    for a, b in zip(plain, reused):
        assert FakeAdapter(a.model).quant_state().keys() == FakeAdapter(b.model).quant_state().keys()
        for key, state in FakeAdapter(a.model).quant_state().items():
            for name, value in state.items():
                np.testing.assert_array_equal(value, FakeAdapter(b.model).quant_state()[key][name])
        np.testing.assert_array_equal(FakeAdapter(a.model).predict(x), FakeAdapter(b.model).predict(x))


def test_worker_threads_share_a_cache_they_enter(x):
    from concurrent.futures import ThreadPoolExecutor

    adapter = Counting(make_mlp(seed=3))
    cache = ReuseCache()

    def trial(nodes):
        with reusing(cache):
            return calibrate(adapter, nodes, x).ranges

    with reusing(cache), ThreadPoolExecutor(1) as pool:
        first = trial(NODES)
        assert pool.submit(active).result() is None  # a thread does not inherit the block
        again = pool.submit(trial, NODES[1:]).result()
    assert cache.stats["calibration"] == {"hits": 1, "misses": 1}
    assert again == {n: first[n] for n in NODES[1:]}
    cache.close()


def test_remembered_values_are_copies(x):
    from slimkit.quant.reuse import remembered_graph

    adapter = Counting(make_mlp(seed=3))
    built = []

    def build():
        built.append(1)
        return adapter.graph(x[:2])

    with reusing() as cache:
        first = remembered_graph(adapter, x[:2], build)
        first.nodes.clear()  # a caller changing its graph changes no other caller's
        again = remembered_graph(adapter, x[:2], build)
        other = remembered_graph(adapter, x[2:4], build)  # another sample: captured again
    assert len(built) == 2 and again.nodes == other.nodes == adapter.graph(x[:2]).nodes
    assert cache.stats["graph"] == {"hits": 1, "misses": 2}
    assert remembered_graph(adapter, x[:2], build) is not None and len(built) == 3  # outside: always built
