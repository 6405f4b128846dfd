"""Magnitude pruning masks: counts, thresholds, ties, canonical layout, and the pruner on the fake."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from slimkit.adapter import HookChain, TrainHooks
from slimkit.pruning.magnitude import SUPPORTED_KINDS, MagnitudePruner, magnitude_masks
from slimkit.pruning.masks import from_canonical, smallest_k_mask, sparsity, to_canonical
from slimkit.recipe import FineTune, Recipe
from slimkit.selection import select_layers

from fake_adapter import FakeAdapter, FakeDense, FakeModel, make_mlp


def random_kernels(seed=0):
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(6, 5)), "b": rng.normal(scale=0.1, size=(4, 3, 3)), "c": rng.normal(size=(7,))}


def stage(**prune):
    return Recipe.load({"stages": [{"prune": {"sparsity": 0.5, **prune}}]}).stages[0]


@pytest.mark.parametrize("s", [0.1, 0.3, 0.5, 0.75, 0.9])
def test_layer_scope_zeros_exactly_round_s_n_smallest(s):
    kernels = random_kernels()
    masks = magnitude_masks(kernels, s, "layer")
    assert list(masks) == list(kernels)
    for name, k in kernels.items():
        m = masks[name]
        assert m.shape == k.shape and m.dtype == np.float32
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert int((m == 0).sum()) == int(round(s * k.size))
        pruned, kept = np.abs(k[m == 0]), np.abs(k[m == 1])
        assert pruned.max() <= kept.min()


@pytest.mark.parametrize("s", [0.2, 0.5, 0.85])
def test_global_scope_one_threshold_and_exact_total(s):
    kernels = random_kernels()
    masks = magnitude_masks(kernels, s, "global")
    total = sum(k.size for k in kernels.values())
    assert sum(int((m == 0).sum()) for m in masks.values()) == int(round(s * total))
    pruned = np.concatenate([np.abs(k[masks[n] == 0]) for n, k in kernels.items()])
    kept = np.concatenate([np.abs(k[masks[n] == 1]) for n, k in kernels.items()])
    assert pruned.max() <= kept.min()


def test_global_scope_takes_more_from_the_layer_with_small_weights():
    kernels = random_kernels()  # "b" has weights 10x smaller
    masks = magnitude_masks(kernels, 0.5, "global")
    assert sparsity(masks["b"]) > 0.75
    assert sparsity(masks["a"]) < 0.4  # layer scope would take 0.5 from each


def test_sparsity_zero_gives_all_ones():
    for scope in ("layer", "global"):
        for m in magnitude_masks(random_kernels(), 0.0, scope).values():
            assert np.all(m == 1.0)


def test_ties_are_broken_by_position_in_canonical_order():
    k = np.array([[1.0, -1.0, 2.0], [1.0, 0.5, -1.0]])  # |.|: 1 1 2 / 1 .5 1
    # zero 3: the 0.5, then the first two 1s in flat (row-major) order
    expected = np.array([[0, 0, 1], [1, 0, 1]], np.float32)
    np.testing.assert_array_equal(magnitude_masks({"k": k}, 0.5, "layer")["k"], expected)
    # repeatable
    np.testing.assert_array_equal(magnitude_masks({"k": k}, 0.5, "layer")["k"], expected)


def test_global_ties_across_layers_go_to_the_earlier_layer():
    masks = magnitude_masks({"first": np.ones(4), "second": np.ones(4)}, 0.5, "global")
    np.testing.assert_array_equal(masks["first"], np.zeros(4))
    np.testing.assert_array_equal(masks["second"], np.ones(4))
    swapped = magnitude_masks({"second": np.ones(4), "first": np.ones(4)}, 0.5, "global")
    np.testing.assert_array_equal(swapped["second"], np.zeros(4))


def test_smallest_k_mask_exact_count_with_all_equal_scores():
    for k in range(0, 11):
        m = smallest_k_mask(np.full((2, 5), 3.0), k)
        assert int((m == 0).sum()) == k
        np.testing.assert_array_equal(m.reshape(-1), [0.0] * k + [1.0] * (10 - k))


@given(st.lists(st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.0, float("nan")]), min_size=1, max_size=40),
       st.integers(0, 45))
@settings(max_examples=200, deadline=None)
def test_smallest_k_mask_drops_what_a_stable_sort_drops(values, k):
    scores = np.array(values)  # few distinct values: ties everywhere, NaN included
    k = min(k, scores.size)
    expected = np.ones(scores.size, dtype=np.float32)
    expected[np.argsort(scores, kind="stable")[:k]] = 0.0
    np.testing.assert_array_equal(smallest_k_mask(scores, k), expected)


def test_to_and_from_canonical_round_trip():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    perm = (3, 2, 0, 1)  # Keras HWIO -> OIHW
    canon = to_canonical(x, perm)
    assert canon.shape == (5, 4, 2, 3)
    np.testing.assert_array_equal(from_canonical(canon, perm), x)
    np.testing.assert_array_equal(to_canonical(x, ()), x)


def expected_mask_canonical(canonical, k):
    """Zero the k smallest |w| of a canonical kernel; ties by flat position. Pure Python."""
    flat = np.abs(canonical).reshape(-1).tolist()
    order = sorted(range(len(flat)), key=lambda i: (flat[i], i))
    mask = np.ones(len(flat), np.float32)
    mask[order[:k]] = 0
    return mask.reshape(canonical.shape)


def tied_kernel():
    """A (5, 3) native (in, out) kernel with many equal magnitudes, so tie-breaking decides."""
    rng = np.random.default_rng(5)
    return rng.choice([-0.5, 0.5, 1.0, -2.0], size=(5, 3)).astype(np.float32)


def one_dense(kernel):
    return FakeModel([FakeDense("fc", kernel, np.zeros(kernel.shape[1]), relu=False)])


def test_pruner_prunes_in_canonical_order():
    """Native (in, out) with perm (1, 0) gives the transpose of pruning the (out, in) transpose."""
    kernel = tied_kernel()
    adapter = FakeAdapter(one_dense(kernel))
    layers = adapter.layers()
    assert layers[0].kernel_perm == (1, 0)
    MagnitudePruner(adapter, layers, stage(sparsity=0.4)).apply(0.4)
    got = adapter.model.layer("fc").mask
    k = int(round(0.4 * kernel.size))
    want = expected_mask_canonical(kernel.T, k).T
    np.testing.assert_array_equal(got, want)
    # the layout matters here: ranking the native layout directly would give another mask
    assert not np.array_equal(want, expected_mask_canonical(kernel, k))
    # and the kernel itself is zeroed where the mask is 0
    np.testing.assert_array_equal(adapter.get_weights("fc")["kernel"], kernel * want)


def test_canonical_invariance_with_magnitude_masks():
    kernel = tied_kernel()
    native = from_canonical(magnitude_masks({"k": to_canonical(kernel, (1, 0))}, 0.4, "layer")["k"], (1, 0))
    transposed = magnitude_masks({"k": to_canonical(kernel.T, (0, 1))}, 0.4, "layer")["k"]
    np.testing.assert_array_equal(native, transposed.T)


def test_pruner_layer_scope_on_the_fake_mlp():
    model = make_mlp()
    adapter = FakeAdapter(model)
    st = stage(sparsity=0.7, scope="layer")
    layers = select_layers(adapter.layers(), st.layers, SUPPORTED_KINDS, "stages[0].prune.layers")
    assert [l.name for l in layers] == ["fc1", "fc2", "logits"]
    pruner = MagnitudePruner(adapter, layers, st)
    pruner.apply(0.7)
    assert pruner.current == 0.7
    for layer in layers:
        kernel = adapter.get_weights(layer.name)["kernel"]
        assert int((kernel == 0).sum()) == int(round(0.7 * kernel.size))


def test_pruner_global_scope_on_the_fake_mlp():
    adapter = FakeAdapter(make_mlp())
    original = {n: adapter.get_weights(n)["kernel"] for n in ("fc1", "fc2", "logits")}
    layers = [l for l in adapter.layers() if l.kind == "dense"]
    MagnitudePruner(adapter, layers, stage(sparsity=0.6, scope="global")).apply(0.6)
    after = {n: adapter.get_weights(n)["kernel"] for n in original}
    total = sum(k.size for k in original.values())
    assert sum(int((k == 0).sum()) for k in after.values()) == int(round(0.6 * total))
    pruned = np.concatenate([np.abs(original[n][after[n] == 0]) for n in original])
    kept = np.concatenate([np.abs(original[n][after[n] != 0]) for n in original])
    assert pruned.max() <= kept.min()


class SparsityLog(TrainHooks):
    """Records each selected kernel's zero count after every step (runs after the pruner)."""

    def __init__(self, adapter, names):
        self.adapter, self.names = adapter, names
        self.total = None
        self.zeros: list[dict[str, np.ndarray]] = []
        self.ended = False

    def begin(self, total_steps):
        self.total = total_steps

    def step_end(self, step):
        self.zeros.append({n: self.adapter.get_weights(n)["kernel"] == 0 for n in self.names})

    def end(self):
        self.ended = True


