"""The tuner on the digits CNN, each framework: tolerance and budget goals, the returned recipe, errors.

Trials are judged on their exported ONNX files in onnxruntime, on the 450-image digits test split.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import digits
import slimkit
from frameworks import building
from slimkit.tune.trial import onnx_metric

TRIALS = 6


@pytest.fixture(scope="module", params=building("examples"))
def trained(request):
    framework = request.param
    (xt, yt), (xe, ye) = digits.load(framework)
    model = digits.build(framework, seed=0)
    digits.train(framework, model, (xt, yt), epochs=8)
    return framework, model, (xt, yt), (xe, ye)


def prune_quant(tolerance: float, trials: int = TRIALS) -> dict:
    """Per-layer sparsity (NetAdapt-style greedy steps from the sensitivity curves) over int8 layers."""
    return {"version": 1, "seed": 0, "fine_tune": None,
            "stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "layer"}},
                       {"quantize": {"method": "static", "activations": {"samples": 128}}}],
            "analyze": {"prune": {"ratios": [0.5, 0.9]}, "quantize": None, "samples": 64},
            "tune": {"strategy": "sensitivity", "tolerance": {"relative": tolerance}, "max_trials": trials,
                     "space": {"sparsity": [0.0, 0.25, 0.5, 0.75, 0.9], "float_layers": False}}}


def quant_budget(budget: dict, trials: int = 5) -> dict:
    return {"version": 1, "seed": 0, "fine_tune": None,
            "stages": [{"quantize": {"method": "static", "activations": {"samples": 128}}}],
            "tune": {"strategy": "annealing", "budget": budget, "max_trials": trials,
                     "space": {"calibration": ["minmax", "percentile"]}}}


@pytest.fixture(scope="module")
def tolerances(trained):
    framework, model, train, test = trained
    out = {}
    for tol in (0.02, 0.002):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", slimkit.SlimkitWarning)
            out[tol] = slimkit.compress(model, prune_quant(tol), train_data=train, eval_data=test, verbose=False)
    return out


def test_looser_tolerance_gives_a_more_compressed_model(trained, tolerances):
    loose, tight = tolerances[0.02].report.tuning, tolerances[0.002].report.tuning
    print(f"\n[{trained[0]}] baseline {loose.baseline:.4f}; 2%: {loose.best_trial.metric:.4f} at "
          f"{loose.best_trial.compression:.2f}x ({len(loose.trials)} trials); 0.2%: {tight.best_trial.metric:.4f} at "
          f"{tight.best_trial.compression:.2f}x ({len(tight.trials)} trials)")
    base = loose.baseline
    for log, tol in ((loose, 0.02), (tight, 0.002)):
        best = log.best_trial
        assert log.met and best.feasible and best.metric >= base * (1 - tol) - 1e-12, (tol, best)
        assert 1 <= len(log.trials) <= TRIALS
    assert loose.best_trial.compression > tight.best_trial.compression, (loose.to_markdown(), tight.to_markdown())


def test_returned_recipe_reproduces_the_tuned_metric(trained, tolerances, tmp_path):
    framework, model, train, test = trained
    result = tolerances[0.02]
    assert result.recipe.tune is None
    again = slimkit.compress(model, result.recipe, train_data=train, verbose=False)
    again.export_onnx(tmp_path / "again.onnx")
    metric = onnx_metric(str(tmp_path / "again.onnx"), test, "accuracy")
    assert abs(metric - result.report.tuning.best_trial.metric) <= 0.005
    assert result.report.metrics_after["accuracy"] == result.report.tuning.best_trial.metric
    # the returned model is the tuned one
    result.export_onnx(tmp_path / "tuned.onnx")
    assert onnx_metric(str(tmp_path / "tuned.onnx"), test, "accuracy") == pytest.approx(metric, abs=0.005)


def test_size_budget_returns_the_best_metric_that_meets_it(trained):
    framework, model, train, test = trained
    limit = 0.06  # MB: the float file is ~0.14 MB, every layer int8 ~0.05 MB
    result = slimkit.compress(model, quant_budget({"size_mb": limit}), train_data=train, eval_data=test,
                              verbose=False)
    log = result.report.tuning
    feasible = [t for t in log.trials if t.feasible]
    assert log.met and feasible and all(t.size_mb <= limit for t in feasible)
    assert log.best_trial.metric == max(t.metric for t in feasible)
    assert log.best_trial.size_mb <= limit
    # a quantize-only recipe zeroes nothing: the trials' files are not gzipped (see slimkit.checks)
    assert all(t.gzip_mb is None for t in log.trials) and log.baseline_measures["gzip_mb"] is None
    # the returned model's fidelity was checked on 2 inputs in its trial; its export verifies in full
    assert any("on 2 calibration inputs" in n for n in result.report.notes), result.report.notes


def test_impossible_budget_returns_the_closest_trial(trained):
    framework, model, train, test = trained
    with pytest.warns(slimkit.SlimkitWarning, match=r"no configuration met size_mb <= 0\.001 in 3 trials; the "
                                                     r"closest was trial \d+"):
        result = slimkit.compress(model, quant_budget({"size_mb": 0.001}, trials=3), train_data=train,
                                  eval_data=test, verbose=False)
    log = result.report.tuning
    assert not log.met and log.message.startswith("no configuration met")
    nearest = min(t.violations["size_mb"] for t in log.trials)
    closest = [t for t in log.trials if t.violations["size_mb"] == nearest]
    # the smallest violation; among equals the best metric
    assert log.best_trial in closest and log.best_trial.metric == max(t.metric for t in closest)
    assert result.model is not None


def test_eval_fn_that_returns_no_number_is_named(trained):
    framework, model, train, test = trained
    with pytest.raises(slimkit.DataError, match="eval_fn must return a finite real number"):
        slimkit.compress(model, quant_budget({"size_mb": 1.0}), train_data=train, eval_fn=lambda m: "high",
                         verbose=False)
    with pytest.raises(slimkit.DataError, match="tune: needs eval_data"):
        slimkit.compress(model, quant_budget({"size_mb": 1.0}), train_data=train, verbose=False)


def test_unreachable_storage_is_named(trained, tmp_path):
    framework, model, train, test = trained
    recipe = quant_budget({"size_mb": 1.0})
    recipe["tune"].update(strategy="optuna", storage=f"sqlite:///{tmp_path}/missing/dir/study.db")
    with pytest.raises(slimkit.RecipeError, match=r"tune.storage: cannot open the Optuna storage 'sqlite:///"):
        slimkit.compress(model, recipe, train_data=train, eval_data=test, verbose=False)


def test_macs_budget_with_channel_pruning(trained):
    framework, model, train, test = trained
    full = 337_536  # MACs per digit of the float CNN (conv1 9k, conv2 295k, fc1 33k, logits 0.6k), on both
    recipe = {"version": 1, "seed": 0, "fine_tune": None,
              "stages": [{"prune": {"method": "channel", "sparsity": 0.25, "layers": {"exclude": ["logits"]}}}],
              "analyze": {"prune": {"method": "channel", "ratios": [0.25, 0.5, 0.75]}, "quantize": None,
                          "samples": 64},
              "tune": {"strategy": "sensitivity", "budget": {"macs": 0.6 * full}, "max_trials": 6,
                       "space": {"sparsity": [0.0, 0.25, 0.5, 0.75]}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", slimkit.SlimkitWarning)
        result = slimkit.compress(model, recipe, train_data=train, eval_data=test, verbose=False)
    log = result.report.tuning
    assert log.baseline_measures["macs"] == full
    feasible = [t for t in log.trials if t.feasible]
    assert log.met and all(t.macs <= 0.6 * full for t in feasible)
    assert log.best_trial.metric == max(t.metric for t in feasible)
    assert log.best_trial.macs < full and sum(p.params for p in result.report.layers) < \
        sum(int(w.size) for info in slimkit.registry.adapter_for(model).layers()
            for w in slimkit.registry.adapter_for(model).get_weights(info.name).values())


def test_trials_fine_tune_briefly_and_the_best_is_rebuilt_in_full(trained):
    framework, model, (xt, yt), test = trained
    train = (xt[:256], yt[:256])  # 8 batches of 32 per epoch
    recipe = {"version": 1, "seed": 0,
              "fine_tune": {"epochs": 2, "batch_size": 32, "learning_rate": 1e-3},
              "stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "layer"}}],
              "tune": {"strategy": "optuna", "tolerance": {"relative": 0.5}, "max_trials": 2,
                       "space": {"sparsity": [0.0, 0.5]}, "trial_fine_tune": {"steps": 3}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", slimkit.SlimkitWarning)
        result = slimkit.compress(model, recipe, train_data=train, eval_data=test, verbose=False)
    log = result.report.tuning
    # trial 0: the recipe as written, fine-tuned 3 steps; trial 1: the float model (no prune stage, no steps)
    assert [t.settings == {} for t in log.trials] == [True, False] and log.best == 0
    assert result.report.stages[0].steps == 16  # the best, rebuilt with the recipe's 2 epochs
    assert log.best_trial.steps == 16 and log.best_trial.feasible
    assert result.report.layer("conv2").sparsity == pytest.approx(0.5, abs=1e-3)
    # zeroed kernel entries: the trials' gzip sizes say what they save
    assert all(t.gzip_mb is not None and 0 < t.gzip_mb < t.size_mb for t in log.trials)


def test_report_carries_the_curves_the_strategy_read_and_draws_them(tolerances, tmp_path):
    import json

    from slimkit.report_html import write_html

    report = tolerances[0.02].report
    sens = report.sensitivity
    assert isinstance(sens, slimkit.Sensitivity)  # the sensitivity strategy asked for the analysis
    ratios = prune_quant(0.02)["analyze"]["prune"]["ratios"]
    assert {r.setting for r in sens.rows if r.action == "prune"} == set(ratios)
    data = json.loads((report.to_json(tmp_path / "report.json")).read_text())
    assert data["schema"] == 1 and len(data["sensitivity"]["rows"]) == len(sens.rows)
    assert len(data["tuning"]["trials"]) == len(report.tuning.trials)
    page = write_html(report, tmp_path / "report.html").read_text()
    for key in ("sparsity", "quant", "outcome", "tuning", "sensitivity"):
        assert f'<figure id="plot-{key}"' in page, key
