"""ADMM pruning on the fake adapter: the W-step penalty, the Z/U updates, the hard projection (masks or
a rebuilt model), and the recipes it refuses."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.errors import RecipeError, SlimkitWarning
from slimkit.pruning.admm import auto_rho, relative_distance
from slimkit.pruning.magnitude import magnitude_masks
from slimkit.pruning.methods import PruneContext, method_of
from slimkit.recipe import Recipe
from slimkit.selection import select_layers
from fake_adapter import FakeAdapter, make_mlp

FIELD = "stages[0].prune.layers"


def _recipe(lr=0.05, epochs=10, **stage):
    prune = {"method": "admm", "sparsity": 0.5, **stage}
    return Recipe.load({"seed": 0, "fine_tune": {"epochs": epochs, "batch_size": 20, "learning_rate": lr},
                        "stages": [{"prune": prune}]})


def _pruner(recipe, data):
    adapter = FakeAdapter.copy_of(make_mlp(other=False))
    adapter.seed(0)
    stage = recipe.stages[0]
    method = method_of(stage)
    layers = select_layers(adapter.layers(), stage.layers, method.kinds, FIELD)
    return adapter, method.pruner(adapter, layers, stage, PruneContext(FIELD, data[0][:32], data, 0))


def _kernel(adapter, name):
    return adapter.get_weights(name)["kernel"]


def _project(w):
    """Per-layer magnitude projection at 50% of a native (in, out) fake kernel (canonical is its transpose)."""
    return w * magnitude_masks({"k": w.T}, 0.5, "layer")["k"].T


def test_z_and_u_follow_the_admm_updates(classification_data):
    """rho 4 at lr 0.05: each step W <- W - 0.2 (W - Z + U); every 2 steps Z <- proj(W + U), U <- U + W - Z."""
    adapter, pruner = _pruner(_recipe(rho=4.0, every=2, layers={"names": ["fc1"]}), classification_data)
    w = _kernel(adapter, "fc1").astype(np.float64)
    pruner.begin(10)
    key = ("fc1", "kernel")
    assert pruner.keys == [key]
    z, u = _project(w), np.zeros_like(w)
    np.testing.assert_allclose(pruner.z[key], z, atol=1e-6)
    np.testing.assert_array_equal(pruner.u[key], 0.0)
    assert np.mean(z == 0) == 0.5
    for step in (1, 2, 3, 4):
        w = w - 0.2 * (w - z + u)
        pruner.step_end(step)
        np.testing.assert_allclose(_kernel(adapter, "fc1"), w, atol=1e-5, err_msg=f"W after step {step}")
        if step % 2 == 0:
            z = _project(w + u)
            u = u + w - z
            np.testing.assert_allclose(pruner.z[key], z, atol=1e-5, err_msg=f"Z at step {step}")
            np.testing.assert_allclose(pruner.u[key], u, atol=1e-5, err_msg=f"U at step {step}")
            assert pruner.residuals[-1] == (step, pytest.approx(np.linalg.norm(w - z) / np.linalg.norm(w), rel=1e-4))
    assert adapter.model.layer("fc1").mask is None  # nothing is masked before the hard projection
    fc2 = _kernel(adapter, "fc2")
    pruner.step_end(5)
    np.testing.assert_array_equal(_kernel(adapter, "fc2"), fc2)  # unselected layers are not pulled


def test_magnitude_target_ends_at_the_exact_sparsity_close_to_its_projection(fake_registered, classification_data):
    recipe = _recipe(epochs=10, every=5, layers={"names": ["fc1", "fc2"]})
    result = slimkit.compress(make_mlp(other=False), recipe, train_data=classification_data,
                              eval_data=classification_data, verbose=False)
    rows = {row.name: row for row in result.report.layers}
    for name in ("fc1", "fc2"):
        assert rows[name].kernel_nonzeros == rows[name].kernel_params // 2
    assert rows["logits"].kernel_nonzeros == rows["logits"].kernel_params
    assert result.report.stages[0].achieved == 0.5
    assert result.report.metrics_after["accuracy"] > 0.9
    note = next(n for n in result.report.notes if n.startswith("stages[0].prune: admm brought the weights to within"))
    assert "by step 70" in note  # the default retrain: the last 30% of the steps train with the masks


def test_weights_approach_their_projection(classification_data):
    """||W - Z|| / ||W|| shrinks over the Z updates, and the hard projection changes W far less than it
    would have changed the starting weights."""
    adapter, pruner = _pruner(_recipe(epochs=10, every=5), classification_data)
    adapter.fit(classification_data, pruner.stage.fine_tune, pruner)
    residuals = [r for _, r in pruner.residuals]
    assert len(residuals) == 14  # every 5 steps up to the projection at step 70 (retrain 0.3 of 100)
    assert residuals[-1] < 0.25 * residuals[0], residuals
    (start, first), (end, last) = pruner.gaps
    assert (start, end) == (0, 70)
    assert first > 0.2 and last < 0.2 * first, pruner.gaps
    for name in ("fc1", "fc2", "logits"):
        assert np.mean(_kernel(pruner.finish(), name) == 0) == 0.5


def test_retrain_projects_early_and_holds_the_masks(classification_data):
    adapter, pruner = _pruner(_recipe(epochs=10, every=5, retrain=0.3, layers={"names": ["fc1"]}),
                              classification_data)
    seen = {}
    adapter.model.step_observers.append(
        lambda model, step: seen.__setitem__(step, model.layer("fc1").weights["kernel"].copy()))
    adapter.fit(classification_data, pruner.stage.fine_tune, pruner)
    assert pruner.gaps[-1][0] == 70 and pruner.residuals[-1][0] == 70  # no Z/U update after the projection
    zeros = seen[70] == 0
    assert zeros.mean() == 0.5
    for step in (71, 100):
        np.testing.assert_array_equal(seen[step] == 0, zeros)  # masks hold while retraining
    assert not np.allclose(seen[100], seen[70])  # and the kept weights train


def test_channel_target_rebuilds_a_smaller_model(fake_registered, classification_data):
    recipe = _recipe(epochs=10, every=5, target="channel", layers={"names": ["fc1"]})
    result = slimkit.compress(make_mlp(other=False), recipe, train_data=classification_data,
                              eval_data=classification_data, verbose=False)
    layers = {layer.name: layer.weights for layer in result.model.layers}
    assert layers["fc1"]["kernel"].shape == (8, 8) and layers["bn"]["gamma"].shape == (8,)
    assert layers["fc2"]["kernel"].shape == (8, 12)
    assert [(g.producers, g.channels, g.kept) for g in result.report.groups] == [(("fc1",), 16, 8)]
    assert result.report.metrics_after["accuracy"] > 0.9


def test_channel_target_tracks_every_matrix_the_channel_masks_cover(classification_data):
    """fc1's output rows and fc2's input columns of the removed channels are pulled to zero together."""
    adapter, pruner = _pruner(_recipe(epochs=10, every=5, target="channel", layers={"names": ["fc1"]}),
                              classification_data)
    adapter.fit(classification_data, pruner.stage.fine_tune, pruner)
    assert sorted(pruner.keys) == [("fc1", "kernel"), ("fc2", "kernel")]
    removed = pruner.inner.choices[0].removed
    assert len(removed) == 8
    assert pruner.gaps[-1][1] < 0.1 * pruner.gaps[0][1], pruner.gaps


def test_default_rho_and_its_bound(fake_registered, classification_data):
    assert auto_rho(0.05, 10) == pytest.approx(1 / 0.55)
    _, pruner = _pruner(_recipe(every=10), classification_data)
    assert pruner.rho == pytest.approx(1 / 0.55)
    with pytest.raises(RecipeError, match=r"^stages\[0\]\.prune\.rho: rho x learning_rate is 1\.5; .* "
                                          r"\(rho < 20 at learning rate 0\.05\)"):
        slimkit.compress(make_mlp(other=False), _recipe(rho=30.0), train_data=classification_data, verbose=False)


def test_updates_that_never_come_are_warned_about(fake_registered, classification_data):
    with pytest.warns(SlimkitWarning, match=r"stages\[0\]\.prune\.every: Z and U are updated every 500 steps, and "
                                            r"the stage has 70 steps before the hard projection; they are never "
                                            r"updated"):
        slimkit.compress(make_mlp(other=False), _recipe(every=500), train_data=classification_data, verbose=False)


def test_relative_distance():
    a = {"k": np.array([3.0, 4.0])}
    assert relative_distance(a, {"k": np.array([3.0, 0.0])}) == pytest.approx(0.8)
    assert relative_distance({"k": np.zeros(2)}, {"k": np.zeros(2)}) == 0.0


@pytest.mark.parametrize("stage, field, words", [
    ({"fine_tune": None}, "stages[0].prune.fine_tune", "method admm works while fine-tuning, so the stage must "
                                                       "fine-tune (fine_tune is null)"),
    ({"fine_tune": {"epochs": 0}}, "stages[0].prune.fine_tune", "(fine_tune.epochs is 0)"),
    ({"target": "heads"}, "stages[0].prune.target", "'heads' is not one of magnitude, channel"),
    ({"criterion": "l1"}, "stages[0].prune.criterion", "it configures channel choice, and target is magnitude"),
    ({"round_to": 8}, "stages[0].prune.round_to", "it configures channel choice, and target is magnitude"),
    ({"target": "channel", "criterion": "taylor"}, "stages[0].prune.criterion",
     # the list names every registered weight criterion (a test may have registered its own)
     "'taylor' measures the model on data, and ADMM projects W + U, which only weight criteria ("),
    ({"target": "channel", "criterion": "apoz"}, "stages[0].prune.criterion", "'apoz' measures the model on data"),
    ({"schedule": {"end": 0.5}}, "stages[0].prune.schedule", "method admm follows no schedule"),
    ({"regularize": {"bn_l1": 0.1}}, "stages[0].prune.regularize", "method admm applies no penalty"),
    ({"rho": 0}, "stages[0].prune.rho", "outside (0, inf]"),
    ({"every": 0}, "stages[0].prune.every", "outside [1, 1e+06]"),
    ({"retrain": 1.0}, "stages[0].prune.retrain", "outside [0, 1)"),
])
def test_recipes_admm_cannot_run_are_refused(stage, field, words):
    with pytest.raises(RecipeError) as err:
        Recipe.load({"stages": [{"prune": {"method": "admm", "sparsity": 0.5, **stage}}]})
    assert str(err.value).startswith(field + ":") and words in str(err.value), str(err.value)
