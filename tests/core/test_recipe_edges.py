"""Recipe edges from the reliability issue: bounded numbers, duplicate keys, encodings, nesting, and keys
that have no effect where they are written (refused, or warned about)."""

from __future__ import annotations

import codecs
import warnings

import pytest

from slimkit.errors import RecipeError, SlimkitWarning
from slimkit.recipe import Recipe

PRUNE = {"stages": [{"prune": {"sparsity": 0.5}}]}


def with_top(**top):
    return {**PRUNE, **top}


def prune(fine_tune=None, **body):
    return {"fine_tune": fine_tune, "stages": [{"prune": {"sparsity": 0.5, **body}}]}


def quantize(method="static", **body):
    return {"stages": [{"quantize": {"method": method, **body}}]}


def load_quietly(raw):
    """Loads ``raw`` expecting no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlimkitWarning)
        return Recipe.load(raw)


# -- bounded numbers --------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, match", [
    (with_top(seed=2**32), r"seed: 4294967296 is above the maximum 4294967295"),
    (with_top(seed=-1), r"seed: -1 is below the minimum 0"),
    (with_top(fine_tune={"epochs": 10**9}), r"fine_tune\.epochs: 1000000000 is above the maximum 10000"),
    (with_top(fine_tune={"batch_size": 2**21}), r"fine_tune\.batch_size: 2097152 is above the maximum 1048576"),
    (quantize(activations={"samples": 2**21}), r"stages\[0\]\.quantize\.activations\.samples: .* above the maximum"),
    (prune(fine_tune={"epochs": 1}, schedule={"every": 10**7}), r"schedule\.every: 10000000 is above the maximum"),
    (with_top(export={"onnx": {"opset": 24}}), r"export\.onnx\.opset: 24 is above the maximum 23"),
    ({"stages": [{"prune": {"sparsity": 10**400}}]}, r"stages\[0\]\.prune\.sparsity: the integer .* \(401 digits\) "
                                                     r"is too large"),
    ({"stages": [{"prune": {"sparsity": 10**300}}]}, r"stages\[0\]\.prune\.sparsity: the integer"),
    ({"stages": [{"prune": {"sparsity": 1e400}}]}, r"stages\[0\]\.prune\.sparsity: expected a finite number"),
    (with_top(fine_tune={"optimizer": {"name": "sgd", "momentum": 10**400}}),
     r"fine_tune\.optimizer\.momentum: the integer"),
    ("stages:\n- prune: {sparsity: " + "9" * 400 + "}\n", r"stages\[0\]\.prune\.sparsity: the integer"),
])
def test_numbers_out_of_range_are_recipe_errors(raw, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.load(raw)


def test_largest_allowed_values_load():
    r = load_quietly(with_top(seed=2**32 - 1, fine_tune={"epochs": 10_000, "batch_size": 2**20},
                              export={"onnx": {"opset": 23}}))
    assert (r.seed, r.fine_tune.epochs, r.fine_tune.batch_size, r.export.opset) == (2**32 - 1, 10_000, 2**20, 23)


# -- YAML and files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, match", [
    ("seed: 1\nseed: 2\nstages: [{prune: {sparsity: 0.5}}]\n", r"recipe line 2: duplicate key 'seed' \(first at line 1\)"),
    ("stages:\n  - prune:\n      sparsity: 0.5\n      sparsity: 0.9\n", r"recipe line 4: duplicate key 'sparsity'"),
    ("stages: [{prune: {sparsity: 0.5, sparsity: 0.9}}]\n", r"recipe line 1: duplicate key 'sparsity'"),
])
def test_duplicate_yaml_keys_name_the_key_and_line(text, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.load(text)


def test_yaml_merge_keys_may_be_overridden():
    text = "base: &b {sparsity: 0.5, scope: layer}\n"
    # A merge (<<) is not a duplicate: the explicit key wins, as YAML says. (``base`` itself is unknown.)
    with pytest.raises(RecipeError, match="unknown key 'base'"):
        Recipe.load(text + "stages: [{prune: {<<: *b, sparsity: 0.7}}]\n")


def test_deep_nesting_is_a_recipe_error_not_a_recursion_error():
    with pytest.raises(RecipeError, match=r"recipe line 1: values nested more than 32 levels deep"):
        Recipe.load("stages: " + "[" * 5000 + "]" * 5000)
    deep: list = []
    inner = deep
    for _ in range(5000):
        inner.append([])
        inner = inner[0]
    with pytest.raises(RecipeError, match=r"stages(\[0\])+: values nested more than 32 levels deep"):
        Recipe.load({"stages": deep})


def test_self_referencing_and_alias_bomb_recipes_are_refused():
    cyclic: dict = {"stages": []}
    cyclic["stages"].append(cyclic)
    with pytest.raises(RecipeError, match="nested more than 32 levels"):
        Recipe.load(cyclic)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcde", "bcdef"))
    with pytest.raises(RecipeError, match="more than 100000 values"):
        Recipe.load(bomb + "stages: [*f]\n")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_files_with_a_byte_order_mark_are_decoded_by_it(tmp_path, encoding):
    path = tmp_path / "r.yaml"
    path.write_bytes("# café\nseed: 3\nstages: [{prune: {sparsity: 0.5}}]\n".encode(encoding))
    assert path.read_bytes()[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE[:2],
                                     codecs.BOM_UTF8[:2])
    assert Recipe.load(path).seed == 3


@pytest.mark.parametrize("data, match", [
    ("seed: 3\n".encode("utf-16-le"), r"r\.yaml is not valid UTF-8 text: it holds NUL bytes \(byte 1\), as "
                                       r"UTF-16"),  # no BOM
    ("# caf\xe9\nseed: 3\n".encode("latin-1"), r"r\.yaml is not valid UTF-8 text \(byte 5, line 1: b'\\xe9"),
    (codecs.BOM_UTF16_LE + b"s\x00e\x00\x00\xd8", r"r\.yaml is not valid UTF-16 text"),  # a lone surrogate
])
def test_undecodable_files_name_the_file_and_encoding(tmp_path, data, match):
    path = tmp_path / "r.yaml"
    path.write_bytes(data)
    with pytest.raises(RecipeError, match=match):
        Recipe.load(str(path))


def test_unreadable_or_misnamed_recipe_files(tmp_path):
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(RecipeError, match=r"recipe file .*d\.yaml is not a regular file"):
        Recipe.load(tmp_path / "d.yaml")
    with pytest.raises(RecipeError, match=r"got str 'model\.txt' \(a recipe file's name must end in \.yaml"):
        Recipe.load("model.txt")
    with pytest.raises(RecipeError, match=r"recipe file .*r\.yaml line 2: duplicate key 'seed'"):
        (tmp_path / "r.yaml").write_text("seed: 1\nseed: 2\n")
        Recipe.load(tmp_path / "r.yaml")


def test_huge_values_are_shown_short_in_messages():
    with pytest.raises(RecipeError) as info:
        Recipe.load({"stages": [{"prune": {"sparsity": 0.5, "layers": {"names": [[1] * 10_000]}}}]})
    assert "expected a list of strings" in str(info.value) and len(str(info.value)) < 300


# -- keys with no effect ----------------------------------------------------------------------------
@pytest.mark.parametrize("raw, match", [
    (prune(schedule={"end": 0.5}), r"stages\[0\]\.prune\.schedule: has no effect here: the stage does not fine-tune"),
    (prune(fine_tune={"epochs": 0}, schedule={"end": 0.5}), r"prune\.schedule: has no effect here"),
    (quantize(weights={"learn": "lsq"}), r"quantize\.weights\.learn: has no effect here: static quantization is "
                                         r"post-training"),
    (quantize(activations={"learn": "ema"}), r"quantize\.activations\.learn: has no effect here"),
    (quantize(activations={"momentum": 0.5}), r"quantize\.activations\.momentum: has no effect here"),
    (quantize(overrides=[{"layers": {"names": ["a"]}, "weights": {"learn": "minmax"}}]),
     r"quantize\.overrides\[0\]\.weights\.learn: has no effect here"),
    (quantize("dynamic", activations={"samples": 64}), r"quantize\.activations\.samples: has no effect here: dynamic "
                                                       r"quantization calibrates nothing"),
    (quantize("dynamic", activations={"calibration": "entropy"}), r"activations\.calibration: has no effect here"),
    (quantize("qat", activations={"samples": 64}), r"activations\.samples: has no effect here: qat with "
                                                   r"activations\.learn ema calibrates nothing"),
    (quantize("qat", activations={"learn": "lsq", "momentum": 0.5}), r"activations\.momentum: has no effect here: "
                                                                     r"momentum is the moving average's"),
    (quantize(activations={"percentile": 99.0}), r"activations\.percentile: has no effect here: .*calibration is "
                                                 r"minmax"),
    (quantize("qat", weights={"bits": 4, "reduce_range": True}), r"quantize\.weights\.reduce_range: has no effect "
                                                                 r"here: .* these have 4 bits"),
])
def test_keys_with_no_effect_in_their_stage_are_refused(raw, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.load(raw)


@pytest.mark.parametrize("raw", [
    prune(fine_tune={"epochs": 1}, schedule={"end": 0.5}),
    quantize("qat", activations={"learn": "lsq", "samples": 64, "calibration": "percentile", "percentile": 99.0}),
    quantize("qat", activations={"learn": "ema", "momentum": 0.5}),
    quantize(activations={"calibration": "percentile", "percentile": 99.9, "samples": 32}),
    quantize("qat", weights={"bits": 8, "reduce_range": False}),
])
def test_the_same_keys_load_where_they_act(raw):
    load_quietly(raw)


@pytest.mark.parametrize("raw, match", [
    ({"fine_tune": {"epochs": 3}, **quantize()}, r"fine_tune: has no effect: no stage fine-tunes"),
    (with_top(export={"onnx": {"verify": False, "tolerance": 0.01}}),
     r"export\.onnx\.tolerance: has no effect: verify is false"),
    (with_top(export={"onnx": {"quant_tolerance": 0.05}}),
     r"export\.onnx\.quant_tolerance: has no effect: .* no quantize stage"),
    (with_top(fine_tune={"loss": "mse", "from_logits": False}), r"fine_tune\.from_logits: has no effect: loss mse"),
    (prune(fine_tune={"epochs": 1}, schedule={"kind": "constant", "power": 2.0}),
     r"stages\[0\]\.prune\.schedule\.power: has no effect: with kind constant"),
])
def test_top_level_keys_with_no_effect_are_warned_about(raw, match):
    with pytest.warns(SlimkitWarning, match=match):
        Recipe.load(raw)
