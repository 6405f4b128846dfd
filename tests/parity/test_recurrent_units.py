"""Channel pruning of recurrent layers removes hidden units: row j of every gate block of both matrices
and the biases, and recurrent column j. LSTM and GRU twins (tests/sequence_twins.py) choose the same
units, the masked and the rebuilt model agree, and the rebuilt twins compute the same function."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.pruning.structured import ChannelPruner
from slimkit.recipe import Recipe
from slimkit.registry import adapter_for, adapter_for_copy
from frameworks import pair_ids, pairs
from sequence_twins import UNITS, build, tokens

RECIPE = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5, "criterion": "l2"}}]}
CASES = [(arch, pair) for arch in ("lstm", "gru") for pair in pairs("sequence")]
IDS = [f"{arch}-{pid}" for arch in ("lstm", "gru") for pid in pair_ids("sequence")]


def _prune(model):
    work = adapter_for_copy(model)
    pruner = ChannelPruner(work, work.layers(), Recipe.load(RECIPE).stages[0], "stages[0].prune.layers", tokens(),
                           None, seed=0)
    choices = pruner.choose(0.5)
    pruner._mask(choices, [])
    return [c.keep for c in choices], work.predict(tokens()), pruner.shrunk()


@pytest.mark.parametrize("arch, pair", CASES, ids=IDS)
def test_twins_remove_the_same_units_and_the_rebuilt_layers_compute_the_masked_model(arch, pair):
    x = tokens()
    outcomes = {fw: _prune(build(arch, fw, seed=4)) for fw in pair}
    (keep_a, masked_a, rebuilt_a), (keep_b, masked_b, rebuilt_b) = outcomes.values()
    assert len(keep_a) == 1 and len(keep_a[0]) == UNITS // 2
    np.testing.assert_array_equal(keep_a[0], keep_b[0])
    for masked, rebuilt in ((masked_a, rebuilt_a), (masked_b, rebuilt_b)):
        np.testing.assert_allclose(rebuilt.predict(x), masked, atol=1e-5)
        rnn = next(layer for layer in rebuilt.layers() if layer.kind == "recurrent")
        assert max(rnn.shapes["recurrent_kernel"]) == (4 if arch == "lstm" else 3) * UNITS // 2
    np.testing.assert_allclose(rebuilt_a.predict(x), rebuilt_b.predict(x), atol=1e-4)
    original = adapter_for(build(arch, pair[0], seed=4)).predict(x)
    assert np.abs(masked_a - original).max() > 1e-3  # the units mattered
