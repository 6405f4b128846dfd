"""Lottery ticket pruning (iterative magnitude pruning with weight rewinding) on the numpy fake: the
round schedule, what each rewind leaves in the model, masks through training, report rows, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

import slimkit
from slimkit import RecipeError, SlimkitWarning
from slimkit.adapter import HookChain, TrainHooks
from slimkit.pruning.lottery import MIN_ROUND_STEPS, LotteryPruner, round_sparsity, round_starts
from slimkit.pruning.magnitude import SUPPORTED_KINDS
from slimkit.recipe import Recipe
from slimkit.report import Report, RoundRow
from slimkit.selection import select_layers

from fake_adapter import FakeAdapter, make_mlp

DENSE = ("fc1", "fc2", "logits")
FT = {"epochs": 3, "batch_size": 20, "optimizer": "sgd", "learning_rate": 0.05}  # 10 steps an epoch: 30


def lottery(sparsity=0.8, rounds=3, rewind=0.0, scope="layer", fine_tune=FT, **extra):
    return {"seed": 0, "stages": [{"prune": {"method": "lottery", "sparsity": sparsity, "rounds": rounds,
                                             "rewind": rewind, "scope": scope, "fine_tune": fine_tune, **extra}}]}


def test_round_sparsity_keeps_the_same_fraction_each_round():
    s, n = 0.8, 4
    targets = [round_sparsity(s, r, n) for r in range(n + 1)]
    assert targets[0] == 0.0 and targets[-1] == s  # exactly the target at the last round
    kept = [(1 - targets[r]) / (1 - targets[r - 1]) for r in range(1, n + 1)]
    np.testing.assert_allclose(kept, (1 - s) ** (1 / n), rtol=1e-12)
    assert round_sparsity(0.8, 1, 3) == pytest.approx(1 - 0.2 ** (1 / 3))
    assert round_sparsity(0.5, 1, 1) == 0.5


@pytest.mark.parametrize("total, rounds", [(30, 3), (31, 2), (7, 1), (100, 9)])
def test_round_starts_split_the_steps_into_rounds_plus_one_parts(total, rounds):
    starts = round_starts(total, rounds)
    assert len(starts) == rounds + 2 and starts[0] == 0 and starts[-1] == total
    lengths = np.diff(starts)
    assert lengths.min() >= total // (rounds + 1) and lengths.max() - lengths.min() <= 1


class WeightLog(TrainHooks):
    """Every layer's weights when training begins and after each step, read after the pruner ran."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.at: list[dict[str, dict[str, np.ndarray]]] = []  # at[t]: after step t (t = 0: before any)

    def _read(self):
        return {info.name: self.adapter.get_weights(info.name) for info in self.adapter.layers()}

    def begin(self, total_steps):
        self.at = [self._read()]

    def step_end(self, step):
        assert step == len(self.at)
        self.at.append(self._read())


def run_pruner(classification_data, rounds, rewind, scope, sparsity=0.8):
    adapter = FakeAdapter(make_mlp())
    stage = Recipe.load(lottery(sparsity, rounds, rewind, scope)).stages[0]
    layers = select_layers(adapter.layers(), stage.layers, SUPPORTED_KINDS, "stages[0].prune.layers")
    pruner = LotteryPruner(adapter, layers, stage, "stages[0].prune", None)
    log = WeightLog(adapter)
    adapter.fit(classification_data, stage.fine_tune, HookChain(pruner, log))
    return adapter, pruner, log


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("rewind", [0.0, 0.3])
def test_each_round_starts_from_the_rewound_survivors_and_masks_hold(classification_data, scope, rewind):
    rounds, total = 3, 30
    adapter, pruner, log = run_pruner(classification_data, rounds, rewind, scope)
    starts = round_starts(total, rounds)  # 0 7 15 22 30
    k = int(np.floor(rewind * starts[1]))  # 0 or 2
    assert pruner.rewind_step == k and len(log.at) == total + 1
    kept = log.at[k]  # the model after step k, read independently of the pruner
    for name, weights in kept.items():
        for key, value in weights.items():
            np.testing.assert_array_equal(pruner.snapshot[name][key], value, err_msg=f"{name}.{key}")
    previous = {n: np.zeros(kept[n]["kernel"].shape, bool) for n in DENSE}
    for r in range(1, rounds + 1):
        start = log.at[starts[r]]  # the model right after round r's pruning and rewind
        before = log.at[starts[r] - 1]  # a step earlier: trained, not yet pruned
        target = round_sparsity(0.8, r, rounds)
        pruned = {n: start[n]["kernel"] == 0 for n in DENSE}
        for name in DENSE:
            # survivors equal their kept values exactly; the pruned ones are zero
            mask = ~pruned[name]
            np.testing.assert_array_equal(start[name]["kernel"], kept[name]["kernel"] * mask, err_msg=name)
            assert np.all(pruned[name][previous[name]]), f"round {r} {name}: an earlier pruned weight came back"
            if scope == "layer":
                assert int(pruned[name].sum()) == round(target * pruned[name].size), (r, name)
        if scope == "global":
            size = sum(p.size for p in pruned.values())
            assert sum(int(p.sum()) for p in pruned.values()) == round(target * size), r
        # every other weight (biases, batch norm, the unselected scale layer) is rewound too
        for name, weights in start.items():
            for key, value in weights.items():
                if key != "kernel" or name not in DENSE:
                    np.testing.assert_array_equal(value, kept[name][key], err_msg=f"round {r} {name}.{key}")
        # the pruning ranked the trained weights (round r's training moved them off the kept ones)
        assert max(np.abs(before[n]["kernel"] - kept[n]["kernel"]).max() for n in DENSE) > 1e-3
        # masks hold through the round's training, up to the next pruning
        for t in range(starts[r], starts[r + 1]):
            for name in DENSE:
                assert np.all(log.at[t][name]["kernel"][pruned[name]] == 0), (r, t, name)
        previous = pruned
    final = {n: adapter.get_weights(n)["kernel"] for n in DENSE}
    assert sum(int((v == 0).sum()) for v in final.values()) == pytest.approx(
        0.8 * sum(v.size for v in final.values()), abs=len(DENSE) * 0.5)
    assert pruner.current == 0.8


