"""Recipe loading, defaults, overlays and validation errors (with the field path in the message)."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

import slimkit
from slimkit.errors import NotSupportedYetError, RecipeError
from slimkit.plugins import NoOptions
from slimkit.recipe import FineTune, LayerSelector, OnnxExport, PruneStage, Recipe, Schedule

RECIPE_YAML = """\
version: 1
seed: 7
layers:
  kinds: [dense]
  exclude: ["*logits*"]
fine_tune:
  epochs: 3
  batch_size: 32
  optimizer: sgd
  learning_rate: 0.01
stages:
  - prune:
      method: magnitude
      sparsity: 0.6
      scope: global
      schedule: {kind: polynomial, begin: 0.1, end: 0.7, every: 5, initial: 0.1, power: 2}
export:
  onnx: {opset: 15, verify: false, tolerance: 0.001}
"""

# The example recipe of the user-facing contract (shared/design/api.md), verbatim.
API_MD_EXAMPLE = """\
version: 1
seed: 0
layers:                       # default selector for every stage
  kinds: [conv, dense]        # conv, depthwise_conv, dense, embedding, ... (neutral kind names)
  exclude: ["*logits*"]       # fnmatch globs on layer names
fine_tune:                    # default for every stage that trains
  epochs: 2
  batch_size: 64
  optimizer: adam
  learning_rate: 1.0e-3
stages:
  - prune:
      method: magnitude       # magnitude | channel | n:m
      sparsity: 0.8           # magnitude: fraction of weights zeroed; channel: fraction of channels removed
      scope: global           # global | layer
      schedule: {kind: polynomial, begin: 0.0, end: 0.8, every: 10}   # begin/end as fractions of fine-tuning
  - quantize:
      method: static          # static | dynamic | qat
      weights: {bits: 8, per_channel: true, symmetric: true}
      activations: {bits: 8, calibration: minmax, samples: 256}   # minmax | percentile | entropy | mse
      layers: {exclude: ["conv1"]}       # a stage may override the default selector
  - distill:
      teacher: teacher.keras  # or an object passed as compress(..., teacher=model)
      temperature: 4.0
      alpha: 0.7
tune:                         # optional accuracy-driven search
  tolerance: {relative: 0.01}
  max_trials: 20
export:
  onnx: {opset: 17, verify: true}
