"""Lottery ticket pruning on every framework with twin builders: a conv/batch-norm/dense twin trained on
digits through ``compress``; each round starts from the rewound survivors, masks hold, the target is
reached, and twins choose identical masks in every round.

The stage's pruner is replaced by a subclass that reads the model through its adapter when training
begins and after every step (after the pruner acted), so what the tests compare is what the framework
holds, read independently of the pruner's own bookkeeping.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
import slimkit.pruning.lottery as lottery_module
from slimkit.pruning.lottery import LotteryPruner, round_sparsity, round_starts
from slimkit.pruning.masks import to_canonical
from frameworks import BY_NAME, building, pair_ids, pairs
from twins import twin_pair

ROUNDS, SPARSITY, REWIND = 2, 0.7, 0.25
N, BATCH, EPOCHS = 384, 64, 4  # 6 steps an epoch, 24 steps: rounds prune after steps 8 and 16
TOTAL = EPOCHS * N // BATCH
KERNELS = ("conv1", "conv2", "logits")
# Adam at 1e-3: SGD at 0.05 (momentum 0.9) trains this 70%-sparse net chaotically, and the twins' 1e-7
# float differences then grow past 1e-4 within a few steps
RECIPE = {"seed": 0, "fine_tune": {"epochs": EPOCHS, "batch_size": BATCH, "optimizer": "adam", "learning_rate": 1e-3},
          "stages": [{"prune": {"method": "lottery", "sparsity": SPARSITY, "scope": "global", "rounds": ROUNDS,
                                "rewind": REWIND}}]}


class RecordingPruner(LotteryPruner):
    """Every layer's weights (kernels in canonical order) at begin and after each step."""

    last: "RecordingPruner | None" = None

    def begin(self, total_steps: int) -> None:
        super().begin(total_steps)
        RecordingPruner.last = self
        self.seen = [self._read()]

    def step_end(self, step: int) -> None:
        super().step_end(step)
        self.seen.append(self._read())

    def _read(self) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for info in self.adapter.layers():
            weights = self.adapter.get_weights(info.name)
            out[info.name] = {k: to_canonical(v, info.kernel_perm) if k == "kernel" else v for k, v in weights.items()}
        return out


_RUNS: dict[str, tuple] = {}


def run(framework: str):
    """(compress result, recording pruner) of the lottery recipe on the bn_cnn twin, once per framework."""
    if framework not in _RUNS:
        from sklearn.datasets import load_digits

        data = load_digits()
        x = (data.data[:N] / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
        if not BY_NAME[framework].channels_last:
            x = x.transpose(0, 3, 1, 2).copy()
        model = twin_pair("bn_cnn", seed=1, he=True, frameworks=(framework,))[framework]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(lottery_module, "LotteryPruner", RecordingPruner)
            result = slimkit.compress(model, RECIPE, train_data=(x, data.target[:N].astype(np.int64)), verbose=False)
        _RUNS[framework] = (result, RecordingPruner.last)
    return _RUNS[framework]


@pytest.mark.parametrize("framework", building("twins"))
def test_rounds_start_from_the_rewound_survivors_and_reach_the_target(framework):
    result, pruner = run(framework)
    starts = round_starts(TOTAL, ROUNDS)
    k = int(np.floor(REWIND * starts[1]))
    assert len(pruner.seen) == TOTAL + 1 and pruner.rewind_step == k == 2
    kept = pruner.seen[k]
    for r in range(1, ROUNDS + 1):
        start = pruner.seen[starts[r]]
        pruned = {n: start[n]["kernel"] == 0 for n in KERNELS}
        total = sum(p.size for p in pruned.values())
        assert sum(int(p.sum()) for p in pruned.values()) == round(round_sparsity(SPARSITY, r, ROUNDS) * total)
        for name, weights in start.items():
            for key, value in weights.items():  # batch-norm statistics included
                expected = kept[name][key] * ~pruned[name] if key == "kernel" and name in KERNELS else kept[name][key]
                np.testing.assert_array_equal(value, expected, err_msg=f"{framework} round {r} {name}.{key}")
        trained = pruner.seen[starts[r] - 1]
        assert max(float(np.abs(trained[n]["kernel"] - kept[n]["kernel"]).max()) for n in KERNELS) > 1e-3
        for t in range(starts[r], starts[r + 1] + 1):
            for name in KERNELS:
                assert np.all(pruner.seen[t][name]["kernel"][pruned[name]] == 0), (framework, r, t, name)
    rows = result.report.rounds
    assert [(row.round, row.start_step, row.steps, row.rewound_to) for row in rows] == [
        (0, 0, 8, None), (1, 8, 8, 2), (2, 16, 8, 2)]
    layers = [result.report.layer(n) for n in KERNELS]
    zeros = sum(row.kernel_params - row.kernel_nonzeros for row in layers)
    assert zeros == round(SPARSITY * sum(row.kernel_params for row in layers))
    assert result.report.stages[0].achieved == pytest.approx(SPARSITY, abs=1e-3)


@pytest.mark.parametrize("pair", pairs("twins"), ids=pair_ids("twins"))
def test_twins_choose_identical_masks_in_every_round(pair):
    a, b = pair
    seen = {fw: run(fw)[1].seen for fw in pair}
    for r, step in enumerate(round_starts(TOTAL, ROUNDS)[1:-1], start=1):
        for name in KERNELS:
            np.testing.assert_array_equal(seen[a][step][name]["kernel"] == 0, seen[b][step][name]["kernel"] == 0,
                                          err_msg=f"round {r} {name}")
    for name, weights in seen[a][TOTAL].items():
        for key, value in weights.items():
            scale = float(np.abs(value).max())
            diff = float(np.abs(value - seen[b][TOTAL][name][key]).max())
            assert diff <= 1e-4 * scale, f"{name}.{key}: twins differ by {diff:.3g} (largest value {scale:.3g})"