def test_round_rows_describe_each_round(classification_data):
    _, pruner, log = run_pruner(classification_data, 3, 0.3, "global")
    report = Report("fake")
    pruner.add_to_report(report)
    rows = report.rounds
    assert [r.round for r in rows] == [0, 1, 2, 3]
    assert rows[0] == RoundRow("stages[0].prune", 0, None, None, 0, 7, None)
    assert [r.start_step for r in rows] == [0, 7, 15, 22] and [r.steps for r in rows] == [7, 8, 7, 8]
    assert sum(r.steps for r in rows) == 30
    for r in rows[1:]:
        assert r.target == pytest.approx(round_sparsity(0.8, r.round, 3)) and r.rewound_to == 2
        weights = log.at[r.start_step]
        zeros = sum(int((weights[n]["kernel"] == 0).sum()) for n in DENSE)
        assert r.achieved == pytest.approx(zeros / sum(weights[n]["kernel"].size for n in DENSE))
        assert abs(r.achieved - r.target) < 0.5 / 368 + 1e-12  # 368 kernel weights, rounded to a count


def test_report_shows_rounds_in_markdown_and_dict(fake_registered, classification_data):
    result = slimkit.compress(make_mlp(), lottery(0.75, rounds=2, rewind=0.2), train_data=classification_data,
                              verbose=False)
    report = result.report
    assert [r.round for r in report.rounds] == [0, 1, 2]
    assert report.stages[0].name == "prune:lottery" and report.stages[0].steps == 30
    for name in DENSE:
        k = result.model.layer(name).weights["kernel"]
        assert int((k == 0).sum()) == round(0.75 * k.size), name
    data = json.loads(json.dumps(report.to_dict()))
    assert data["rounds"][1] == {"stage": "stages[0].prune", "round": 1, "target": pytest.approx(0.5),
                                 "achieved": pytest.approx(report.rounds[1].achieved), "start_step": 10,
                                 "steps": 10, "rewound_to": 2}
    lines = report.to_markdown().splitlines()
    assert "| lottery round | stage | target | achieved | from step | steps | rewound to step |" in lines
    assert "| 0 (dense) | stages[0].prune | - | - | 0 | 10 | - |" in lines
    assert f"| 2 | stages[0].prune | 75.0% | {report.rounds[2].achieved:.1%} | 20 | 10 | 2 |" in lines


def test_user_fit_fn_drives_the_rounds(fake_registered, classification_data):
    x, y = classification_data

    def my_fit(model, callback):
        callback.begin(24)
        for step in range(24):
            batch = slice(step % 8 * 25, (step % 8 + 1) * 25)
            model.train_step(x[batch], y[batch], lr=0.05)
            callback.step()

    result = slimkit.compress(make_mlp(), lottery(0.5, rounds=2, fine_tune={"epochs": 1}), fit_fn=my_fit,
                              verbose=False)
    assert [(r.start_step, r.steps) for r in result.report.rounds] == [(0, 8), (8, 8), (16, 8)]
    for name in DENSE:
        k = result.model.layer(name).weights["kernel"]
        assert int((k == 0).sum()) == round(0.5 * k.size), name


