"""slimkit.compress end to end over the numpy fake framework: pruning, training, report, errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import slimkit
from slimkit import DataError, ExportError, RecipeError, UnsupportedModelError

from fake_adapter import all_weights

pytestmark = pytest.mark.usefixtures("fake_registered")

DENSE = ("fc1", "fc2", "logits")


def recipe(sparsity=0.75, scope="layer", fine_tune=None, schedule=None, layers=None, **top):
    """A one-stage magnitude recipe; ``fine_tune=None`` is one-shot."""
    prune = {"sparsity": sparsity, "scope": scope, "fine_tune": fine_tune}
    if schedule is not None:
        prune["schedule"] = schedule
    if layers is not None:
        prune["layers"] = layers
    return {"seed": 0, "stages": [{"prune": prune}], **top}


def kernel(model, name):
    return model.layer(name).weights["kernel"]


def zeros(array):
    return int(np.count_nonzero(array == 0))


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.forward(x), axis=1) == y))


# -- one-shot ---------------------------------------------------------------------------------------


def test_one_shot_layer_scope_exact_sparsity_per_layer(mlp):
    before = all_weights(mlp)
    result = slimkit.compress(mlp, recipe(0.75), verbose=False)
    model = result.model
    assert model is not mlp
    for name in DENSE:
        k = kernel(model, name)
        assert zeros(k) == round(0.75 * k.size), name
        original = before[(name, "kernel")]
        np.testing.assert_array_equal(k[k != 0], original[k != 0])  # kept weights untouched
        assert np.abs(original[k == 0]).max() <= np.abs(original[k != 0]).min()
        np.testing.assert_array_equal(model.layer(name).weights["bias"], before[(name, "bias")])
    for key in [("bn", "gamma"), ("bn", "beta"), ("bn", "mean"), ("bn", "var"), ("scale", "scale")]:
        np.testing.assert_array_equal(model.layer(key[0]).weights[key[1]], before[key])
    assert all(layer.mask is None for layer in model.layers)  # stripped


def test_one_shot_global_scope_one_threshold(mlp):
    before = all_weights(mlp)
    model = slimkit.compress(mlp, recipe(0.6, scope="global"), verbose=False).model
    total = sum(kernel(mlp, n).size for n in DENSE)
    assert sum(zeros(kernel(model, n)) for n in DENSE) == round(0.6 * total)
    pruned = np.concatenate([np.abs(before[(n, "kernel")][kernel(model, n) == 0]) for n in DENSE])
    kept = np.concatenate([np.abs(before[(n, "kernel")][kernel(model, n) != 0]) for n in DENSE])
    assert pruned.max() <= kept.min()


def test_selector_from_the_recipe_limits_the_layers(mlp):
    model = slimkit.compress(mlp, recipe(0.5, layers={"exclude": ["logits"]}), verbose=False).model
    assert zeros(kernel(model, "fc1")) == 64 and zeros(kernel(model, "fc2")) == 96
    assert zeros(kernel(model, "logits")) == 0


def test_user_model_unchanged(mlp, classification_data):
    before = all_weights(mlp)
    slimkit.compress(mlp, recipe(0.8, fine_tune={"epochs": 2, "batch_size": 32, "learning_rate": 0.05}),
                     train_data=classification_data, eval_data=classification_data, verbose=False)
    after = all_weights(mlp)
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=str(key))
    assert all(layer.mask is None for layer in mlp.layers)


# -- fine-tuning with a schedule --------------------------------------------------------------------


FT = {"epochs": 3, "batch_size": 25, "learning_rate": 0.05}  # 200 samples: 8 steps per epoch, 24 in all


def test_fine_tuning_grows_sparsity_holds_masks_and_ends_at_target(mlp, classification_data):
    history: list[dict[str, np.ndarray]] = []
    mlp.step_observers.append(lambda m, step: history.append({n: kernel(m, n) == 0 for n in DENSE}))
    before = all_weights(mlp)
    result = slimkit.compress(
        mlp, recipe(0.8, fine_tune=FT, schedule={"begin": 0.0, "end": 0.75, "every": 2}),
        train_data=classification_data, verbose=False)

    assert len(history) == 24
    counts = [sum(int(z[n].sum()) for n in DENSE) for z in history]
    assert all(a <= b for a, b in zip(counts, counts[1:])), counts
    assert len(set(counts)) > 4  # it really grew in several steps
    assert counts[0] == 0  # initial sparsity 0 at the first step
    total = sum(kernel(mlp, n).size for n in DENSE)
    assert counts[17] == sum(round(0.8 * kernel(mlp, n).size) for n in DENSE) < total  # end: step 18
    for earlier, later in zip(history, history[1:]):  # masks hold: zeros stay zero
        for n in DENSE:
            assert np.all(later[n][earlier[n]]), n
    model = result.model
    for n in DENSE:
        k = kernel(model, n)
        assert zeros(k) == round(0.8 * k.size)
        assert np.all(k[history[17][n]] == 0)
        # the kept weights were trained, so the run did more than a one-shot prune
        assert not np.allclose(k[k != 0], before[(n, "kernel")][k != 0])


def test_polynomial_steps_follow_the_closed_form(mlp, classification_data):
    history: list[int] = []
    mlp.step_observers.append(lambda m, step: history.append(zeros(kernel(m, "fc2"))))
    slimkit.compress(mlp, recipe(0.9, fine_tune=FT,
                                 schedule={"begin": 0.25, "end": 0.75, "every": 4, "power": 2}),
                     train_data=classification_data, verbose=False)
    n = kernel(mlp, "fc2").size
    begin, end = round(0.25 * 24), round(0.75 * 24)  # steps 6 .. 18
    expected, current = [], 0
    for step in range(1, 25):
        if begin <= step <= end and (step == end or (step - begin) % 4 == 0):
            current = 0.9 * (1 - (1 - (step - begin) / (end - begin)) ** 2)
        expected.append(current * n)
    assert len(history) == 24
    for step, (got, want) in enumerate(zip(history, expected), start=1):
        assert abs(got - want) <= 0.5 + 1e-9, (step, got, want)


def test_constant_schedule_prunes_once_at_begin(mlp, classification_data):
    history: list[int] = []
    mlp.step_observers.append(lambda m, step: history.append(zeros(kernel(m, "fc1"))))
    slimkit.compress(mlp, recipe(0.5, fine_tune=FT, schedule={"kind": "constant", "begin": 0.5, "end": 0.5}),
                     train_data=classification_data, verbose=False)
    assert history == [0] * 11 + [64] * 13


def test_progress_lines_report_growing_sparsity(mlp, classification_data, capsys):
    slimkit.compress(mlp, recipe(0.8, fine_tune=FT, schedule={"begin": 0.0, "end": 0.5}),
                     train_data=classification_data, verbose=True)
    err = capsys.readouterr().err
    assert "fine-tuning 3 epochs, 24 steps" in err
    lines = [l for l in err.splitlines() if "epoch " in l]
    assert [re.search(r"epoch (\d)/3", l).group(1) for l in lines] == ["1", "2", "3"]
    values = [float(re.search(r"sparsity (\d\.\d+)", l).group(1)) for l in lines]
    assert values[0] < values[1] == values[2] == 0.8
    assert all("loss" in l and "stage 1/1 prune:magnitude" in l for l in lines)


def test_quiet_run_prints_nothing(mlp, classification_data, capsys):
    slimkit.compress(mlp, recipe(0.5, fine_tune=FT), train_data=classification_data, verbose=False)
    assert capsys.readouterr().err == ""


def test_same_seed_same_result_other_seed_other_result(mlp, classification_data):
    def run(seed):
        r = recipe(0.5, fine_tune=FT, seed=seed)
        return all_weights(slimkit.compress(mlp, r, train_data=classification_data, verbose=False).model)

    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)  # the seed drives the fake's shuffling


def test_two_stages_in_order(mlp, classification_data):
    r = {"stages": [
        {"prune": {"sparsity": 0.5, "fine_tune": None, "layers": {"names": ["fc1"]}}},
        {"prune": {"sparsity": 0.25, "fine_tune": FT, "layers": {"names": ["fc2", "logits"]}}},
    ]}
    result = slimkit.compress(mlp, r, train_data=classification_data, verbose=False)
    assert zeros(kernel(result.model, "fc1")) == 64  # stage 1 masks held through stage 2's training
    assert zeros(kernel(result.model, "fc2")) == 48 and zeros(kernel(result.model, "logits")) == 12
    s1, s2 = result.report.stages
    assert (s1.layers, s1.fine_tuned, s1.steps) == (("fc1",), False, 0)
    assert (s2.layers, s2.fine_tuned, s2.steps) == (("fc2", "logits"), True, 24)
    assert result.report.layer("fc1").target == 0.5 and result.report.layer("fc2").target == 0.25


# -- user fit function ------------------------------------------------------------------------------


def test_fit_fn_drives_the_schedule(mlp, classification_data):
    x, y = classification_data
    seen = []

    def my_fit(model, callback):
        seen.append(model)
        callback.begin(30)
        for step in range(30):
            idx = slice((step * 20) % 200, (step * 20) % 200 + 20)
            model.train_step(x[idx], y[idx], lr=0.05)
            callback.step()
            seen.append(sum(zeros(kernel(model, n)) for n in DENSE))
        callback.epoch_end(1, {"loss": 0.0})

    result = slimkit.compress(mlp, recipe(0.7, fine_tune={"epochs": 1}, schedule={"begin": 0.0, "end": 0.5}),
                              fit_fn=my_fit, verbose=False)
    assert seen[0] is not mlp and seen[0] is result.model  # it trains the working copy
    counts = seen[1:]
    assert len(counts) == 30
    assert all(a <= b for a, b in zip(counts, counts[1:])) and counts[0] < counts[-1]
    assert counts[14] == counts[-1]  # target reached at step round(0.5 * 30) = 15
    for n in DENSE:
        assert zeros(kernel(result.model, n)) == round(0.7 * kernel(mlp, n).size)


def test_fit_fn_with_train_data_gets_the_step_count(mlp, classification_data):
    """With train_data, compress() starts the schedule itself: 3 epochs x 8 batches = 24 steps."""
    x, y = classification_data
    counts = []

    def my_fit(model, callback):  # no callback.begin(): compress() already called it
        for step in range(24):
            batch = slice(step % 8 * 25, (step % 8 + 1) * 25)
            model.train_step(x[batch], y[batch], lr=0.05)
            callback.step()
            counts.append(zeros(kernel(model, "fc2")))

    result = slimkit.compress(mlp, recipe(0.5, fine_tune=FT, schedule={"kind": "constant", "begin": 0.5}),
                              train_data=classification_data, fit_fn=my_fit, verbose=False)
    # a constant schedule prunes once, at step round(0.5 * 24) = 12: so it was told 24 steps
    assert counts == [0] * 11 + [96] * 13
    assert result.report.stages[0].steps == 24
    assert zeros(kernel(result.model, "fc2")) == 96


def test_fit_fn_steps_are_reported(mlp):
    def my_fit(model, callback):
        callback.begin(30)
        for _ in range(30):
            callback.step()

    result = slimkit.compress(mlp, recipe(0.5, fine_tune={"epochs": 1}), fit_fn=my_fit, verbose=False)
    assert zeros(kernel(result.model, "fc2")) == 96
    stage = result.report.stages[0]
    assert stage.fine_tuned
    assert stage.steps == 30  # the steps the user's loop ran, not 0


# -- report -----------------------------------------------------------------------------------------


def test_report_rows(mlp, classification_data):
    result = slimkit.compress(mlp, recipe(0.75, layers={"exclude": ["logits"]}),
                              eval_data=classification_data, verbose=False)
    report = result.report
    assert report.framework == "fake"
    assert [r.name for r in report.layers] == ["fc1", "bn", "fc2", "scale", "logits"]
    for row in report.layers:
        layer = result.model.layer(row.name)
        assert row.kind == layer.kind
        assert row.params == sum(w.size for w in layer.weights.values())
        assert row.nonzeros == sum(int(np.count_nonzero(w)) for w in layer.weights.values())
        k = layer.weights.get("kernel", np.zeros(0))
        assert (row.kernel_params, row.kernel_nonzeros) == (k.size, np.count_nonzero(k))
        if k.size:  # sparsity is the kernel's, the quantity a target refers to
            assert row.sparsity == pytest.approx(1 - np.count_nonzero(k) / k.size)
        else:
            assert row.sparsity == pytest.approx(1 - row.nonzeros / row.params)
    assert report.layer("fc1").sparsity == 0.75 and report.layer("fc2").sparsity == 0.75
    assert report.layer("logits").sparsity == 0.0
    assert report.layer("fc1").target == 0.75 and report.layer("fc2").target == 0.75
    assert report.layer("logits").target is None and report.layer("bn").target is None
    # fc1 8x16+16, bn 4x16, fc2 16x12+12, scale 12, logits 12x4+4
    assert report.params == sum(r.params for r in report.layers) == 144 + 64 + 204 + 12 + 52
    assert report.nonzeros == report.params - 96 - 144
    with pytest.raises(KeyError, match="relu1"):
        report.layer("relu1")
    (stage,) = report.stages
    assert (stage.name, stage.layers, stage.target, stage.scope, stage.fine_tuned, stage.steps) == (
        "prune:magnitude", ("fc1", "fc2"), 0.75, "layer", False, 0)
    assert stage.seconds >= 0
    wb = report.weight_bytes
    assert wb["fp32 before"] == wb["fp32 after"] == 4 * report.params
    assert wb["zlib after"] < wb["zlib before"]


def test_report_metrics_accuracy(mlp, classification_data):
    x, y = classification_data
    result = slimkit.compress(mlp, recipe(0.9), eval_data=(x, y), verbose=False)
    report = result.report
    assert report.metrics_before == {"accuracy": pytest.approx(accuracy(mlp, x, y))}
    assert report.metrics_after == {"accuracy": pytest.approx(accuracy(result.model, x, y))}


def test_report_metrics_mse_and_eval_fn(mlp):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    target = rng.normal(size=(30, 4)).astype(np.float32)
    calls = []

    def eval_fn(model):
        calls.append(model)
        return -float(np.abs(model.forward(x)).sum())

    result = slimkit.compress(mlp, recipe(0.5), eval_data=(x, target), eval_fn=eval_fn, verbose=False)
    before, after = result.report.metrics_before, result.report.metrics_after
    assert before["mse"] == pytest.approx(float(np.mean((mlp.forward(x) - target) ** 2)), rel=1e-6)
    assert after["mse"] == pytest.approx(float(np.mean((result.model.forward(x) - target) ** 2)), rel=1e-6)
    assert calls == [mlp, result.model]
    assert before["eval_fn"] == pytest.approx(-float(np.abs(mlp.forward(x)).sum()))


def test_no_metrics_without_eval(mlp):
    report = slimkit.compress(mlp, recipe(0.5), verbose=False).report
    assert report.metrics_before == {} and report.metrics_after == {}


def test_report_to_dict_is_json(mlp, classification_data):
    report = slimkit.compress(mlp, recipe(0.5, fine_tune=FT), train_data=classification_data,
                              eval_data=classification_data, verbose=False).report
    data = json.loads(json.dumps(report.to_dict()))
    assert data["framework"] == "fake"
    assert data["params"] == report.params and data["nonzeros"] == report.nonzeros
    assert [row["name"] for row in data["layers"]] == [r.name for r in report.layers]
    fc1 = next(row for row in data["layers"] if row["name"] == "fc1")
    assert fc1["target"] == 0.5 and fc1["sparsity"] == pytest.approx(report.layer("fc1").sparsity)
    assert data["stages"][0]["layers"] == ["fc1", "fc2", "logits"] and data["stages"][0]["steps"] == 24
    assert set(data["metrics_after"]) == {"accuracy"}
    assert data["files"] == []


def test_report_to_markdown(mlp, classification_data):
    report = slimkit.compress(mlp, recipe(0.5), eval_data=classification_data, verbose=False).report
    md = report.to_markdown()
    assert str(report) == md
    for row in report.layers:
        line = rf"^\| {row.name} \| {row.kind} \| {row.params} \| {row.nonzeros} \|"
        assert re.search(line, md, re.M), row.name
    total = 1 - report.nonzeros / report.params
    assert re.search(rf"^\| \*\*total[^|]*\*\* \| \| {report.params} \| {report.nonzeros} \| {total:.1%} \|",
                     md, re.M), md
    assert md.index("**total") > max(md.index(f"| {row.name} |") for row in report.layers)
    assert "| accuracy |" in md and "one-shot" in md


# -- errors -----------------------------------------------------------------------------------------


def test_missing_train_data_for_fine_tuning(mlp):
    r = {"stages": [{"prune": {"sparsity": 0.5, "fine_tune": None}}, {"prune": {"sparsity": 0.6}}]}
    with pytest.raises(DataError) as info:
        slimkit.compress(mlp, r, verbose=False)
    msg = str(info.value)
    assert msg.startswith("train_data:") and "stages[1]" in msg and "fine_tune: null" in msg


def test_zero_epochs_needs_no_train_data(mlp):
    result = slimkit.compress(mlp, recipe(0.5, fine_tune={"epochs": 0}), verbose=False)
    assert zeros(kernel(result.model, "fc1")) == 64
    assert result.report.stages[0].fine_tuned is False


def test_eval_data_length_mismatch(mlp, classification_data):
    x, y = classification_data
    with pytest.raises(DataError, match=r"^eval_data: x has 200 samples but y has 199"):
        slimkit.compress(mlp, recipe(0.5), eval_data=(x, y[:-1]), verbose=False)


def test_train_data_length_mismatch(mlp, classification_data):
    x, y = classification_data
    with pytest.raises(DataError, match=r"^train_data: x has 10 samples but y has 200"):
        slimkit.compress(mlp, recipe(0.5, fine_tune=FT), train_data=(x[:10], y), verbose=False)


def test_empty_x(mlp):
    empty = (np.zeros((0, 8), np.float32), np.zeros((0,), np.int64))
    with pytest.raises(DataError, match=r"^train_data: no samples"):
        slimkit.compress(mlp, recipe(0.5, fine_tune=FT), train_data=empty, verbose=False)
    with pytest.raises(DataError, match=r"^eval_data: no samples"):
        slimkit.compress(mlp, recipe(0.5), eval_data=empty, verbose=False)


def test_wrong_input_shape_from_check_input(mlp, classification_data):
    x, y = classification_data
    expected = "train_data: expected input of shape (batch, 8), got shape (200, 5)"
    with pytest.raises(DataError, match=re.escape(expected)):
        slimkit.compress(mlp, recipe(0.5, fine_tune=FT), train_data=(x[:, :5], y), verbose=False)
    expected = "eval_data: expected input of shape (batch, 8), got shape (200, 8, 1)"
    with pytest.raises(DataError, match=re.escape(expected)):
        slimkit.compress(mlp, recipe(0.5), eval_data=(x[..., None], y), verbose=False)


def test_non_numeric_x(mlp):
    x = np.array([["a"] * 8] * 4)
    with pytest.raises(DataError, match=r"^eval_data: x must be numeric"):
        slimkit.compress(mlp, recipe(0.5), eval_data=(x, np.zeros(4, np.int64)), verbose=False)


def test_unsupported_model_names_the_type():
    with pytest.raises(UnsupportedModelError, match=r"unsupported model type builtins\.dict"):
        slimkit.compress({"fc1": np.zeros((2, 2))}, recipe(0.5), verbose=False)


def test_recipe_errors_surface_from_compress(mlp):
    with pytest.raises(RecipeError, match=r"^stages\[0\]\.prune\.sparsity"):
        slimkit.compress(mlp, recipe(1.5), verbose=False)
    with pytest.raises(RecipeError) as info:
        slimkit.compress(mlp, recipe(0.5, layers={"names": ["conv*"]}), verbose=False)
    msg = str(info.value)
    assert msg.startswith("stages[0].prune.layers:")
    for name, kind in [("fc1", "dense"), ("bn", "batchnorm"), ("fc2", "dense"), ("scale", "other"),
                       ("logits", "dense")]:
        assert f"{name} ({kind})" in msg


def test_naming_the_other_kind_layer_is_a_recipe_error(mlp):
    expected = r"^stages\[0\]\.prune\.layers: layer 'scale' \(FakeScale, kind other\)"
    with pytest.raises(RecipeError, match=expected):
        slimkit.compress(mlp, recipe(0.5, layers={"names": ["fc1", "scale"]}), verbose=False)


# -- export -----------------------------------------------------------------------------------------


def test_compress_works_without_export_and_export_fails_cleanly(mlp, classification_data, tmp_path):
    x, y = classification_data
    result = slimkit.compress(mlp, recipe(0.5), calib_data=x[:5], eval_data=(x, y), verbose=False)
    np.testing.assert_array_equal(result.sample, x[:5])
    with pytest.raises(ExportError, match="fake adapter has no ONNX exporter"):
        result.export_onnx(tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []  # no file, not even the temporary one
    assert result.report.files == []


def test_sample_defaults_to_train_then_eval_inputs(mlp, classification_data):
    x, y = classification_data
    r = slimkit.compress(mlp, recipe(0.5, fine_tune=FT), train_data=(x, y), eval_data=(x[::-1], y),
                         verbose=False)
    np.testing.assert_array_equal(r.sample, x[:16])
    r = slimkit.compress(mlp, recipe(0.5), eval_data=(x[::-1], y), verbose=False)
    np.testing.assert_array_equal(r.sample, x[::-1][:16])
    r = slimkit.compress(mlp, recipe(0.5), verbose=False)
    assert r.sample is None
    with pytest.raises(DataError, match=r"^sample: no numpy data"):
        r.export_onnx("unused.onnx")


def test_export_checks_the_sample_and_the_directory(mlp, tmp_path):
    with pytest.raises(DataError, match=r"^sample: expected input of shape \(batch, 8\)"):
        slimkit.export_onnx(mlp, tmp_path / "m.onnx", np.zeros((2, 3), np.float32))
    with pytest.raises(ExportError, match="does not exist"):
        slimkit.export_onnx(mlp, tmp_path / "missing" / "m.onnx", np.zeros((2, 8), np.float32))


def test_unregistered_fake_is_unsupported(fake_registered, mlp):
    from slimkit.registry import unregister_adapter

    unregister_adapter(fake_registered)
    with pytest.raises(UnsupportedModelError, match=r"fake_adapter\.FakeModel"):
        slimkit.compress(mlp, recipe(0.5), verbose=False)
