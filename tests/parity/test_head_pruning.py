"""Structured pruning of a transformer encoder: whole attention heads and feed-forward units.

Keras MultiHeadAttention and PyTorch nn.TransformerEncoderLayer twins (tests/encoder_twins.py) pruned
at 50%: the masked model (heads' q/k/v rows and output columns, units' rows and columns zeroed) and the
rebuilt smaller one compute the same function, keep 2 of 4 heads and 16 of 32 units, export to ONNX,
save and load back; the twins remove the same heads and units.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.pruning.structured import ChannelPruner
from slimkit.recipe import Recipe
from slimkit.registry import adapter_for, adapter_for_copy
from encoder_twins import BUILDERS, FFN, HEADS, build, tokens
from frameworks import building, pair_ids, pairs

FRAMEWORKS = [fw for fw in building("sequence") if fw in BUILDERS]
PAIRS = [p for p in pairs("sequence") if set(p) <= set(BUILDERS)]
RECIPE = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5, "criterion": "l2"}}]}


def _pruner(model):
    work = adapter_for_copy(model)
    stage = Recipe.load(RECIPE).stages[0]
    layers = [layer for layer in work.layers() if layer.kind in ("dense", "attention")]
    return work, ChannelPruner(work, layers, stage, "stages[0].prune.layers", tokens(), None, seed=0)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_masked_and_rebuilt_encoder_agree_and_the_rebuilt_one_exports_and_reloads(framework, tmp_path):
    model, x = build(framework), tokens()
    work, pruner = _pruner(model)
    pruner._mask(pruner.choose(0.5), pruner.choose_heads(0.5))
    masked = work.predict(x)
    rebuilt = pruner.shrunk()
    np.testing.assert_allclose(rebuilt.predict(x), masked, atol=1e-4)
    assert not np.allclose(masked, adapter_for(model).predict(x), atol=1e-3)  # something was removed
    rows = {r[0]: (r[1], r[2]) for r in pruner.group_rows()}
    assert sorted(rows.values()) == [(HEADS, HEADS // 2), (FFN, FFN // 2)]
    [block] = rebuilt.attention_blocks()
    assert block.heads == HEADS // 2
    result = slimkit.compress(model, RECIPE, calib_data=x, verbose=False)
    np.testing.assert_allclose(adapter_for(result.model).predict(x), rebuilt.predict(x), atol=1e-5)
    row = result.export_onnx(tmp_path / "encoder.onnx")
    assert row.max_abs_diff <= 1e-4
    folder = result.save(tmp_path / "saved")
    loaded = slimkit.load(folder, model=build(framework, seed=9))  # the architecture, other weights
    np.testing.assert_allclose(adapter_for(loaded).predict(x), rebuilt.predict(x), atol=1e-6)
    assert adapter_for(loaded).attention_blocks()[0].heads == HEADS // 2


@pytest.mark.parametrize("pair", PAIRS, ids=[i for p, i in zip(pairs("sequence"), pair_ids("sequence"))
                                             if set(p) <= set(BUILDERS)])
def test_twins_remove_the_same_heads_and_units(pair):
    a, b = pair
    models = {fw: build(fw, seed=3) for fw in pair}
    x = tokens()
    np.testing.assert_allclose(adapter_for(models[a]).predict(x), adapter_for(models[b]).predict(x), atol=1e-4)
    chosen = {}
    for fw in pair:
        _, pruner = _pruner(models[fw])
        chosen[fw] = ([c.keep for c in pruner.choose(0.5)], pruner.choose_heads(0.5))
    for keep_a, keep_b in zip(chosen[a][0] + chosen[a][1], chosen[b][0] + chosen[b][1]):
        np.testing.assert_array_equal(keep_a, keep_b)
    results = {fw: slimkit.compress(models[fw], RECIPE, calib_data=x, verbose=False) for fw in pair}
    np.testing.assert_allclose(adapter_for(results[a].model).predict(x), adapter_for(results[b].model).predict(x),
                               atol=1e-4)
