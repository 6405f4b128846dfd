"""Per-layer ratios in a prune stage (``overrides``) on the fake adapter: parsing and its errors, exact
per-layer sparsity for magnitude (layer and global scope, schedules, lottery, ADMM), channel groups,
the report's targets."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit import RecipeError
from slimkit.adapter import HookChain, TrainHooks
from slimkit.graph import LayerGraph, Node
from slimkit.pruning.lottery import round_sparsity
from slimkit.pruning.magnitude import SUPPORTED_KINDS, MagnitudePruner
from slimkit.pruning.methods import PRUNING_METHODS
from slimkit.pruning.ratios import layer_ratios, requested_share
from slimkit.recipe import FineTune, LayerSelector, PruneOverride, Recipe
from slimkit.registry import register_adapter, unregister_adapter
from slimkit.schedules import sparsity_at
from slimkit.selection import select_layers

from fake_adapter import FakeAdapter, make_mlp

DENSE = ("fc1", "fc2", "logits")  # 8x16, 16x12, 12x4 in make_mlp()


def prune(**stage):
    """A one-stage recipe dict around the prune stage ``stage`` (magnitude 0.5, one-shot by default)."""
    return {"seed": 0, "stages": [{"prune": {"sparsity": 0.5, "fine_tune": None, **stage}}]}


def over(names, sparsity, **selector):
    return {"layers": {"names": list(names), **selector}, "sparsity": sparsity}


def zeros(model, name):
    return int(np.count_nonzero(model.layer(name).weights["kernel"] == 0))


def size(model, name):
    return model.layer(name).weights["kernel"].size


# -- parsing ---------------------------------------------------------------------------------------


def test_overrides_parse_into_prune_overrides_from_every_layer():
    stage = Recipe.load(prune(overrides=[over(["conv2"], 0.2), {"layers": {"kinds": ["dense"]}, "sparsity": 0.7}]))
    assert stage.stages[0].overrides == (
        PruneOverride(LayerSelector(names=("conv2",)), 0.2),
        PruneOverride(LayerSelector(kinds=("dense",)), 0.7),  # names: ["*"], not the stage's selector
    )
    assert Recipe.load(prune()).stages[0].overrides == ()


def test_later_overrides_win():
    adapter = FakeAdapter(make_mlp())
    stage = Recipe.load(prune(overrides=[over(["fc*"], 0.3), over(["fc2"], 0.6)])).stages[0]
    layers = select_layers(adapter.layers(), stage.layers, SUPPORTED_KINDS, "stages[0].prune.layers")
    assert layer_ratios(stage, layers) == {"fc1": 0.3, "fc2": 0.6, "logits": 0.5}


@pytest.mark.parametrize("stage, message", [
    (prune(overrides={"layers": {}, "sparsity": 0.2}),
     r"^stages\[0\]\.prune\.overrides: expected a list of \{layers, sparsity\}"),
    (prune(overrides=[{"layers": {"names": ["fc1"]}}]),
     r"^stages\[0\]\.prune\.overrides\[0\]\.sparsity: required key is missing"),
    (prune(overrides=[over(["fc1"], 0.2), {"sparsity": 0.2}]),
     r"^stages\[0\]\.prune\.overrides\[1\]\.layers: required key is missing"),
    (prune(overrides=[over(["fc1"], 1.0)]), r"^stages\[0\]\.prune\.overrides\[0\]\.sparsity: 1\.0 is outside \[0, 1\)"),
    (prune(overrides=[over(["fc1"], "high")]), r"^stages\[0\]\.prune\.overrides\[0\]\.sparsity: expected a number"),
    (prune(overrides=[{**over(["fc1"], 0.2), "scope": "layer"}]),
     r"^stages\[0\]\.prune\.overrides\[0\]: unknown key 'scope'; allowed keys are layers, sparsity"),
    (prune(overrides=[over(["fc1"], 0.2, kinds=["bogus"])]),
     r"^stages\[0\]\.prune\.overrides\[0\]\.layers\.kinds\[0\]"),
    (prune(overrides=[over(["fc1"], 0.05)], fine_tune={"epochs": 1}, schedule={"initial": 0.1}),
     r"^stages\[0\]\.prune\.overrides\[0\]\.sparsity: 0\.05 is below the schedule's initial sparsity 0\.1"),
])
def test_malformed_overrides_are_recipe_errors_naming_the_field(stage, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.load(stage)


def test_n_m_refuses_overrides_its_sparsity_being_implied():
    raw = {"stages": [{"prune": {"method": "n:m", "overrides": [over(["fc1"], 0.2)]}}]}
    with pytest.raises(RecipeError) as info:
        Recipe.load(raw)
    message = str(info.value)
    assert message.startswith("stages[0].prune.overrides: method n:m prunes every layer alike (its sparsity is "
                              "implied by its options) and takes no per-layer overrides")
    offered = message.rsplit("use a method that does (", 1)[1].rstrip(")").split(", ")
    assert sorted(offered) == ["admm", "channel", "lottery", "magnitude"]


def test_which_methods_take_overrides():
    takes = {name: PRUNING_METHODS.get(name).impl.takes_overrides for name in PRUNING_METHODS.names()}
    assert takes == {"magnitude": True, "n:m": False, "channel": True, "lottery": True, "admm": True}


def test_a_registered_method_takes_no_overrides_unless_it_says_so():
    @slimkit.register_pruning_method("uniform_for_test")
    class Uniform(slimkit.PruningMethod):
        kinds = ("dense",)

    try:
        with pytest.raises(RecipeError, match=r"^stages\[0\]\.prune\.overrides: method uniform_for_test prunes every "
                                              r"layer alike and takes no per-layer overrides"):
            Recipe.load(prune(method="uniform_for_test", overrides=[over(["fc1"], 0.2)]))
    finally:
        PRUNING_METHODS.unregister("uniform_for_test")


@pytest.mark.usefixtures("fake_registered")
def test_an_override_picking_none_of_the_stages_layers_is_an_error_naming_it(mlp):
    recipe = prune(layers={"exclude": ["logits"]}, overrides=[over(["fc1"], 0.2), over(["logits", "fc9"], 0.9)])
    with pytest.raises(RecipeError) as info:
        slimkit.compress(mlp, recipe, verbose=False)
    assert str(info.value) == (
        "stages[0].prune.overrides[1].layers: selector (names=['logits', 'fc9'], kinds=None, exclude=[]) matches "
        "no layer this stage prunes; its layers are: fc1 (dense), fc2 (dense)")


# -- magnitude -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fake_registered")
def test_one_shot_layer_scope_prunes_each_layer_to_its_own_ratio(mlp):
    result = slimkit.compress(mlp, prune(overrides=[over(["fc1"], 0.2), over(["logits"], 0.9)]), verbose=False)
    expected = {"fc1": 0.2, "fc2": 0.5, "logits": 0.9}
    for name, ratio in expected.items():
        assert zeros(result.model, name) == round(ratio * size(mlp, name)), name
        row = result.report.layer(name)
        assert row.target == ratio and row.sparsity == pytest.approx(ratio, abs=0.5 / size(mlp, name))
    assert not [n for n in result.report.notes if "short of" in n]
    # the kept weights are each layer's largest
    for name in expected:
        k, original = result.model.layer(name).weights["kernel"], mlp.layer(name).weights["kernel"]
        assert np.abs(original[k == 0]).max() <= np.abs(original[k != 0]).min()


@pytest.mark.usefixtures("fake_registered")
def test_global_scope_ranks_only_the_layers_no_override_picks(mlp):
    mlp.layer("logits").weights["kernel"] *= 0.1  # small weights: the global ranking takes more of them
    result = slimkit.compress(mlp, prune(sparsity=0.6, scope="global", overrides=[over(["fc2"], 0.1)]),
                              verbose=False)
    model = result.model
    assert zeros(model, "fc2") == round(0.1 * size(mlp, "fc2"))
    rest = ("fc1", "logits")
    assert sum(zeros(model, n) for n in rest) == round(0.6 * sum(size(mlp, n) for n in rest))
    before = {n: np.abs(mlp.layer(n).weights["kernel"]) for n in rest}
    after = {n: model.layer(n).weights["kernel"] for n in rest}
    pruned = np.concatenate([before[n][after[n] == 0] for n in rest])
    kept = np.concatenate([before[n][after[n] != 0] for n in rest])
    assert pruned.max() <= kept.min()  # one threshold over fc1 and logits
    assert zeros(model, "logits") > round(0.9 * size(mlp, "logits"))  # ranked together, not layer by layer
    assert {n: result.report.layer(n).target for n in DENSE} == {"fc1": 0.6, "fc2": 0.1, "logits": 0.6}


class ZeroLog(TrainHooks):
    """Each kernel's zero count after every step (runs after the pruner)."""

    def __init__(self, adapter, names):
        self.adapter, self.names, self.counts = adapter, names, []

    def step_end(self, step):
        self.counts.append({n: int(np.count_nonzero(self.adapter.get_weights(n)["kernel"] == 0)) for n in self.names})


