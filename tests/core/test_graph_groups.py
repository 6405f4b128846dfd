"""Channel-dependency groups on hand-built neutral graphs, and channel plans on the fake adapter."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.adapter import LayerInfo
from slimkit.errors import RecipeError, UnsupportedModelError
from slimkit.graph import LayerGraph, Node, analyse
from slimkit.pruning.channel import (
    ChannelChoice,
    apply_plan,
    choose_global,
    layer_plans,
    rounded_keep_count,
)
from slimkit.pruning.nm import nm_mask
from fake_adapter import FakeAdapter, make_mlp


def N(name, op, inputs=(), channels=None, **attrs):
    layer = name if op in ("conv", "dense", "depthwise_conv", "batchnorm") else None
    return Node(name, op, tuple(inputs), channels, layer, attrs)


def groups_by_producer(graph):
    analysis = analyse(LayerGraph(graph))
    return {tuple(g.producers): g for g in analysis.groups}, analysis.blocked


def test_plain_cnn_groups_tie_bn_and_next_conv():
    groups, blocked = groups_by_producer([
        N("x", "input", (), 3), N("c1", "conv", ["x"], 8), N("bn", "batchnorm", ["c1"], 8),
        N("r", "elementwise", ["bn"], 8), N("c2", "conv", ["r"], 16), N("p", "elementwise", ["c2"], 16),
        N("fc", "dense", ["p"], 10), N("__output__", "output", ["fc"], 10),
    ])
    assert set(groups) == {("c1",), ("c2",)}
    roles = {(m.layer, m.role) for m in groups[("c1",)].members}
    assert roles == {("c1", "out"), ("bn", "channel"), ("c2", "in")}
    assert {(m.layer, m.role) for m in groups[("c2",)].members} == {("c2", "out"), ("fc", "in")}
    assert [names for names, _ in blocked] == [("fc",)]


def test_residual_add_joins_branches_into_one_group():
    groups, _ = groups_by_producer([
        N("x", "input", (), 3), N("stem", "conv", ["x"], 8), N("a", "conv", ["stem"], 4),
        N("b", "conv", ["a"], 8), N("add", "add", ["stem", "b"], 8), N("head", "conv", ["add"], 5),
        N("__output__", "output", ["head"], 5),
    ])
    assert set(groups) == {("stem", "b"), ("a",)}
    consumers = sorted(m.layer for m in groups[("stem", "b")].members if m.role == "in")
    assert consumers == ["a", "head"]


def test_concat_offsets_and_flatten_blocks():
    groups, _ = groups_by_producer([
        N("x", "input", (), 3), N("a", "conv", ["x"], 2), N("b", "conv", ["x"], 3),
        N("cat", "concat", ["a", "b"], 5), N("r", "elementwise", ["cat"], 5),
        N("f", "flatten", ["r"], 20, spatial=4, order="channels_last"), N("fc", "dense", ["f"], 7),
        N("__output__", "output", ["fc"], 7),
    ])
    fc_of_b = next(m for m in groups[("b",)].members if m.layer == "fc")
    # channels_last flatten: feature = s * 5 + c, b's channels sit at offsets 2..4 of the concat
    np.testing.assert_array_equal(fc_of_b.index, [[s * 5 + c for s in range(4)] for c in (2, 3, 4)])


def test_channels_first_flatten_index():
    groups, _ = groups_by_producer([
        N("x", "input", (), 1), N("a", "conv", ["x"], 2),
        N("f", "flatten", ["a"], 6, spatial=3, order="channels_first"), N("fc", "dense", ["f"], 4),
        N("__output__", "output", ["fc"], 4),
    ])
    index = next(m for m in groups[("a",)].members if m.layer == "fc").index
    np.testing.assert_array_equal(index, [[0, 1, 2], [3, 4, 5]])


def test_opaque_op_blocks_its_neighbours_and_concat_sources():
    groups, blocked = groups_by_producer([
        N("x", "input", (), 3), N("a", "conv", ["x"], 2), N("b", "conv", ["x"], 3),
        N("cat", "concat", ["a", "b"], 5), N("weird", "opaque", ["cat"], 5, type_name="Reshape"),
        N("c", "conv", ["weird"], 4), N("__output__", "output", ["c"], 4),
    ])
    assert groups == {}
    reasons = " ".join(why for _, why in blocked)
    assert "Reshape 'weird'" in reasons and "model output" in reasons


def test_gating_multiply_ties_the_gate_producer():
    groups, _ = groups_by_producer([
        N("x", "input", (), 3), N("c", "conv", ["x"], 8), N("gap", "elementwise", ["c"], 8),
        N("s1", "dense", ["gap"], 2), N("s2", "dense", ["s1"], 8), N("sig", "elementwise", ["s2"], 8),
        N("mul", "multiply", ["c", "sig"], 8), N("head", "conv", ["mul"], 4),
        N("__output__", "output", ["head"], 4),
    ])
    assert ("c", "s2") in groups
    assert {m.layer for m in groups[("c", "s2")].members if m.role == "in"} == {"s1", "head"}


def test_inconsistent_channels_are_an_error():
    with pytest.raises(UnsupportedModelError, match="'bn' has 4 channels but its input 'c' has 8"):
        analyse(LayerGraph([N("x", "input", (), 3), N("c", "conv", ["x"], 8), N("bn", "batchnorm", ["c"], 4)]))


@pytest.mark.parametrize("channels, ratio, round_to, expected", [
    (64, 0.5, 1, 32), (64, 0.3, 8, 48), (10, 0.95, 1, 1), (6, 0.5, 8, 6), (64, 0.99, 8, 8),
])
def test_rounded_keep_count(channels, ratio, round_to, expected):
    assert rounded_keep_count(channels, ratio, round_to) == expected


def test_global_choice_removes_lowest_normalised_channels():
    from slimkit.graph import Group

    groups = [Group(0, 4, []), Group(1, 4, [])]
    scores = [np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 10.0, 10.0, 0.1])]
    keeps = choose_global(groups, scores, ratio=0.25, round_to=1)
    # normalised: [0.4, 0.8, 1.2, 1.6] and [1.33, 1.33, 1.33, 0.013]: the two lowest are g1[3], g0[0]
    np.testing.assert_array_equal(keeps[0], [1, 2, 3])
    np.testing.assert_array_equal(keeps[1], [0, 1, 2])


def test_apply_plan_slices_and_masks_consistently():
    info = LayerInfo("c", "conv", "Conv", 2, {"kernel": (3, 3, 4, 6), "bias": (6,)}, (3, 2, 0, 1))
    rng = np.random.default_rng(0)
    weights = {"kernel": rng.normal(size=(3, 3, 4, 6)).astype(np.float32), "bias": np.arange(6, dtype=np.float32)}
    from slimkit.pruning.channel import LayerPlan

    plan = LayerPlan(out_keep=np.array([1, 4]), in_keep=np.array([0, 3]))
    sliced = apply_plan(info, weights, plan, mask=False)
    assert sliced["kernel"].shape == (3, 3, 2, 2)
    np.testing.assert_array_equal(sliced["kernel"], weights["kernel"][:, :, [0, 3]][:, :, :, [1, 4]])
    np.testing.assert_array_equal(sliced["bias"], [1.0, 4.0])
    masked = apply_plan(info, weights, plan, mask=True)
    assert np.count_nonzero(masked["kernel"]) == 3 * 3 * 2 * 2
    np.testing.assert_array_equal(masked["bias"], [0, 1, 0, 0, 4, 0])


def test_nm_mask_keeps_n_largest_of_every_m_inputs():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(5, 8, 3, 3))
    mask = nm_mask(kernel, 2, 4)
    runs = mask.transpose(0, 2, 3, 1).reshape(-1, 2, 4)  # (out*h*w, runs, m)
    assert np.all(runs.sum(-1) == 2)
    mags = np.abs(kernel).transpose(0, 2, 3, 1).reshape(-1, 2, 4)
    kept_min = np.where(runs == 1, mags, np.inf).min(-1)
    dropped_max = np.where(runs == 0, mags, -np.inf).max(-1)
    assert np.all(kept_min >= dropped_max)
    with pytest.raises(ValueError, match="not a multiple of m=3"):
        nm_mask(kernel, 1, 3)


@pytest.mark.usefixtures("fake_registered")
class TestChannelPruningOnFake:
    RECIPE = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5}}]}

    def test_one_shot_shrinks_and_matches_masked_model(self):
        model = make_mlp((8, 16, 12, 4), batchnorm=True, other=True)
        x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
        result = slimkit.compress(model, self.RECIPE, calib_data=x, verbose=False)
        rows = {g.producers: (g.channels, g.kept) for g in result.report.groups}
        assert rows == {("fc1",): (16, 8)}  # fc2's channels feed the opaque scale: left whole
        assert any("FakeScale 'scale'" in note for note in result.report.notes)
        shrunk = FakeAdapter(result.model)
        assert shrunk.get_weights("fc1")["kernel"].shape == (8, 8)
        assert shrunk.get_weights("bn")["gamma"].shape == (8,)
        assert shrunk.get_weights("fc2")["kernel"].shape == (8, 12)
        # the masked original computes the same function
        original = FakeAdapter.copy_of(model)
        infos = {i.name: i for i in original.layers()}
        # which of fc1's 16 output columns survived, read back from the shrunk kernel
        full, small = original.get_weights("fc1")["kernel"], shrunk.get_weights("fc1")["kernel"]
        keep = np.array([int(np.argmin(np.abs(full - col[:, None]).sum(0))) for col in small.T])
        assert len(set(keep.tolist())) == 8
        choice_layers = layer_plans([ChannelChoice(_fc1_group(original, x), keep)], infos)
        for name, plan in choice_layers.items():
            original.set_weights(name, apply_plan(infos[name], original.get_weights(name), plan, mask=True))
        np.testing.assert_allclose(shrunk.predict(x), original.predict(x), atol=1e-5)
        assert np.abs(model.forward(x) - shrunk.predict(x)).max() > 1e-3  # the user's model is intact

    def test_selector_without_any_group_is_an_error(self):
        model = make_mlp((8, 16, 12, 4), batchnorm=True, other=True)
        recipe = {"fine_tune": None, "layers": {"names": ["fc2"]},
                  "stages": [{"prune": {"method": "channel", "sparsity": 0.5}}]}
        x = np.zeros((4, 8), np.float32)
        with pytest.raises(RecipeError, match=r"stages\[0\]\.prune\.layers: no prunable channel group"):
            slimkit.compress(model, recipe, calib_data=x, verbose=False)

    def test_channel_pruning_needs_sample_inputs(self):
        with pytest.raises(slimkit.DataError, match="needs sample inputs"):
            slimkit.compress(make_mlp(), self.RECIPE, verbose=False)


def _fc1_group(adapter, x):
    analysis = analyse(adapter.graph(x))
    return next(g for g in analysis.groups if g.producers == ["fc1"])


def test_activation_stats_add_up_over_chunks():
    from slimkit.pruning.criteria import activation_stats

    out = np.random.default_rng(3).normal(size=(10, 4, 3, 3))
    whole = activation_stats({"c": out})["c"]
    a, b = activation_stats({"c": out[:6]})["c"], activation_stats({"c": out[6:]})["c"]
    np.testing.assert_allclose(a[0] + b[0], whole[0])
    np.testing.assert_array_equal(a[1] + b[1], whole[1])
    assert a[2] + b[2] == whole[2] == 90
    expected_zeros = (np.maximum(out, 0) == 0).transpose(1, 0, 2, 3).reshape(4, -1).sum(1)
    np.testing.assert_array_equal(whole[1], expected_zeros)


@pytest.mark.usefixtures("fake_registered")
@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm", "bn_scale", "taylor", "apoz", "mean_activation", "random"])
def test_every_criterion_runs_and_keeps_half(criterion):
    model = make_mlp((8, 16, 12, 4), batchnorm=True, other=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    recipe = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5,
                                                       "criterion": criterion, "samples": 40}}]}
    result = slimkit.compress(model, recipe, train_data=(x, y), verbose=False)
    assert [(g.producers, g.channels, g.kept) for g in result.report.groups] == [(("fc1",), 16, 8)]


@pytest.mark.usefixtures("fake_registered")
def test_taylor_prefers_channels_the_loss_depends_on():
    from slimkit.pruning.criteria import group_scores

    model = make_mlp((8, 16, 12, 4), batchnorm=False, other=False)
    adapter = FakeAdapter(model)
    group = next(g for g in analyse(adapter.graph()).groups if g.producers == ["fc1"])
    weights = {n: {k: (np.transpose(v) if k == "kernel" else v) for k, v in adapter.get_weights(n).items()}
               for n in ("fc1", "fc2")}
    grads = {n: {k: np.zeros_like(v) for k, v in w.items()} for n, w in weights.items()}
    grads["fc1"]["kernel"][3] = 1.0  # only channel 3 has gradient
    scores = group_scores("taylor", group, weights, grads)
    assert int(np.argmax(scores)) == 3 and np.count_nonzero(scores[np.arange(16) != 3]) == 0


@pytest.mark.usefixtures("fake_registered")
@pytest.mark.parametrize("scores, message", [
    (lambda n: np.ones(n + 1), "got scores of shape (17,), expected (16,)"),
    (lambda n: np.full(n, np.nan), "scores must be finite numbers"),
])
def test_a_misbehaving_registered_criterion_is_a_plugin_error_naming_it(scores, message):
    @slimkit.register_criterion("broken_for_test")
    class Broken(slimkit.Criterion):
        def scores(self, group, data):
            return scores(group.channels)

    try:
        model = make_mlp((8, 16, 12, 4), batchnorm=False, other=False)
        recipe = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5,
                                                           "criterion": "broken_for_test"}}]}
        x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
        with pytest.raises(slimkit.SlimkitError) as info:
            slimkit.compress(model, recipe, calib_data=x, verbose=False)
        assert "criterion 'broken_for_test' on the channel group of fc1" in str(info.value)
        assert message in str(info.value)
    finally:
        slimkit.CRITERIA.unregister("broken_for_test")


def test_a_concat_added_to_other_channels_blocks_the_spaces_it_concatenates():
    # NASNet's adjust block: two half-width convs concatenated, then added to a full-width conv's output
    groups, blocked = groups_by_producer([
        N("x", "input", (), 3), N("a", "conv", ["x"], 8), N("b", "conv", ["a"], 4), N("c", "conv", ["a"], 4),
        N("cat", "concat", ["b", "c"], 8), N("d", "conv", ["a"], 8), N("add", "add", ["cat", "d"], 8),
        N("e", "conv", ["add"], 6), N("__output__", "output", ["e"], 6),
    ])
    assert set(groups) == {("a",)}
    reasons = {name: why for names, why in blocked for name in names}
    assert "its channels reach concat 'cat', which is left whole" in reasons["b"]
    assert "its channels reach concat 'cat'" in reasons["c"]
    assert "joins channels of different origin" in reasons["d"]


@pytest.mark.parametrize("order", [1, 2])
def test_member_norms_equal_the_norms_of_the_gathered_slices_in_any_layout(order):
    from slimkit.graph import Member
    from slimkit.pruning.criteria.base import member_norms, member_slices

    rng = np.random.default_rng(4)
    kernel = rng.normal(size=(6, 12, 3, 3)).astype(np.float32)  # canonical (out, in, kh, kw)
    # a layout another framework keeps (kh, kw, in, out), seen through a canonical view
    strided = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)).transpose(3, 2, 0, 1)
    consumer = Member("next", "in", np.arange(12).reshape(4, 3))  # a flatten block: 3 inputs per channel
    cases = [(Member("conv", "out"), {"kernel": kernel}), (consumer, {"kernel": kernel}),
             (Member("bn", "channel", None), {"gamma": rng.normal(size=6).astype(np.float32)})]
    for member, weights in cases:
        expected = np.linalg.norm(member_slices(member, weights), ord=order, axis=1)
        np.testing.assert_allclose(member_norms(member, weights, order), expected, rtol=1e-6)
    for member in (Member("conv", "out"), consumer):
        np.testing.assert_array_equal(member_norms(member, {"kernel": strided}, order),
                                      member_norms(member, {"kernel": kernel}, order))
