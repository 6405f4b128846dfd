"""Per-layer sensitivity (``slimkit.sensitivity``) over the numpy fake framework: the rows equal what one
change to one layer does (checked against the change made by hand and against ``compress`` quantizing that
layer alone), drops by metric direction, ordering, the table, and the recipe's ``analyze:`` section."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

import slimkit
from slimkit import RecipeError, Recipe, Sensitivity, SensitivityRow, SlimkitWarning
from slimkit.pruning.masks import smallest_k_mask
from slimkit.tune.analyze_recipe import Analyze, AnalyzePrune, AnalyzeQuantize
from slimkit.tune.output_error import cosine, sqnr_db

from fake_adapter import FakeAdapter, all_weights, make_mlp

pytestmark = pytest.mark.usefixtures("fake_registered")

STATIC = {"stages": [{"quantize": {"method": "static"}}]}


@pytest.fixture(scope="module")
def setup():
    """The fake MLP (fc1, bn, relu, fc2 (ReLU), scale, logits), 200 inputs, labels it gets 100% right."""
    model = make_mlp()
    x = np.random.default_rng(123).normal(size=(200, 8)).astype(np.float32)
    y = np.argmax(FakeAdapter(model).predict(x), axis=1)
    return model, x, y


def accuracy(model, x, y):
    return float(np.mean(np.argmax(FakeAdapter(model).predict(x), axis=1) == y))


def test_rows_are_one_change_to_one_layer(setup):
    model, x, y = setup
    before = all_weights(model)
    result = slimkit.sensitivity(model, eval_data=(x, y), calib_data=x, verbose=False)
    assert result.metric_name == "accuracy" and result.baseline == 1.0
    keys = [(r.layer, r.action, r.setting) for r in result.rows]
    assert keys == [(n, "prune", s) for n in ("fc1", "fc2", "logits") for s in (0.25, 0.5, 0.75)] + \
        [(n, "quantize", b) for n in ("fc1", "fc2", "logits") for b in (8.0, 4.0)]
    assert {r.kind for r in result.rows} == {"dense"}
    for r in result.rows:
        assert r.drop == pytest.approx(1.0 - r.metric)
        assert r.sqnr_db is not None and 0 < r.cosine <= 1
    # a prune row is the layer's smallest |w| zeroed by hand
    by_hand = FakeAdapter.copy_of(model)
    kernel = by_hand.get_weights("fc2")["kernel"]
    by_hand.set_weights("fc2", {"kernel": kernel * smallest_k_mask(np.abs(kernel.T), round(0.5 * kernel.size)).T})
    row = next(r for r in result.rows if r.layer == "fc2" and r.action == "prune" and r.setting == 0.5)
    assert row.metric == accuracy(by_hand.model, x, y)
    # an int8 row is compress quantizing that layer alone (no fallback)
    for name in ("fc1", "logits"):
        recipe = {"stages": [{"quantize": {"method": "static", "max_float_share": 0.0, "layers": {"names": [name]}}}]}
        alone = slimkit.compress(model, recipe, calib_data=x, verbose=False).model
        row = next(r for r in result.rows if r.layer == name and r.action == "quantize" and r.setting == 8)
        assert row.metric == accuracy(alone, x, y)
    # more pruning, less fidelity at the layer's output; 4-bit kernels are noisier than int8
    for name in ("fc1", "fc2", "logits"):
        sqnr = [r.sqnr_db for r in result.rows if r.layer == name and r.action == "prune"]
        assert sqnr[0] > sqnr[1] > sqnr[2]
        q = {r.setting: r.sqnr_db for r in result.rows if r.layer == name and r.action == "quantize"}
        assert q[8.0] > q[4.0] + 10  # about 6 dB per bit
    after = all_weights(model)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


def test_mse_drop_is_the_increase_and_eval_fn_wins(setup):
    model, x, _ = setup
    target = FakeAdapter(model).predict(x)
    recipe = {**STATIC, "analyze": {"prune": {"ratios": [0.5]}, "quantize": None, "output_error": False}}
    result = slimkit.sensitivity(model, recipe, eval_data=(x, target), calib_data=x, verbose=False)
    assert result.metric_name == "mse" and result.baseline == 0.0
    assert all(r.drop == r.metric > 0 and r.sqnr_db is None and r.cosine is None for r in result.rows)
    calls = []

    def eval_fn(m):
        calls.append(m)
        return -float(np.mean((FakeAdapter(m).predict(x) - target) ** 2))

    by_fn = slimkit.sensitivity(model, recipe, eval_data=(x, target), eval_fn=eval_fn, verbose=False)
    assert by_fn.metric_name == "eval_fn" and len(calls) == 1 + 3
    assert [r.drop for r in by_fn.rows] == pytest.approx([r.drop for r in result.rows], rel=1e-6)
    assert all(m is not model for m in calls)


def test_without_metric_rows_carry_output_errors_and_order_by_sqnr(setup):
    model, x, _ = setup
    result = slimkit.sensitivity(model, {**STATIC, "analyze": {"prune": None}}, calib_data=x, verbose=False)
    assert result.metric_name is None and result.baseline is None
    assert all(r.metric is None and r.drop is None and r.action == "quantize" for r in result.rows)
    int8 = sorted((r.sqnr_db, r.layer) for r in result.rows if r.setting == 8)
    assert result.quant_order() == [name for _, name in int8]
    with pytest.raises(slimkit.DataError, match="^calib_data: quantize rows need inputs to calibrate on"):
        slimkit.sensitivity(model, verbose=False)


def test_qat_recipe_is_estimated_post_training(setup):
    model, x, y = setup
    qat = {"stages": [{"quantize": {"method": "qat", "fine_tune": {"epochs": 1}}}],
           "analyze": {"prune": None, "quantize": {"bits": [8]}, "layers": {"names": ["fc*"]}}}
    result = slimkit.sensitivity(model, qat, eval_data=(x, y), verbose=False)
    static = slimkit.sensitivity(model, {**STATIC, "analyze": qat["analyze"]}, eval_data=(x, y), verbose=False)
    assert [r.layer for r in result.rows] == ["fc1", "fc2"]
    assert result.rows == static.rows


def test_progress_lines(setup, capsys):
    model, x, y = setup
    recipe = {**STATIC, "analyze": {"prune": {"ratios": [0.5]}, "quantize": {"bits": [8]}, "layers": {"names": ["fc2"]}}}
    slimkit.sensitivity(model, recipe, eval_data=(x, y), verbose=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[slimkit] sensitivity 1/2: fc2 prune 0.50  accuracy ")
    assert lines[1].startswith("[slimkit] sensitivity 2/2: fc2 quantize int8  accuracy ")
    assert "dB" in lines[1] and lines[1].endswith("s)")


def table() -> Sensitivity:
    def row(layer, action, setting, drop, sqnr):
        return SensitivityRow(layer, "dense", action, setting, None if drop is None else 1.0 - drop, drop, sqnr, 1.0)

    rows = [row("a", "prune", 0.75, 0.3, 5.0), row("a", "prune", 0.25, 0.1, 20.0),
            row("a", "quantize", 8, 0.01, 40.0), row("b", "quantize", 8, 0.05, 35.0),
            row("c", "quantize", 8, 0.01, 30.0), row("d", "quantize", 8, 0.01, math.inf),
            row("c", "quantize", 4, 0.2, 10.0)]
    return Sensitivity("accuracy", 1.0, rows, 1.5)


def test_quant_order_prune_curve_and_table():
    s = table()
    assert s.quant_order() == ["b", "c", "a", "d"]  # by drop, ties by lowest SQNR
    assert s.quant_order(4) == ["c"]
    assert s.prune_curve("a") == [(0.25, 0.1), (0.75, 0.3)]
    with pytest.raises(KeyError, match="no prune rows for layer 'b'"):
        s.prune_curve("b")
    md = s.to_markdown()
    assert md.splitlines()[0] == "Sensitivity (accuracy baseline 1.0000, 1.5s)"
    assert "| layer | kind | action | setting | accuracy | drop | SQNR dB | cosine |" in md
    assert "| a | dense | prune | 0.75 | 0.7000 | 0.3000 | 5.0 | 1.0000 |" in md
    assert "| d | dense | quantize | int8 | 0.9900 | 0.0100 | inf | 1.0000 |" in md
    data = json.loads(json.dumps(s.to_dict()))
    assert data["metric"] == "accuracy" and len(data["rows"]) == 7 and data["rows"][5]["sqnr_db"] == "inf"


def test_output_error_measures():
    ref = np.array([[3.0, 4.0], [0.0, 0.0]])
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(ref, ref * 0.9) == pytest.approx(20.0)  # noise is a tenth of the signal's amplitude
    assert cosine(ref, 2 * ref) == pytest.approx(1.0) and cosine(ref, -ref) == pytest.approx(-1.0)
    assert cosine(ref, np.zeros_like(ref)) == 0.0 and cosine(ref * 0, ref * 0) == 1.0


# -- the recipe's analyze: section ---------------------------------------------------------------------
def analyze(section, **top):
    return Recipe.load({**STATIC, **top, "analyze": section}).analyze


def test_analyze_defaults_and_keys():
    recipe = Recipe.load({**STATIC, "layers": {"exclude": ["logits"]}})
    assert recipe.analyze is None  # absent: sensitivity uses Analyze(layers=recipe.layers)
    full = analyze({}, layers={"exclude": ["logits"]})
    assert full == Analyze(layers=recipe.layers)
    assert full.prune == AnalyzePrune(None, (0.25, 0.5, 0.75)) and full.quantize == AnalyzeQuantize((8, 4))
    assert full.output_error is True and full.samples is None
    got = analyze({"layers": {"kinds": ["dense"]}, "prune": {"method": "channel", "ratios": [0.5, 0.1]},
                   "quantize": {"bits": [4, 8, 6]}, "output_error": False, "samples": 32}, layers={"exclude": ["x"]})
    assert got.layers.kinds == ("dense",) and got.layers.exclude == ("x",)  # overlaid on the top-level selector
    assert got.prune == AnalyzePrune("channel", (0.1, 0.5)) and got.quantize.bits == (8, 6, 4)
    assert (got.output_error, got.samples) == (False, 32)
    assert analyze({"prune": None}).prune is None and analyze({"quantize": None}).quantize is None


@pytest.mark.parametrize("section, message", [
    ({"prune": {"ratios": [0.5, 1.0]}}, "analyze.prune.ratios[1]: 1.0 is outside (0, 1)"),
    ({"prune": {"ratios": [0.5, 0.5]}}, "analyze.prune.ratios[1]: 0.5 is listed twice"),
    ({"prune": {"ratios": []}}, "analyze.prune.ratios: expected a non-empty list"),
    ({"prune": {"method": "n:m"}}, "analyze.prune.method: 'n:m' is not one of magnitude, channel"),
    ({"prune": {"sparsity": 0.5}}, "analyze.prune: unknown key 'sparsity'"),
    ({"quantize": {"bits": [8, 1]}}, "analyze.quantize.bits[1]: 1 is below the minimum 2"),
    ({"quantize": {"bits": 8}}, "analyze.quantize.bits: expected a non-empty list"),
    ({"output_error": "yes"}, "analyze.output_error: expected true or false"),
    ({"samples": 0}, "analyze.samples: 0 is below the minimum 1"),
    ({"layers": {"kinds": ["conv4d"]}}, "analyze.layers.kinds[0]: 'conv4d' is not one of"),
    ({"ratios": [0.5]}, "analyze: unknown key 'ratios'"),
    ({"prune": None, "quantize": None}, "analyze: prune and quantize are both null"),
    ([0.5], "analyze: expected a mapping"),
])
def test_analyze_errors_name_the_field(section, message):
    with pytest.raises(RecipeError) as info:
        analyze(section)
    assert str(info.value).startswith(message), str(info.value)


def test_selector_matching_nothing_is_named(setup):
    model, x, _ = setup
    with pytest.raises(RecipeError, match=r"^analyze.layers: selector .*matches no layer"):
        slimkit.sensitivity(model, {**STATIC, "analyze": {"layers": {"names": ["nope*"]}}}, calib_data=x,
                            verbose=False)


def test_channel_rows_are_the_channel_method_on_one_layer(setup):
    model, x, y = setup
    recipe = {**STATIC, "analyze": {"prune": {"method": "channel", "ratios": [0.5]}, "quantize": None}}
    result = slimkit.sensitivity(model, recipe, eval_data=(x, y), verbose=False)
    assert [(r.layer, r.setting) for r in result.rows] == [("fc1", 0.5)]
    assert result.rows[0].sqnr_db is None  # fewer channels: no output to compare value by value
    # fc2 feeds the fake's opaque scale layer and logits is the model's output: both say why they have no rows
    assert [n.split(":")[0] for n in result.notes] == ["fc2", "logits"]
    assert "model output" in result.notes[1]
    one = {"stages": [{"prune": {"method": "channel", "sparsity": 0.5, "scope": "layer", "fine_tune": None,
                                 "layers": {"names": ["fc1"]}}}]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlimkitWarning)
        alone = slimkit.compress(model, one, calib_data=x, verbose=False).model
    assert result.rows[0].metric == accuracy(alone, x, y) < 1.0
