"""Structured pruning of CNNs on each framework of the ``zoo`` family: masked model == rebuilt smaller
model through residual adds, depthwise convolutions, concatenations and flattens, end to end.

The MLP case of shrink, for every adapter, is in tests/contract/test_structure_contract.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.graph import analyse
from slimkit.pruning.channel import ChannelChoice, apply_plan, layer_plans
from slimkit.pruning.structured import ChannelPruner
from slimkit.recipe import FineTune, Recipe
from slimkit.registry import adapter_for, adapter_for_copy
import zoo
from frameworks import building

FRAMEWORKS = building("zoo")


def _random_choices(adapter, x, seed=0):
    analysis = analyse(adapter.graph(x))
    rng = np.random.default_rng(seed)
    choices = []
    for group in analysis.groups:
        keep = np.sort(rng.choice(group.channels, size=max(1, group.channels // 2), replace=False))
        choices.append(ChannelChoice(group, keep))
    return analysis, choices


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("arch", [arch for arch in zoo.ARCHS if arch != "mlp"])
def test_masked_model_equals_rebuilt_model(framework, arch):
    model = zoo.twins(arch, seed=2)[framework]
    x = zoo.sample(arch, framework, n=8)
    adapter = adapter_for(model)
    analysis, choices = _random_choices(adapter, x)
    assert choices, f"{arch}: no prunable group; blocked: {analysis.blocked}"
    infos = {layer.name: layer for layer in adapter.layers()}
    plans = layer_plans(choices, infos)
    masked = adapter_for_copy(model)
    sliced = {}
    for name, plan in plans.items():
        weights = adapter.get_weights(name)
        masked.set_weights(name, apply_plan(infos[name], weights, plan, mask=True))
        sliced[name] = apply_plan(infos[name], weights, plan, mask=False)
    small = adapter.shrink(sliced)
    np.testing.assert_allclose(small.predict(x), masked.predict(x), atol=1e-4, rtol=0)
    params = lambda a: sum(layer.params for layer in a.layers())  # noqa: E731
    assert params(small) < params(adapter)
    # the model the adapter wraps is untouched
    np.testing.assert_allclose(adapter.predict(x), adapter_for(model).predict(x), atol=0)


@pytest.mark.parametrize("framework", FRAMEWORKS)
class TestChannelPruning:
    def test_one_shot_recipe_shrinks_exports_and_reports(self, framework, tmp_path):
        model = zoo.twins("residual")[framework]
        x = zoo.sample("residual", framework, n=16)
        recipe = {"fine_tune": None, "layers": {"exclude": ["logits"]},
                  "stages": [{"prune": {"method": "channel", "sparsity": 0.5, "criterion": "l1"}}]}
        result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
        kept = {g.producers: (g.channels, g.kept) for g in result.report.groups}
        assert kept[("stem", "b1_conv2")] == (16, 8) and kept[("b1_conv1",)] == (8, 4)
        row = result.export_onnx(tmp_path / "small.onnx")
        assert row.max_abs_diff < 1e-4
        assert result.report.weight_bytes["fp32 after"] < 0.4 * result.report.weight_bytes["fp32 before"]
        assert "zlib after" not in result.report.weight_bytes  # no zeroed entries: no compressing for them
        (stage,) = result.report.stages
        assert 0 < stage.capture_seconds < stage.seconds  # graph capture reported apart from the work

    def test_gradual_masks_then_removal_keeps_the_function(self, framework):
        model = zoo.twins("inverted")[framework]
        x = zoo.sample("inverted", framework, n=64)
        y = np.random.default_rng(0).integers(0, 10, 64).astype(np.int64)
        recipe = Recipe.load({"layers": {"exclude": ["logits"]}, "fine_tune": {"epochs": 2, "batch_size": 16},
                              "stages": [{"prune": {"method": "channel", "sparsity": 0.5,
                                                    "schedule": {"begin": 0.0, "end": 0.5, "every": 2}}}]})
        stage = recipe.stages[0]
        work = adapter_for_copy(model)
        layers = [layer for layer in work.layers() if layer.kind in ("conv", "dense") and layer.name != "logits"]
        pruner = ChannelPruner(work, layers, stage, "stages[0].prune.layers", x, (x, y), seed=0)
        work.fit((x, y), stage.fine_tune, pruner)
        masked_out = work.predict(x)
        small = pruner.shrunk()
        np.testing.assert_allclose(small.predict(x), masked_out, atol=1e-4, rtol=0)
        assert all(len(c.keep) == c.group.channels // 2 for c in pruner.choices)

    def test_nm_masks_hold_the_pattern(self, framework):
        model = zoo.twins("mlp")[framework]
        x = zoo.sample("mlp", framework, n=64)
        y = np.random.default_rng(0).integers(0, 5, 64).astype(np.int64)
        recipe = {"fine_tune": {"epochs": 2, "batch_size": 16},
                  "stages": [{"prune": {"method": "n:m", "n": 2, "m": 4}}]}
        result = slimkit.compress(model, recipe, train_data=(x, y), verbose=False)
        adapter = adapter_for(result.model)
        for layer in adapter.layers():
            canon = np.transpose(adapter.get_weights(layer.name)["kernel"], layer.kernel_perm)
            runs = canon.reshape(canon.shape[0], -1, 4)
            assert np.all(np.count_nonzero(runs, axis=-1) <= 2), layer.name
            assert result.report.layer(layer.name).sparsity == pytest.approx(0.5, abs=1e-6)

    def test_nm_rejects_layers_whose_inputs_do_not_divide(self, framework):
        model = zoo.twins("plain")[framework]  # conv1 has 3 input channels
        recipe = {"fine_tune": None, "stages": [{"prune": {"method": "n:m", "n": 2, "m": 4}}]}
        with pytest.raises(slimkit.RecipeError, match="'conv1' has 3 input channels, not a multiple of m=4"):
            slimkit.compress(model, recipe, verbose=False)


def _opaque_model(framework):
    """conv -> an op slimkit cannot prune through (mixes channels) -> conv -> pool -> dense."""
    if framework == "keras":
        import keras

        inp = keras.Input((8, 8, 4))
        x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
        x = keras.layers.Permute((1, 3, 2), name="shuffle")(x)  # swaps width and channels
        x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inp, keras.layers.Dense(3, name="logits")(x)), np.zeros((4, 8, 8, 4), np.float32)
    import torch
    from torch import nn

    class Shuffle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2, self.logits = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 3)

        def forward(self, x):
            x = torch.flip(self.conv1(x), dims=[1])
            return self.logits(self.conv2(x).mean(dim=(2, 3)))

    return Shuffle(), np.zeros((4, 4, 8, 8), np.float32)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unanalysable_op_is_named_in_a_warning_and_left_whole(framework):
    model, x = _opaque_model(framework)
    recipe = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5}}]}
    with pytest.warns(slimkit.SlimkitWarning, match=r"conv1.*left whole.*'?(shuffle|flip)"):
        result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
    assert [g.producers for g in result.report.groups] == [("conv2",)]
    assert any("conv1" in note for note in result.report.notes)
    small = adapter_for(result.model)
    infos = {layer.name: layer for layer in small.layers()}
    assert infos["conv1"].shapes["kernel"][infos["conv1"].kernel_perm[0]] == 8  # untouched


def test_untraceable_torch_model_names_the_class():
    import torch
    from torch import nn

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    recipe = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5}}]}
    with pytest.raises(slimkit.UnsupportedModelError, match="Branchy"):
        slimkit.compress(Branchy(), recipe, calib_data=np.ones((2, 4), np.float32), verbose=False)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_rebuilt_model_trains_saves_and_loads(framework, tmp_path):
    model = zoo.twins("plain")[framework]
    x = zoo.sample("plain", framework, n=32)
    y = np.random.default_rng(0).integers(0, 10, 32).astype(np.int64)
    recipe = {"fine_tune": None, "layers": {"exclude": ["logits"]},
              "stages": [{"prune": {"method": "channel", "sparsity": 0.5}}]}
    small = slimkit.compress(model, recipe, calib_data=x, verbose=False).model
    adapter = adapter_for(small)
    before = adapter.get_weights("conv2")["kernel"].copy()
    adapter.fit((x, y), FineTune(epochs=1, batch_size=8), slimkit.TrainHooks())
    assert not np.allclose(adapter.get_weights("conv2")["kernel"], before)  # it trained
    expected = adapter.predict(x)
    if framework == "keras":
        import keras

        path = tmp_path / "small.keras"
        small.save(path)
        loaded = keras.models.load_model(path)  # safe mode: no code is deserialised
    else:
        import copy

        import torch

        path = tmp_path / "small.pt"
        torch.save(small.state_dict(), path)
        loaded = copy.deepcopy(small)
        for p in loaded.parameters():
            p.data.zero_()
        loaded.load_state_dict(torch.load(path, weights_only=True))
    np.testing.assert_allclose(adapter_for(loaded).predict(x), expected, atol=1e-6)