def test_stopping_early_prunes_to_the_target_at_the_end_and_warns():
    adapter = FakeAdapter(make_mlp())
    stage = Recipe.load(lottery(0.6, rounds=3)).stages[0]
    layers = [info for info in adapter.layers() if info.kind == "dense"]
    pruner = LotteryPruner(adapter, layers, stage, "stages[0].prune", None)
    pruner.begin(40)  # rounds prune after steps 10, 20, 30
    for step in range(1, 16):
        pruner.step_end(step)
    trained = adapter.get_weights("fc2")["kernel"]
    pruner.end()
    assert pruner.current == 0.6
    k = adapter.get_weights("fc2")["kernel"]
    assert int((k == 0).sum()) == round(0.6 * k.size)
    np.testing.assert_array_equal(k[k != 0], trained[k != 0])  # kept as trained: nothing trains after
    report = Report("fake")
    with pytest.warns(SlimkitWarning, match=r"stages\[0\]\.prune: training stopped after 1 of 3 lottery rounds"):
        pruner.add_to_report(report)
    assert [(r.round, r.start_step, r.steps, r.rewound_to) for r in report.rounds] == [
        (0, 0, 10, None), (1, 10, 10, 0), (3, 15, 0, None)]
    assert "without rewinding or retraining" in report.notes[0]


def test_too_few_steps_per_round_is_refused_before_training(fake_registered, classification_data, mlp):
    before = mlp.layer("fc1").weights["kernel"].copy()
    with pytest.raises(RecipeError, match=r"^stages\[0\]\.prune\.rounds: 4 rounds split the stage's 8 fine-tuning "
                                          r"steps into 5 parts .* of 1 step; each needs at least 2"):
        slimkit.compress(mlp, lottery(rounds=4, fine_tune={"epochs": 1, "batch_size": 25}),
                         train_data=classification_data, verbose=False)
    np.testing.assert_array_equal(mlp.layer("fc1").weights["kernel"], before)
    assert MIN_ROUND_STEPS == 2


def test_too_few_steps_announced_by_a_fit_fn_is_refused(fake_registered, mlp):
    def my_fit(model, callback):
        callback.begin(5)
        raise AssertionError("training went on after too few steps were announced")

    with pytest.raises(RecipeError, match=r"stages\[0\]\.prune\.rounds: 2 rounds split the stage's 5 fine-tuning "
                                          r"steps into 3 parts"):
        slimkit.compress(mlp, lottery(rounds=2, fine_tune={"epochs": 1}), fit_fn=my_fit, verbose=False)


@pytest.mark.parametrize("prune, top, match", [
    ({"fine_tune": None}, {}, r"stages\[0\]\.prune\.fine_tune: method lottery works while fine-tuning, "
                              r"so the stage must fine-tune \(fine_tune is null\)"),
    ({"fine_tune": {"epochs": 0}}, {}, r"stages\[0\]\.prune\.fine_tune: .*\(fine_tune\.epochs is 0\)"),
    ({}, {"fine_tune": None}, r"stages\[0\]\.prune\.fine_tune: .*must fine-tune"),
    ({"schedule": {"every": 2}}, {}, r"stages\[0\]\.prune\.schedule: has no effect here: method lottery follows "
                                     r"no schedule"),
    ({"rounds": 0}, {}, r"stages\[0\]\.prune\.rounds: 0 is outside \[1, 100\]"),
    ({"rounds": 101}, {}, r"stages\[0\]\.prune\.rounds: 101 is outside \[1, 100\]"),
    ({"rounds": 2.5}, {}, r"stages\[0\]\.prune\.rounds: expected an integer"),
    ({"rewind": 1.0}, {}, r"stages\[0\]\.prune\.rewind: 1\.0 is outside \[0, 1\)"),
    ({"rewind": -0.1}, {}, r"stages\[0\]\.prune\.rewind: -0\.1 is outside \[0, 1\)"),
    ({"criterion": "l1"}, {}, r"stages\[0\]\.prune: unknown key 'criterion'; allowed keys are .*rounds, rewind"),
])
def test_recipe_refusals_name_the_field(prune, top, match):
    raw = lottery(fine_tune={"epochs": 1})
    raw["stages"][0]["prune"].update(prune)
    if "fine_tune" in top:
        del raw["stages"][0]["prune"]["fine_tune"]
    raw.update(top)
    with pytest.raises(RecipeError, match=match):
        Recipe.load(raw)


def test_options_and_defaults():
    stage = Recipe.load({"stages": [{"prune": {"method": "lottery", "sparsity": 0.5}}]}).stages[0]
    assert (stage.options.rounds, stage.options.rewind) == (3, 0.0)
    assert stage.scope == "layer" and stage.fine_tune is not None
