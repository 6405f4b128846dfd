"""The quantize stage of the recipe: defaults, per-layer overrides, and errors that name the field."""

from __future__ import annotations

import pytest

from slimkit import Recipe, RecipeError


def stage(**body):
    return Recipe.load({"stages": [{"quantize": body}]}).stages[0]


def error(raw) -> str:
    with pytest.raises(RecipeError) as info:
        Recipe.load(raw)
    return str(info.value)


def test_static_defaults():
    s = stage()
    assert (s.method, s.name, s.fold_batchnorm, s.fine_tune) == ("static", "quantize:static", True, None)
    assert (s.weights.bits, s.weights.per_channel, s.weights.symmetric, s.weights.reduce_range) == (8, True, True, True)
    a = s.activations
    assert (a.bits, a.symmetric, a.signed, a.calibration, a.samples) == (8, False, False, "minmax", 256)


def test_qat_inherits_the_default_fine_tune_and_takes_learned_quantizers():
    r = Recipe.load({"fine_tune": {"epochs": 3}, "stages": [{"quantize": {
        "method": "qat", "weights": {"bits": 4, "learn": "lsq"}, "activations": {"learn": "lsq", "bits": 6}}}]})
    s = r.stages[0]
    assert s.fine_tune.epochs == 3 and s.weights.bits == 4 and s.weights.learn == "lsq"
    assert s.activations.learn == "lsq" and s.activations.bits == 6


def test_overrides_change_weights_of_selected_layers_only():
    s = stage(weights={"reduce_range": False}, overrides=[{"layers": {"names": ["conv1"]},
                                                           "weights": {"per_channel": False}}])
    (o,) = s.overrides
    assert o.layers.names == ("conv1",) and o.weights.per_channel is False
    assert o.weights.reduce_range is False  # unspecified keys come from the stage's weights


@pytest.mark.parametrize("body, field, words", [
    ({"method": "int4"}, "stages[0].quantize.method", "not one of"),
    ({"weights": {"bits": 9}}, "stages[0].quantize.weights.bits", "2 to 8"),
    ({"weights": {"bits": 1}}, "stages[0].quantize.weights.bits", "2 to 8"),
    ({"weights": {"bits": 4}}, "stages[0].quantize.weights.bits", "qat"),
    ({"activations": {"bits": 6}}, "stages[0].quantize.activations.bits", "8-bit"),
    ({"activations": {"calibration": "kl"}}, "stages[0].quantize.activations.calibration", "not one of"),
    ({"activations": {"samples": 0}}, "stages[0].quantize.activations.samples", "minimum"),
    ({"activations": {"percentile": 101}}, "stages[0].quantize.activations.percentile", "outside"),
    ({"weights": {"granularity": "x"}}, "stages[0].quantize.weights", "unknown key 'granularity'"),
    ({"fine_tune": {"epochs": 1}}, "stages[0].quantize.fine_tune", "post-training"),
    ({"method": "dynamic", "activations": {"signed": True}}, "stages[0].quantize.activations", "uint8"),
    ({"method": "qat", "fine_tune": None}, "stages[0].quantize.fine_tune", "epochs >= 1"),
    ({"overrides": [{"layers": {"names": ["a"]}}]}, "stages[0].quantize.overrides[0]", "both"),
    ({"overrides": [{"layers": {}, "weights": {"bits": 4}}]}, "stages[0].quantize.overrides[0].weights.bits", "qat"),
])
def test_bad_values_name_the_field(body, field, words):
    msg = error({"stages": [{"quantize": body}]})
    assert msg.startswith(field) and words in msg, msg


def test_one_quantize_stage_after_all_pruning():
    q = {"quantize": {}}
    p = {"prune": {"sparsity": 0.5, "fine_tune": None}}
    assert error({"stages": [q, q]}).startswith("stages[1]: only one quantize stage")
    assert error({"stages": [q, p]}).startswith("stages[1]: a prune stage cannot follow")
    assert len(Recipe.load({"stages": [p, q]}).stages) == 2
