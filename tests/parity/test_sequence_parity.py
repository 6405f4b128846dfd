"""Magnitude pruning of recurrent and attention layers: LSTM, GRU and multi-head attention twins with
identical weights get the requested share of all their weight matrices zeroed and identical masks
(compared in one reference layout; tests/sequence_twins.py says how the layouts map)."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.registry import adapter_for
from frameworks import pair_ids, pairs
from sequence_twins import ARCHS, build, matrices, reference_layout, tokens

PAIRS = pairs("sequence")
CASES = [(arch, pair) for arch in ARCHS for pair in PAIRS]
IDS = [f"{arch}-{pid}" for arch in ARCHS for pid in pair_ids("sequence")]


def _recipe(scope: str) -> dict:
    return {"fine_tune": None, "stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "scope": scope}}]}


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def twins(request):
    arch, pair = request.param
    return arch, pair, {fw: build(arch, fw, seed=1) for fw in pair}


def test_twins_compute_the_same_function(twins):
    arch, (a, b), models = twins
    x = tokens()
    np.testing.assert_allclose(adapter_for(models[a]).predict(x), adapter_for(models[b]).predict(x), atol=1e-4)


def test_recurrent_and_attention_layers_have_their_kinds(twins):
    arch, pair, models = twins
    expected = "attention" if arch == "mha" else "recurrent"
    for fw in pair:
        kinds = {layer.kind for layer in adapter_for(models[fw]).layers()}
        assert expected in kinds and "other" not in kinds, (fw, kinds)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_half_of_all_matrices_zeroed_with_identical_masks(twins, scope):
    arch, (a, b), models = twins
    results = {fw: slimkit.compress(models[fw], _recipe(scope), verbose=False) for fw in (a, b)}
    pruned = {fw: matrices(reference_layout(r.model, fw, arch)) for fw, r in results.items()}
    assert pruned[a].keys() == pruned[b].keys()
    for name in pruned[a]:
        np.testing.assert_array_equal(pruned[a][name] == 0, pruned[b][name] == 0, err_msg=name)
    zeros = sum(int((m == 0).sum()) for m in pruned[a].values())
    total = sum(m.size for m in pruned[a].values())
    assert zeros / total == pytest.approx(0.5, abs=0.02)
    recurrent = [n for n in pruned[a] if "rnn." in n or "in_proj" in n]
    assert recurrent and all(0 < float(np.mean(pruned[a][n] == 0)) < 1 for n in recurrent)
    if scope == "layer":  # every layer's matrices together: the whole block at 50%, not each matrix
        block = [pruned[a][n] for n in recurrent]
        assert sum(int((m == 0).sum()) for m in block) / sum(m.size for m in block) == pytest.approx(0.5, abs=0.01)
    x = tokens()
    np.testing.assert_allclose(adapter_for(results[a].model).predict(x), adapter_for(results[b].model).predict(x),
                               atol=1e-4)
    for fw, result in results.items():  # the report counts the same matrices
        assert result.report.stages[0].achieved == pytest.approx(zeros / total, abs=1e-6), fw