"""


def minimal(**prune):
    """A dict recipe with one prune stage; ``prune`` keys overlay ``sparsity: 0.5``."""
    return {"stages": [{"prune": {"sparsity": 0.5, **prune}}]}


def raises(raw, error=RecipeError):
    """Loads ``raw`` expecting ``error``; returns the message."""
    with pytest.raises(error) as info:
        Recipe.load(raw)
    assert type(info.value) is error, f"expected exactly {error.__name__}, got {type(info.value).__name__}"
    return str(info.value)


# -- loading --------------------------------------------------------------------------------------


def test_dict_yaml_string_file_and_path_give_equal_recipes(tmp_path):
    as_dict = yaml.safe_load(RECIPE_YAML)
    file = tmp_path / "recipe.yaml"
    file.write_text(RECIPE_YAML, encoding="utf-8")
    yml = tmp_path / "recipe.yml"
    yml.write_text(RECIPE_YAML, encoding="utf-8")
    loaded = [Recipe.load(as_dict), Recipe.load(RECIPE_YAML), Recipe.load(str(file)), Recipe.load(file),
              Recipe.load(str(yml)), slimkit.Recipe.load(Recipe.load(file))]
    assert all(r == loaded[0] for r in loaded[1:])
    # and the values are the ones written, not defaults
    r = loaded[0]
    assert r.seed == 7
    assert r.layers == LayerSelector(names=("*",), kinds=("dense",), exclude=("*logits*",))
    assert r.fine_tune == FineTune(epochs=3, batch_size=32, optimizer="sgd", learning_rate=0.01)
    assert r.stages == (PruneStage(
        method="magnitude", sparsity=0.6, scope="global",
        schedule=Schedule(kind="polynomial", begin=0.1, end=0.7, every=5, initial=0.1, power=2.0),
        layers=r.layers, fine_tune=r.fine_tune, options=NoOptions(),
    ),)
    assert r.export == OnnxExport(opset=15, verify=False, tolerance=0.001)


def test_load_does_not_modify_the_input_dict():
    raw = yaml.safe_load(RECIPE_YAML)
    before = copy.deepcopy(raw)
    Recipe.load(raw)
    assert raw == before


def test_recipe_is_frozen():
    recipe = Recipe.load(minimal())
    with pytest.raises(Exception, match="cannot assign"):
        recipe.seed = 3  # type: ignore[misc]


def test_defaults_of_a_minimal_recipe():
    r = Recipe.load(minimal())
    assert (r.version, r.seed) == (1, 0)
    assert r.layers == LayerSelector()
    assert r.layers.names == ("*",) and r.layers.kinds is None and r.layers.exclude == ()
    assert r.fine_tune == FineTune()
    assert r.export == OnnxExport()
    (stage,) = r.stages
    assert stage.method == "magnitude"
    assert stage.name == "prune:magnitude"
    assert stage.sparsity == 0.5
    assert stage.scope == "layer"
    assert stage.schedule == Schedule()
    assert stage.layers == r.layers
    assert stage.fine_tune == r.fine_tune


def test_stage_layers_overlay_keys_on_top_level_selector():
    r = Recipe.load({
        "layers": {"kinds": ["dense", "conv"], "exclude": ["*logits*"]},
        "stages": [
            {"prune": {"sparsity": 0.5, "layers": {"exclude": ["fc1"]}}},
            {"prune": {"sparsity": 0.5, "layers": {"names": "fc*", "kinds": None}}},
            {"prune": {"sparsity": 0.5}},
        ],
    })
    assert r.stages[0].layers == LayerSelector(names=("*",), kinds=("dense", "conv"), exclude=("fc1",))
    assert r.stages[1].layers == LayerSelector(names=("fc*",), kinds=None, exclude=("*logits*",))
    assert r.stages[2].layers == r.layers


def test_stage_fine_tune_null_is_one_shot_and_others_keep_the_default():
    r = Recipe.load({
        "fine_tune": {"epochs": 4},
        "stages": [{"prune": {"sparsity": 0.5, "fine_tune": None}}, {"prune": {"sparsity": 0.7}}],
    })
    assert r.stages[0].fine_tune is None
    assert r.stages[1].fine_tune == FineTune(epochs=4)


def test_stage_fine_tune_overlays_the_top_level_one():
    r = Recipe.load({
        "fine_tune": {"epochs": 5, "optimizer": "sgd"},
        "stages": [{"prune": {"sparsity": 0.5, "fine_tune": {"batch_size": 8}}}],
    })
    assert r.fine_tune == FineTune(epochs=5, optimizer="sgd")
    assert r.stages[0].fine_tune == FineTune(epochs=5, optimizer="sgd", batch_size=8)


def test_top_level_fine_tune_null_makes_every_stage_one_shot_unless_it_trains():
    r = Recipe.load({
        "fine_tune": None,
        "stages": [{"prune": {"sparsity": 0.5}}, {"prune": {"sparsity": 0.5, "fine_tune": {"epochs": 3}}}],
    })
    assert r.fine_tune is None
    assert r.stages[0].fine_tune is None
    assert r.stages[1].fine_tune == FineTune(epochs=3)


def test_tune_null_is_accepted():
    assert Recipe.load({**minimal(), "tune": None}).stages[0].sparsity == 0.5


# -- validation errors: type, message and field path ---------------------------------------------


def test_unknown_top_level_key():
    msg = raises({**minimal(), "stagez": []})
    assert "unknown key 'stagez'" in msg and "stages" in msg


def test_unknown_key_inside_prune():
    msg = raises(minimal(sparsty=0.3))
    assert msg.startswith("stages[0].prune: unknown key 'sparsty'")


def test_unknown_key_in_schedule():
    msg = raises(minimal(schedule={"kind": "polynomial", "frequency": 3}))
    assert msg.startswith("stages[0].prune.schedule: unknown key 'frequency'")


def test_unknown_key_in_stage_layers():
    msg = raises({"stages": [{"prune": {"sparsity": 0.5}},
                             {"prune": {"sparsity": 0.5, "layers": {"name": ["a"]}}}]})
    assert msg.startswith("stages[1].prune.layers: unknown key 'name'")


@pytest.mark.parametrize("value, fragment", [
    (1.0, "1.0 is outside [0, 1)"),
    (-0.1, "-0.1 is outside [0, 1)"),
    ("high", "expected a number, got 'high'"),
    (True, "expected a number, got True"),
    (None, "expected a number, got None"),
])
def test_bad_sparsity(value, fragment):
    msg = raises(minimal(sparsity=value))
    assert msg == f"stages[0].prune.sparsity: {fragment}"


def test_nan_sparsity_is_rejected():
    # YAML `.nan` parses to float('nan'); it must not pass the [0, 1) range check.
    msg = raises("stages:\n  - prune: {sparsity: .nan}\n")
    assert "stages[0].prune.sparsity" in msg


def test_missing_sparsity():
    msg = raises({"stages": [{"prune": {"method": "magnitude"}}]})
    assert msg.startswith("stages[0].prune.sparsity: required key is missing")


def test_bad_scope():
    msg = raises(minimal(scope="bogus"))
    assert msg.startswith("stages[0].prune.scope: 'bogus' is not one of global, layer")


def test_bad_method():
    msg = raises(minimal(method="random"))
    assert msg.startswith("stages[0].prune.method: 'random' is not one of")


def test_bad_schedule_kind():
    msg = raises(minimal(schedule={"kind": "cubic"}))
    assert msg.startswith("stages[0].prune.schedule.kind: 'cubic' is not one of constant, polynomial")


def test_schedule_end_before_begin():
    msg = raises(minimal(schedule={"begin": 0.5, "end": 0.2}))
    assert "stages[0].prune.schedule.end" in msg and "before" in msg
    assert "stages[0].prune.schedule.begin" in msg


def test_schedule_every_zero():
    msg = raises(minimal(schedule={"every": 0}))
    assert msg.startswith("stages[0].prune.schedule.every: 0 is below the minimum 1")


def test_schedule_initial_above_sparsity():
    msg = raises(minimal(sparsity=0.3, schedule={"initial": 0.5}))
    assert msg.startswith("stages[0].prune.schedule.initial")
    assert "0.5" in msg and "0.3" in msg


def test_batch_size_zero_top_level_and_in_a_stage():
    assert raises({**minimal(), "fine_tune": {"batch_size": 0}}).startswith(
        "fine_tune.batch_size: 0 is below the minimum 1")
    assert raises(minimal(fine_tune={"batch_size": 0})).startswith(
        "stages[0].prune.fine_tune.batch_size: 0 is below the minimum 1")


@pytest.mark.parametrize("value", [0, 0.0, -1e-3])
def test_learning_rate_must_be_positive(value):
    msg = raises({**minimal(), "fine_tune": {"learning_rate": value}})
    assert msg.startswith("fine_tune.learning_rate:") and "outside (0, 10]" in msg


def test_bad_optimizer_and_loss_and_flag():
    assert raises({**minimal(), "fine_tune": {"optimizer": "lbfgs"}}).startswith(
        "fine_tune.optimizer: 'lbfgs' is not one of")
    assert raises({**minimal(), "fine_tune": {"loss": "hinge"}}).startswith("fine_tune.loss: 'hinge'")
    assert raises({**minimal(), "fine_tune": {"shuffle": "yes"}}).startswith(
        "fine_tune.shuffle: expected true or false")


def test_epochs_must_be_an_integer():
    assert raises({**minimal(), "fine_tune": {"epochs": 1.5}}).startswith(
        "fine_tune.epochs: expected an integer, got 1.5")


def test_unknown_layer_kind_names_its_index():
    msg = raises({**minimal(), "layers": {"kinds": ["dense", "convolution"]}})
    assert msg.startswith("layers.kinds[1]: 'convolution' is not one of")
    msg = raises(minimal(layers={"kinds": ["lstm"]}))
    assert msg.startswith("stages[0].prune.layers.kinds[0]: 'lstm'")


def test_layer_names_must_be_strings():
    assert raises({**minimal(), "layers": {"names": [1, 2]}}).startswith(
        "layers.names: expected a list of strings")


@pytest.mark.parametrize("stages", [[], None, "prune", {"prune": {"sparsity": 0.5}}])
def test_stages_must_be_a_non_empty_list(stages):
    raw = {"stages": stages} if stages is not None else {}
    assert raises(raw).startswith("stages: expected a non-empty list")


def test_stage_with_two_keys():
    msg = raises({"stages": [{"prune": {"sparsity": 0.5}}, {"prune": {"sparsity": 0.5}, "extra": {}}]})
    assert msg.startswith("stages[1]: a stage is a mapping with exactly one key")


def test_unknown_stage_type():
    msg = raises({"stages": [{"prune": {"sparsity": 0.5}}, {"sparsify": {}}]})
    assert msg.startswith("stages[1]: unknown stage 'sparsify'")


def test_prune_body_must_be_a_mapping():
    assert raises({"stages": [{"prune": None}]}).startswith("stages[0].prune: expected a mapping")


def test_version_2():
    msg = raises({**minimal(), "version": 2})
    assert msg.startswith("version: 2 is not supported")


def test_negative_seed():
    assert raises({**minimal(), "seed": -1}).startswith("seed: -1 is below the minimum 0")


def test_export_settings_are_validated():
    assert raises({**minimal(), "export": {"onnx": {"opset": 11}}}).startswith(
        "export.onnx.opset: 11 is below the minimum 13")
    assert raises({**minimal(), "export": {"tflite": {}}}).startswith("export: unknown key 'tflite'")
    assert raises({**minimal(), "export": {"onnx": {"tolerance": 0}}}).startswith("export.onnx.tolerance")


def test_invalid_yaml():
    msg = raises("stages: [\n  - prune: {sparsity: 0.5\n")
    assert "not valid YAML" in msg


def test_yaml_that_is_not_a_mapping():
    assert "must be a mapping" in raises("- prune\n- quantize\n")


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert str(missing) in raises(missing)
    assert str(missing) in raises(str(missing))
    assert "not found" in raises(str(missing))


# -- features specified but not implemented yet ---------------------------------------------------


def test_not_supported_yet_is_a_recipe_error():
    assert issubclass(NotSupportedYetError, RecipeError)
    assert issubclass(RecipeError, slimkit.SlimkitError)


def test_tune_section_needs_a_target():
    # a tune: section is parsed (tests/core/test_tune_recipe.py); without a tolerance or budget it says so
    msg = raises({**minimal(), "tune": {"max_trials": 20}})
    assert msg.startswith("tune: give a tolerance"), msg


def test_channel_method_keys_and_defaults():
    stage = Recipe.load(minimal(method="channel", criterion="fpgm", round_to=8, samples=64)).stages[0]
    assert (stage.method, stage.sparsity) == ("channel", 0.5)
    assert (stage.options.criterion, stage.options.round_to, stage.options.samples) == ("fpgm", 8, 64)
    default = Recipe.load(minimal(method="channel")).stages[0].options
    assert (default.criterion, default.round_to, default.samples) == ("l1", 1, 256)


@pytest.mark.parametrize("bad, path", [
    ({"criterion": "entropy"}, "stages[0].prune.criterion"),
    ({"round_to": 0}, "stages[0].prune.round_to"),
    ({"samples": 0}, "stages[0].prune.samples"),
])
def test_channel_method_bad_values(bad, path):
    assert raises(minimal(method="channel", **bad)).startswith(path + ":")


def test_nm_method_implies_sparsity():
    stage = Recipe.load({"stages": [{"prune": {"method": "n:m", "n": 1, "m": 4}}]}).stages[0]
    assert (stage.options.n, stage.options.m) == (1, 4) and stage.sparsity == pytest.approx(0.75)
    assert Recipe.load({"stages": [{"prune": {"method": "n:m"}}]}).stages[0].sparsity == pytest.approx(0.5)


def test_nm_method_rejects_sparsity_and_bad_n():
    msg = raises({"stages": [{"prune": {"method": "n:m", "sparsity": 0.5}}]})
    assert msg.startswith("stages[0].prune: unknown key 'sparsity'")
    assert raises({"stages": [{"prune": {"method": "n:m", "n": 4, "m": 4}}]}).startswith("stages[0].prune.n:")


def test_criterion_only_for_channel_method():
    assert raises(minimal(criterion="l1")).startswith("stages[0].prune: unknown key 'criterion'")


def test_api_md_example_refuses_distill_after_quantize():
    # api.md lists every stage kind once, in an order a recipe cannot run: distill after quantize
    msg = raises(API_MD_EXAMPLE)
    assert msg.startswith("stages[2].distill: a distill stage cannot follow the quantize stage"), msg


def test_api_md_example_without_tune_refuses_distill_after_quantize():
    raw = yaml.safe_load(API_MD_EXAMPLE)
    del raw["tune"]
    msg = raises(raw)
    assert msg.startswith("stages[2].distill: a distill stage cannot follow the quantize stage") and "qat" in msg


def test_api_md_example_without_tune_and_distill_loads_its_quantize_stage():
    raw = yaml.safe_load(API_MD_EXAMPLE)
    del raw["tune"]
    raw["stages"] = raw["stages"][:2]
    stage = Recipe.load(raw).stages[1]
    assert (stage.method, stage.weights.bits, stage.weights.per_channel, stage.weights.symmetric) == \
        ("static", 8, True, True)
    assert (stage.activations.calibration, stage.activations.samples) == ("minmax", 256)
    assert stage.layers.exclude == ("conv1",) and stage.layers.kinds == ("conv", "dense")
    assert stage.fine_tune is None  # post-training: the recipe's default fine_tune does not apply


def test_api_md_example_with_only_its_prune_stage_loads():
    raw = yaml.safe_load(API_MD_EXAMPLE)
    raw["stages"] = raw["stages"][:1]
    del raw["tune"]
    r = Recipe.load(raw)
    assert r.layers == LayerSelector(kinds=("conv", "dense"), exclude=("*logits*",))
    assert r.fine_tune == FineTune(epochs=2, batch_size=64, optimizer="adam", learning_rate=1e-3)
    (stage,) = r.stages
    assert (stage.method, stage.sparsity, stage.scope) == ("magnitude", 0.8, "global")
    assert stage.schedule == Schedule(kind="polynomial", begin=0.0, end=0.8, every=10)
    assert r.export == OnnxExport(opset=17, verify=True)