def test_pruner_follows_the_schedule_during_training(classification_data):
    adapter = FakeAdapter(make_mlp())
    st = stage(sparsity=0.8, scope="layer",
               schedule={"begin": 0.2, "end": 0.7, "every": 3, "initial": 0.1, "power": 3})
    layers = [l for l in adapter.layers() if l.kind == "dense"]
    pruner = MagnitudePruner(adapter, layers, st)
    log = SparsityLog(adapter, [l.name for l in layers])
    settings = FineTune(epochs=4, batch_size=20, learning_rate=0.05)
    adapter.fit(classification_data, settings, HookChain(pruner, log))

    total = 4 * 10
    assert log.total == total and len(log.zeros) == total and log.ended
    t0, t1 = round(0.2 * total), round(0.7 * total)  # steps 8 .. 28
    updates = sorted(set(range(t0, t1, 3)) | {t1})
    current = 0.0
    for step in range(1, total + 1):
        if step in updates:
            current = 0.8 + (0.1 - 0.8) * (1 - (step - t0) / (t1 - t0)) ** 3
        for name, zeros in log.zeros[step - 1].items():
            assert abs(int(zeros.sum()) - current * zeros.size) <= 0.5 + 1e-9, (step, name)
    # masks hold: once zero, a weight stays zero through the rest of training
    for before, after in zip(log.zeros, log.zeros[1:]):
        for name in before:
            assert np.all(after[name][before[name]])
    for name in log.names:
        kernel = adapter.get_weights(name)["kernel"]
        assert int((kernel == 0).sum()) == int(round(0.8 * kernel.size))


def test_pruner_end_applies_target_when_training_stops_early():
    adapter = FakeAdapter(make_mlp())
    layers = [l for l in adapter.layers() if l.kind == "dense"]
    pruner = MagnitudePruner(adapter, layers, stage(sparsity=0.5, schedule={"begin": 0.0, "end": 1.0}))
    pruner.begin(100)
    for step in range(1, 6):  # stopped after 5 of 100 steps
        pruner.step_end(step)
    assert pruner.current < 0.5
    pruner.end()
    assert pruner.current == 0.5
    for layer in layers:
        kernel = adapter.get_weights(layer.name)["kernel"]
        assert int((kernel == 0).sum()) == int(round(0.5 * kernel.size))
