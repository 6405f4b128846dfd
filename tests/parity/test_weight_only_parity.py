"""Weight-only int8 gives twins the same values: LSTM, GRU and attention twins (tests/sequence_twins.py)
quantized with the same recipe hold the same multiset of snapped weights, although Keras splits the
attention's query/key/value kernels that PyTorch fuses into one ``in_proj_weight`` (one grid per layer)."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.deploy.qdq_weight_only import grid_scale
from slimkit.registry import adapter_for
from frameworks import pair_ids, pairs
from sequence_twins import ARCHS, build, tokens

CASES = [(arch, pair) for arch in ARCHS for pair in pairs("sequence")]
IDS = [f"{arch}-{pid}" for arch in ARCHS for pid in pair_ids("sequence")]
RECIPE = {"stages": [{"quantize": {"method": "static"}}]}


def _snapped(framework: str, arch: str) -> np.ndarray:
    result = slimkit.compress(build(arch, framework, seed=6), RECIPE, calib_data=tokens(), verbose=False)
    adapter = adapter_for(result.model)
    values = []
    for name in result.report.weight_only:
        # the matrices (a fake-quant PyTorch model holds nn.MultiheadAttention's tensors under native names)
        matrices = [v for k, v in adapter.get_weights(name).items() if v.ndim >= 2 and "bias" not in k]
        assert grid_scale(np.concatenate([m.ravel() for m in matrices])) is not None, name  # one grid a layer
        values += [m.ravel() for m in matrices]
    return np.sort(np.concatenate(values))


@pytest.mark.parametrize("arch, pair", CASES, ids=IDS)
def test_twins_snap_their_weights_to_the_same_values(arch, pair):
    a, b = pair
    np.testing.assert_allclose(_snapped(a, arch), _snapped(b, arch), rtol=0, atol=1e-7)
