"""The ``tune:`` section, the goal's arithmetic and the search space's recipes, without a framework."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from slimkit import Recipe, RecipeError
from slimkit.tune.log import TrialRecord, TuningReport
from slimkit.tune.objective import Goal
from slimkit.tune.recipe import Budget, Tolerance, Tune
from slimkit.tune.space import FLOAT, SPARSITY, build_space, candidate_recipe, escape

from fake_adapter import FakeAdapter, make_mlp


def recipe(tune: dict, stages: list | None = None) -> dict:
    return {"version": 1, "fine_tune": None,
            "stages": stages or [{"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "layer"}},
                                 {"quantize": {"method": "static"}}],
            "tune": tune}


def error(raw: dict) -> str:
    with pytest.raises(RecipeError) as info:
        Recipe.load(raw)
    return str(info.value)


def test_tune_parses_with_defaults_and_strategy_options():
    r = Recipe.load(recipe({"tolerance": {"relative": 0.01}, "strategy": "annealing", "cooling": 0.5}))
    assert r.tune.tolerance == Tolerance(relative=0.01) and r.tune.max_trials == 20 and r.tune.goal == "compression"
    assert r.tune.options.cooling == 0.5 and r.tune.space.sparsity == (0.0, 0.25, 0.5, 0.75)
    b = Recipe.load(recipe({"budget": {"size_mb": 2, "macs": 1e6}, "strategy": "optuna"})).tune
    assert b.budget == Budget(size_mb=2.0, macs=1e6) and b.goal == "metric" and b.options.sampler == "tpe"


@pytest.mark.parametrize("tune, message", [
    ({"tolerance": {"relative": -0.01}}, "tune.tolerance.relative: -0.01 is negative"),
    ({"tolerance": {"absolute": -1}}, "tune.tolerance.absolute: -1 is negative"),
    ({"tolerance": {"relative": 0.1, "absolute": 0.1}}, "tune.tolerance: give exactly one of relative"),
    ({"budget": {"latency_s": 1}}, "tune.budget: unknown unit 'latency_s'; a budget is given in latency_ms, size_mb, macs"),
    ({"budget": {"size_mb": 0}}, "tune.budget.size_mb: 0 is outside (0"),
    ({"max_trials": 5}, "tune: give a tolerance"),
    ({"tolerance": {"relative": 0.01}, "strategy": "grid"}, "tune.strategy: 'grid' is not one of"),
    ({"tolerance": {"relative": 0.01}, "cooling": 0.5}, "tune: unknown key 'cooling'"),
    ({"tolerance": {"relative": 0.01}, "storage": "sqlite:///x.db"}, "tune.storage: strategy basic keeps no study"),
    ({"tolerance": {"relative": 0.01}, "space": {"sparsity": [1.0]}}, "tune.space.sparsity[0]: 1.0 is outside"),
    ({"tolerance": {"relative": 0.01}, "space": {"bits": [4]}}, "tune.space.bits: bit widths below 8"),
    ({"tolerance": {"relative": 0.01}, "space": {"calibration": ["median"]}}, "tune.space.calibration[0]: 'median'"),
    ({"tolerance": {"relative": 0.01}, "trial_fine_tune": {}}, "tune.trial_fine_tune.steps: required"),
    ({"tolerance": {"relative": 0.01}, "metric": "f1"}, "tune.metric: 'f1' is not one of eval_fn, accuracy, mse"),
    ({"tolerance": {"relative": 0.01}, "strategy": "optuna", "sampler": "cmaes"}, "tune.sampler: 'cmaes'"),
])
def test_bad_tune_settings_name_the_field(tune, message):
    assert message in error(recipe(tune))


def test_strategies_refuse_recipes_they_cannot_tune():
    quant_only = [{"quantize": {"method": "static"}}]
    assert "strategy: sensitivity sets per-layer pruning ratios" in error(
        recipe({"tolerance": {"relative": 0.01}, "strategy": "sensitivity"}, quant_only))
    prune_only = [{"prune": {"method": "magnitude", "sparsity": 0.5}}]
    assert "strategy: basic tunes a quantize stage" in error(recipe({"tolerance": {"relative": 0.01}}, prune_only))


def goal(tolerance=None, budget=None, baseline=0.9, name="accuracy") -> Goal:
    return Goal(Tune(tolerance=tolerance, budget=budget), name, baseline, higher_is_better=name != "mse")


def test_goal_floor_violations_and_rank():
    g = goal(Tolerance(relative=0.1), Budget(size_mb=1.0))
    assert g.floor() == pytest.approx(0.81)
    assert g.violations(0.85, {"size_mb": 0.5}) == {}
    v = g.violations(0.72, {"size_mb": 1.5})
    assert v["tolerance"] == pytest.approx(0.1) and v["size_mb"] == pytest.approx(0.5)
    assert goal(Tolerance(absolute=0.05), baseline=0.2, name="mse").floor() == pytest.approx(0.25)
    ok_small = TrialRecord(0, {}, metric=0.82, compression=4.0, feasible=True)
    ok_big = TrialRecord(1, {}, metric=0.85, compression=2.0, feasible=True)
    near = TrialRecord(2, {}, metric=0.80, compression=8.0, violations={"tolerance": 0.01})
    far = TrialRecord(3, {}, metric=0.10, compression=8.0, violations={"tolerance": 0.8})
    failed = TrialRecord(4, {}, error="ExportError: x")
    records = [ok_small, ok_big, near, far, failed]
    assert max(records, key=g.rank) is ok_small  # tolerance: the most compressed that meets it
    assert max([near, far, failed], key=g.rank) is near  # none met: the closest
    by_metric = goal(budget=Budget(size_mb=1.0))
    assert max(records, key=by_metric.rank) is ok_big  # budget only: the best metric that meets it


def test_space_and_candidate_recipe_round_trip():
    adapter = FakeAdapter(make_mlp())
    r = Recipe.load(recipe({"tolerance": {"relative": 0.01}, "space": {"calibration": ["percentile"]}}))
    space = build_space(r, r.tune, adapter.layers())
    names = [d.name for d in space.dims]
    assert names == ["sparsity:fc1", "sparsity:fc2", "sparsity:logits", "float:fc1", "float:fc2", "float:logits",
                     "calibration"]
    assert space.dim("sparsity:fc1").choices == (0.0, 0.25, 0.5, 0.75)
    base = Recipe.load(candidate_recipe(r, space, space.base())).stages
    assert base[0] == r.stages[0]  # the recipe as written, but for the static fallback the tuner takes over
    assert base[1] == dataclasses.replace(r.stages[1], options=dataclasses.replace(r.stages[1].options,
                                                                                   max_float_share=0.0))
    chosen = space.make({SPARSITY + "fc1": 0.75, SPARSITY + "fc2": 0.0, FLOAT + "logits": True,
                         "calibration": "percentile"})
    raw = candidate_recipe(r, space, chosen)
    assert "tune" not in raw and "tune" in r.raw  # the user's mapping is not edited
    plain = Recipe.load(yaml.safe_load(yaml.safe_dump(raw)))
    prune, quant = plain.stages
    assert prune.layers.exclude == ("fc2",) and quant.layers.exclude == ("logits",)
    assert quant.activations.calibration == "percentile" and quant.options.max_float_share == 0.0
    every_float = space.make({FLOAT + n: True for n in ("fc1", "fc2", "logits")})
    assert [s.name for s in Recipe.load(candidate_recipe(r, space, every_float)).stages] == ["prune:magnitude"]


def test_escape_matches_only_the_name():
    import fnmatch

    for name in ("a[0]", "b*", "c?d", "plain"):
        assert fnmatch.fnmatchcase(name, escape(name))
    assert not fnmatch.fnmatchcase("bX", escape("b*"))


def test_trial_log_round_trips_to_json(tmp_path):
    log = TuningReport("basic", "accuracy >= 0.9", "accuracy", 0.95)
    log.trials.append(TrialRecord(0, {"float:fc1": True}, metric=0.94, compression=3.5, size_mb=0.1,
                                  violations={"tolerance": float("inf")}))
    path = log.to_json(tmp_path / "trials.json")
    import json

    back = json.loads(path.read_text())
    assert back["trials"][0]["settings"] == {"float:fc1": True} and back["trials"][0]["violations"] == {"tolerance": None}
    assert TrialRecord.from_dict(back["trials"][0]).violations == {"tolerance": float("inf")}
    assert "| 0 | 0.94 | 3.50x |" in log.to_markdown()