def test_a_schedule_brings_each_layer_to_its_own_final_value(classification_data):
    adapter = FakeAdapter(make_mlp())
    schedule = {"begin": 0.1, "end": 0.6, "every": 4, "initial": 0.05, "power": 3}
    stage = Recipe.load(prune(sparsity=0.8, scope="layer", schedule=schedule, fine_tune={"epochs": 1},
                              overrides=[over(["fc1"], 0.3), over(["logits"], 0.5)])).stages[0]
    layers = [l for l in adapter.layers() if l.kind == "dense"]
    pruner = MagnitudePruner(adapter, layers, stage)
    log = ZeroLog(adapter, list(DENSE))
    adapter.fit(classification_data, FineTune(epochs=4, batch_size=20, learning_rate=0.05), HookChain(pruner, log))
    total, finals = 40, {"fc1": 0.3, "fc2": 0.8, "logits": 0.5}
    sizes = {n: adapter.get_weights(n)["kernel"].size for n in DENSE}
    begin, end = round(0.1 * total), round(0.6 * total)
    updates = sorted(set(range(begin, end, 4)) | {end})
    level = {n: 0.0 for n in DENSE}
    for step, counts in enumerate(log.counts, start=1):
        if step in updates:
            level = {n: sparsity_at(stage.schedule, finals[n], step, total) for n in DENSE}
        for name, count in counts.items():
            assert count == round(level[name] * sizes[name]), (step, name)
    assert log.counts[updates[1] - 1]["fc1"] < log.counts[updates[1] - 1]["fc2"]  # each on its own ramp
    assert log.counts[-1] == {n: round(finals[n] * sizes[n]) for n in DENSE}


