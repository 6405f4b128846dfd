"""Generated recipes through ``Recipe.load`` (dicts and YAML text): each loads or raises a RecipeError.

The budget follows the hypothesis profile: the default profile's example count in CI;
``pytest -m fuzz --hypothesis-profile=long`` runs 2,000 (README: the fuzz suite).
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slimkit
from slimkit.errors import RecipeError
from strategies import recipes

NAMES = ["conv1", "conv1_bn", "conv2", "conv2_bn", "fc1", "logits"]
pytestmark = pytest.mark.fuzz


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes(NAMES))
def test_generated_recipe_dicts_load_or_raise_a_recipe_error(recipe):
    try:
        loaded = slimkit.Recipe.load(recipe)
    except RecipeError as exc:
        assert str(exc), "a RecipeError must say what is wrong"
        return
    assert len(loaded.stages) == len(recipe["stages"])


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes(NAMES), st.sampled_from(["as_is", "duplicate_key", "tab", "truncate", "deep", "bytes"]))
def test_generated_recipe_texts_load_or_raise_a_recipe_error(recipe, spoil):
    text = yaml.safe_dump(recipe, sort_keys=False)
    if spoil == "duplicate_key":
        text = text + "seed: 3\nseed: 4\n"
    elif spoil == "tab":
        text = "\t" + text
    elif spoil == "truncate":
        text = text[: len(text) // 2]
    elif spoil == "deep":
        text = "stages: " + "[" * 300 + "]" * 300 + "\n"
    try:
        slimkit.Recipe.load(text.encode("utf-16") if spoil == "bytes" else text)
    except RecipeError as exc:
        assert str(exc)
