"""Network slimming on the fake adapter: the proximal L1 step on batch-norm scales, when it acts, what
it does to the scales of the channels that get removed, and the recipes it refuses."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.errors import RecipeError, SlimkitWarning
from slimkit.pruning.methods import PruneContext, method_of
from slimkit.pruning.slimming import soft_threshold
from slimkit.recipe import Recipe, Schedule
from slimkit.selection import select_layers
from fake_adapter import FakeAdapter, all_weights, make_mlp

FIELD = "stages[0].prune.layers"


def _recipe(lr=0.05, epochs=10, **stage):
    prune = {"method": "channel", "sparsity": 0.5, "criterion": "bn_scale", "layers": {"names": ["fc1"]}, **stage}
    return Recipe.load({"seed": 0, "fine_tune": {"epochs": epochs, "batch_size": 20, "learning_rate": lr},
                        "stages": [{"prune": prune}]})


def _pruner(recipe, model=None, data=None):
    adapter = FakeAdapter.copy_of(model or make_mlp(other=False))
    adapter.seed(0)
    stage = recipe.stages[0]
    method = method_of(stage)
    layers = select_layers(adapter.layers(), stage.layers, method.kinds, FIELD)
    sample = (data or _data())[0][:32]
    return adapter, method.pruner(adapter, layers, stage, PruneContext(FIELD, sample, data, 0))


def _data():
    rng = np.random.default_rng(123)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(8, 4)), axis=1).astype(np.int64)
    return x, y


def test_soft_threshold_is_the_l1_proximal_step():
    values = np.array([-0.5, -0.05, 0.0, 0.03, 0.2, 1.0], np.float32)
    np.testing.assert_allclose(soft_threshold(values, 0.1), [-0.4, 0.0, 0.0, 0.0, 0.1, 0.9], atol=1e-7)
    assert soft_threshold(values, 0.1).dtype == np.float32


def test_the_step_moves_only_the_pruned_groups_scales_until_channels_are_chosen():
    """lr 0.05 x bn_l1 2 = 0.1 per step on bn's gammas, steps 1..5 (constant schedule, begin 0.5 of 10);
    the choice at step 5 sees the penalised scales; nothing else is touched."""
    adapter, pruner = _pruner(_recipe(regularize={"bn_l1": 2.0}))
    gamma = np.array([0.05, -0.3, 1.0, -0.08, 0.5, 0.25, -1.2, 0.15] * 2, np.float32)
    adapter.set_weights("bn", {"gamma": gamma})
    before = all_weights(adapter.model)
    pruner.begin(10)
    expected = gamma
    for step in range(1, 5):
        pruner.step_end(step)
        expected = soft_threshold(expected, 0.1)
        np.testing.assert_allclose(adapter.get_weights("bn")["gamma"], expected, atol=1e-6)
        assert adapter.model.layer("fc1").mask is None  # nothing chosen yet
    pruner.step_end(5)
    expected = soft_threshold(expected, 0.1)
    np.testing.assert_allclose(adapter.get_weights("bn")["gamma"], expected, atol=1e-6)
    # chosen at step 5 from the penalised scales: the 8 largest |gamma| stay
    keep = np.sort(np.argsort(-np.abs(expected), kind="stable")[:8])
    np.testing.assert_array_equal(pruner.choices[0].keep, keep)
    assert pruner.scales.step == 5
    np.testing.assert_allclose(pruner.scales.removed, np.abs(expected[pruner.choices[0].removed]), atol=1e-6)
    for step in range(6, 11):  # after the choice the penalty stops
        pruner.step_end(step)
    np.testing.assert_allclose(adapter.get_weights("bn")["gamma"], expected, atol=1e-6)
    after = all_weights(adapter.model)
    for key in ("beta", "mean", "var"):
        np.testing.assert_array_equal(after[("bn", key)], before[("bn", key)])
    np.testing.assert_array_equal(after[("fc2", "bias")], before[("fc2", "bias")])


def test_penalty_drives_the_removed_channels_scales_toward_zero():
    """Same seed, same steps: with bn_l1 the scales of the channels that get removed end far closer to zero
    than without, and further below the kept ones; the pruned model still classifies."""
    data = _data()
    runs = {}
    for strength in (None, 1.0):
        extra = {"regularize": {"bn_l1": strength}} if strength else {"schedule": {"kind": "constant", "begin": 0.5}}
        adapter, pruner = _pruner(_recipe(lr=0.02, epochs=20, **extra), data=data)
        adapter.fit(data, _recipe(lr=0.02, epochs=20).stages[0].fine_tune, pruner)
        small = pruner.finish()
        accuracy = float(np.mean(np.argmax(small.predict(data[0]), axis=1) == data[1]))
        runs[strength] = (pruner.scales, accuracy, small)
    plain, slim = runs[None][0], runs[1.0][0]
    assert plain.step == slim.step == 100
    assert slim.removed.mean() < 0.1 * plain.removed.mean(), (slim.removed, plain.removed)
    assert slim.removed.mean() / slim.kept.mean() < 0.5 * plain.removed.mean() / plain.kept.mean()
    assert runs[1.0][2].model.layer("fc1").weights["kernel"].shape == (8, 8)  # half of fc1's 16 channels
    assert runs[1.0][1] > 0.85 and runs[1.0][1] >= runs[None][1] - 0.05, (runs[1.0][1], runs[None][1])


def test_compress_notes_the_scales_at_the_choice(fake_registered, classification_data):
    result = slimkit.compress(make_mlp(other=False), _recipe(regularize={"bn_l1": 1.0}),
                              train_data=classification_data, verbose=False)
    note = next(n for n in result.report.notes if n.startswith("stages[0].prune.regularize.bn_l1:"))
    assert "when the channels were chosen (step 50)" in note and "removed channels' batch-norm scales" in note
    assert [(g.producers, g.channels, g.kept) for g in result.report.groups] == [(("fc1",), 16, 8)]


def test_default_schedule_chooses_at_mid_training_and_a_written_one_is_kept():
    assert _recipe(regularize={"bn_l1": 0.5}).stages[0].schedule == Schedule(kind="constant", begin=0.5)
    written = _recipe(regularize={"bn_l1": 0.5}, schedule={"end": 0.6}).stages[0].schedule
    assert written == Schedule(end=0.6)
    assert _recipe().stages[0].schedule == Schedule()  # no penalty: the usual gradual default
    late = _recipe(regularize={"bn_l1": 0.5}, schedule={"kind": "constant", "begin": 0.9}).stages[0].schedule
    assert late.begin == 0.9  # a constant schedule has no end, so it may begin after the default end 0.8


@pytest.mark.parametrize("stage, field, words", [
    ({"method": "magnitude", "regularize": {"bn_l1": 0.5}}, "stages[0].prune.regularize",
     "method magnitude applies no penalty"),
    ({"regularize": {"bn_l1": 0.5}, "fine_tune": None}, "stages[0].prune.regularize",
     "the stage does not fine-tune"),
    ({"regularize": {"bn_l1": 0.5}, "fine_tune": {"epochs": 0}}, "stages[0].prune.regularize",
     "the stage does not fine-tune"),
    ({"regularize": {}}, "stages[0].prune.regularize", "it names no penalty"),
    ({"regularize": {"bn_l1": 0}}, "stages[0].prune.regularize.bn_l1", "outside (0, inf]"),
    ({"regularize": {"bn_l1": -1.0}}, "stages[0].prune.regularize.bn_l1", "outside (0, inf]"),
    ({"regularize": {"l2": 0.1}}, "stages[0].prune.regularize", "unknown key 'l2'; allowed keys are bn_l1"),
    ({"regularize": 0.5}, "stages[0].prune.regularize", "expected a mapping"),
])
def test_recipes_where_the_penalty_cannot_act_are_refused(stage, field, words):
    body = {"method": "channel", "sparsity": 0.5, **stage}
    with pytest.raises(RecipeError) as err:
        Recipe.load({"stages": [{"prune": body}]})
    assert str(err.value).startswith(field + ":") and words in str(err.value), str(err.value)


def test_groups_without_batch_norm_are_refused(fake_registered, classification_data):
    recipe = _recipe(regularize={"bn_l1": 0.5})
    with pytest.raises(RecipeError, match=r"^stages\[0\]\.prune\.regularize\.bn_l1: none of the channel groups "
                                          r"being pruned has a batch norm \(groups of fc1\)"):
        slimkit.compress(make_mlp(batchnorm=False, other=False), recipe, train_data=classification_data,
                         verbose=False)


def test_weak_penalty_and_blind_criterion_are_warned_about(fake_registered, classification_data):
    # the paper's 1e-4 at lr 1e-3 over 50 steps moves a scale by 5e-6
    with pytest.warns(SlimkitWarning, match=r"regularize\.bn_l1: over the 50 steps before channels are chosen, "
                                            r"bn_l1 0\.0001 at learning rate 0\.001 shrinks a batch-norm scale by "
                                            r"at most 5e-06"):
        slimkit.compress(make_mlp(other=False), _recipe(lr=1e-3, regularize={"bn_l1": 1e-4}),
                         train_data=classification_data, verbose=False)
    with pytest.warns(SlimkitWarning, match=r"criterion 'l2' ranks channels by what the penalty on batch-norm scales "
                                            r"does not change"):
        slimkit.compress(make_mlp(other=False), _recipe(criterion="l2", regularize={"bn_l1": 1.0}),
                         train_data=classification_data, verbose=False)