@pytest.mark.usefixtures("fake_registered")
def test_a_schedule_cut_short_still_ends_at_each_layers_value(mlp, classification_data):
    # end at 100% of the steps: the last update is the final step; and through compress's report
    recipe = prune(sparsity=0.7, fine_tune={"epochs": 2, "batch_size": 50, "learning_rate": 0.05},
                   schedule={"begin": 0.0, "end": 1.0, "every": 3}, overrides=[over(["fc2"], 0.25)])
    result = slimkit.compress(mlp, recipe, train_data=classification_data, verbose=False)
    for name, ratio in {"fc1": 0.7, "fc2": 0.25, "logits": 0.7}.items():
        assert zeros(result.model, name) == round(ratio * size(mlp, name)), name
        assert result.report.layer(name).target == ratio


@pytest.mark.usefixtures("fake_registered")
def test_lottery_rounds_lead_each_layer_to_its_own_sparsity(mlp, classification_data):
    recipe = prune(method="lottery", sparsity=0.8, rounds=2, fine_tune={"epochs": 3, "batch_size": 50,
                                                                        "learning_rate": 0.05},
                   overrides=[over(["fc1"], 0.4)])
    result = slimkit.compress(mlp, recipe, train_data=classification_data, verbose=False)
    for name, ratio in {"fc1": 0.4, "fc2": 0.8, "logits": 0.8}.items():
        assert zeros(result.model, name) == round(ratio * size(mlp, name)), name
    first = result.report.rounds[1]
    assert first.target == pytest.approx(round_sparsity(0.8, 1, 2))  # the stage's own ramp
    counts = {n: size(mlp, n) for n in DENSE}
    expected = (round(round_sparsity(0.4, 1, 2) * counts["fc1"]) + sum(round(round_sparsity(0.8, 1, 2) * counts[n])
                                                                      for n in ("fc2", "logits")))
    assert first.achieved == pytest.approx(expected / sum(counts.values()))


@pytest.mark.usefixtures("fake_registered")
def test_admm_projects_each_layer_to_its_own_sparsity(mlp, classification_data):
    recipe = prune(method="admm", sparsity=0.6, every=2, fine_tune={"epochs": 2, "batch_size": 50,
                                                                     "learning_rate": 0.05},
                   overrides=[over(["logits"], 0.25)])
    result = slimkit.compress(mlp, recipe, train_data=classification_data, verbose=False)
    for name, ratio in {"fc1": 0.6, "fc2": 0.6, "logits": 0.25}.items():
        assert zeros(result.model, name) == round(ratio * size(mlp, name)), name


def test_requested_share_weighs_each_layers_ratio_by_its_weights():
    sizes = {"a": 100, "b": 300, "c": 600}
    assert requested_share({"a": 0.5, "b": 0.5}, 0.5, sizes) == 0.5
    # c is not pruned by the stage: it counts at the stage's sparsity
    assert requested_share({"a": 0.9, "b": 0.1}, 0.5, sizes) == pytest.approx((90 + 30 + 300) / 1000)


