"""Same recipe, same weights, every pair of frameworks with twin builders: identical masks and agreeing
ONNX exports."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.deploy.runtime import run as run_onnx
from slimkit.registry import adapter_for
from frameworks import pair_ids, pairs
from twins import canonical_kernels, sample_input, twin_pair

ONE_SHOT = {
    "layers": {"kinds": ["conv", "depthwise_conv", "dense", "embedding"]},
    "fine_tune": None,
    "stages": [{"prune": {"method": "magnitude", "sparsity": 0.6}}],
}


def _recipe(scope: str) -> dict:
    recipe = {**ONE_SHOT, "stages": [{"prune": {"method": "magnitude", "sparsity": 0.6, "scope": scope}}]}
    return recipe


PAIRS = pairs("twins")


@pytest.fixture(scope="module", params=[(arch, pair) for arch in ("cnn", "seq") for pair in PAIRS],
                ids=[f"{arch}-{pid}" for arch in ("cnn", "seq") for pid in pair_ids("twins")])
def twins(request):
    """(arch, (a, b), framework -> twin model) for one pair of frameworks."""
    arch, pair = request.param
    return arch, pair, twin_pair(arch, seed=3, frameworks=pair)


def test_twins_compute_the_same_function(twins):
    arch, (a, b), models = twins
    out = {fw: adapter_for(m).predict(sample_input(arch, fw)) for fw, m in models.items()}
    np.testing.assert_allclose(out[a], out[b], atol=1e-4)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_same_recipe_gives_identical_masks(twins, scope):
    arch, (a, b), models = twins
    results = {fw: slimkit.compress(m, _recipe(scope), verbose=False) for fw, m in models.items()}
    kernels = {fw: canonical_kernels(r.model) for fw, r in results.items()}
    assert kernels[a].keys() == kernels[b].keys()
    pruned_total = 0
    for name in kernels[a]:
        mask_a, mask_b = kernels[a][name] != 0, kernels[b][name] != 0
        np.testing.assert_array_equal(mask_a, mask_b, err_msg=f"layer {name}")
        pruned_total += int((~mask_a).sum())
    total = sum(k.size for k in kernels[a].values())
    assert pruned_total == pytest.approx(0.6 * total, abs=len(kernels[a]))
    if scope == "layer":
        for name, kernel in kernels[a].items():
            assert float(np.mean(kernel == 0)) == pytest.approx(0.6, abs=0.5 / kernel.size + 1e-9), name


def test_pruned_onnx_exports_agree(twins, tmp_path):
    arch, (a, b), models = twins
    outputs = {}
    for fw, model in models.items():
        result = slimkit.compress(model, _recipe("global"), verbose=False)
        x = sample_input(arch, fw)
        path = tmp_path / f"{fw}.onnx"
        row = result.export_onnx(path, sample=x)
        assert row.max_abs_diff is not None and row.max_abs_diff < 1e-4
        outputs[fw] = run_onnx(str(path), x)
    np.testing.assert_allclose(outputs[a], outputs[b], atol=1e-4, rtol=0)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids("twins"))
def test_same_nm_recipe_gives_identical_masks(pair):
    a, b = pair
    models = twin_pair("cnn", seed=7, frameworks=pair)
    recipe = {"fine_tune": None, "layers": {"names": ["pw", "fc1", "logits"]},
              "stages": [{"prune": {"method": "n:m", "n": 2, "m": 4}}]}
    kernels = {fw: canonical_kernels(slimkit.compress(m, recipe, verbose=False).model) for fw, m in models.items()}
    for name in ("pw", "fc1", "logits"):
        np.testing.assert_array_equal(kernels[a][name] != 0, kernels[b][name] != 0, err_msg=name)
        assert float(np.mean(kernels[a][name] == 0)) == pytest.approx(0.5)
    assert float(np.mean(kernels[a]["conv1"] == 0)) == 0.0  # not selected