# -- channel ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fake_registered")
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_channel_groups_keep_their_producers_ratio(scope):
    model = make_mlp((8, 16, 12, 4), batchnorm=True, other=False)  # groups: fc1 (16), fc2 (12)
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    recipe = prune(method="channel", scope=scope, overrides=[over(["fc2"], 0.25)])
    result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
    rows = {g.producers: (g.channels, g.kept) for g in result.report.groups}
    assert rows == {("fc1",): (16, 8), ("fc2",): (12, 9)}
    shrunk = FakeAdapter(result.model)
    assert shrunk.get_weights("fc2")["kernel"].shape == (8, 9)
    assert result.report.layer("fc2").target is None  # a channel ratio is no kernel sparsity target


class ResidualFake(FakeAdapter):
    """The fake MLP fc1 -> relu -> fc2 -> relu -> (+ fc1's relu) -> fc3 -> logits, as a graph: fc1 and fc2
    produce one channel set (the residual add), which fc3 reads."""

    def graph(self, sample=None):
        return LayerGraph([
            Node("input", "input", (), 8), Node("fc1", "dense", ("input",), 12, "fc1"),
            Node("fc1/relu", "elementwise", ("fc1",), 12, attrs={"quant": "relu"}),
            Node("fc2", "dense", ("fc1/relu",), 12, "fc2"),
            Node("fc2/relu", "elementwise", ("fc2",), 12, attrs={"quant": "relu"}),
            Node("add", "add", ("fc1/relu", "fc2/relu"), 12),
            Node("fc3", "dense", ("add",), 12, "fc3"), Node("fc3/relu", "elementwise", ("fc3",), 12),
            Node("logits", "dense", ("fc3/relu",), 4, "logits"), Node("__output__", "output", ("logits",), 4),
        ])


def test_a_group_whose_producers_disagree_takes_the_smallest_ratio_and_says_so():
    register_adapter(ResidualFake)
    try:
        model = make_mlp((8, 12, 12, 12, 4), batchnorm=False, other=False)
        x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
        recipe = prune(method="channel", layers={"exclude": ["logits"]},
                       overrides=[over(["fc1"], 0.25), over(["fc3"], 0.75)])
        result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
    finally:
        unregister_adapter(ResidualFake)
    rows = {g.producers: (g.channels, g.kept) for g in result.report.groups}
    assert rows == {("fc1", "fc2"): (12, 9), ("fc3",): (12, 3)}
    assert ("stages[0].prune.overrides: the channel group of fc1, fc2 shares one set of channels among layers of "
            "different ratios (fc1 25.0%, fc2 50.0%); it is pruned to the smallest, 25.0%") in result.report.notes


class SilencedLog(TrainHooks):
    """Each dense layer's silenced output channels (all-zero kernel columns) after every step."""

    def __init__(self, adapter, names):
        self.adapter, self.names, self.counts = adapter, names, []

    def step_end(self, step):
        self.counts.append({n: int(np.sum(~self.adapter.get_weights(n)["kernel"].any(axis=0))) for n in self.names})


def test_channel_groups_follow_the_schedule_to_their_own_ratio(classification_data):
    from slimkit.pruning.channel import rounded_keep_count
    from slimkit.pruning.structured import ChannelPruner

    adapter = FakeAdapter(make_mlp((8, 16, 12, 4), batchnorm=True, other=False))
    stage = Recipe.load(prune(method="channel", sparsity=0.75, fine_tune={"epochs": 1}, overrides=[over(["fc2"], 0.25)],
                              schedule={"begin": 0.0, "end": 0.5, "every": 2})).stages[0]
    layers = [l for l in adapter.layers() if l.name in ("fc1", "fc2")]
    pruner = ChannelPruner(adapter, layers, stage, "stages[0].prune.layers", classification_data[0][:32], None, 0)
    log = SilencedLog(adapter, ["fc1", "fc2"])
    adapter.fit(classification_data, FineTune(epochs=2, batch_size=20, learning_rate=0.05), HookChain(pruner, log))
    total, finals, channels = 20, {"fc1": 0.75, "fc2": 0.25}, {"fc1": 16, "fc2": 12}
    updates = sorted(set(range(1, 10, 2)) | {10})  # begin at step 1 (0 rounds up), end at step 10
    silenced = {n: 0 for n in finals}
    for step, counts in enumerate(log.counts, start=1):
        if step in updates:
            ratios = {n: sparsity_at(stage.schedule, finals[n], step, total) for n in finals}
            silenced = {n: channels[n] - rounded_keep_count(channels[n], ratios[n], 1) for n in finals}
        assert counts == silenced, step
    assert log.counts[-1] == {"fc1": 12, "fc2": 3}
    shrunk = pruner.finish()  # rebuilt with the final choice
    assert shrunk.get_weights("fc1")["kernel"].shape == (8, 4) and shrunk.get_weights("fc2")["kernel"].shape == (4, 9)
