"""The same ``fine_tune`` trains the same way on every framework: each pair of frameworks with twin
builders is compared.

Twins with identical weights, fine-tuned by the same recipe on the same digits (shuffled: the batch
order comes from core), end with equal weights, masks and learned quantization parameters. Equal
means within 1e-4 of the largest value of each tensor; float32 kernels differ by about 1e-7 per step.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.pruning.masks import to_canonical
from slimkit.registry import adapter_for
from frameworks import BY_NAME, pair_ids, pairs
from test_quant_parity import per_layer
from twins import twin_pair

RTOL = 1e-4


@pytest.fixture(scope="module")
def digits():
    """1,024 digits: 16 batches of 64. Inputs flattened (mlp) and as 8x8 images (NHWC)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data[:1024] / 16.0).astype(np.float32)
    return {"mlp": x, "bn_cnn": x.reshape(-1, 8, 8, 1), "y": data.target[:1024].astype(np.int64)}


@pytest.fixture(params=pairs("twins"), ids=pair_ids("twins"))
def pair(request) -> tuple[str, str]:
    return request.param


def compress_twins(arch, recipe, digits, pair, n=1024):
    """framework -> (adapter over the compressed model, adapter over the original), for both of ``pair``;
    ``"a"`` and ``"b"`` name the pair's first and second.

    Twins start from He-scaled random weights, as a trained network's are scaled: from N(0, 0.5)
    weights training is chaotic, and with fake-quant a rounding tie that the frameworks' float
    kernels break differently can then send twins apart.
    """
    models = twin_pair(arch, seed=1, he=True, frameworks=pair)
    out = {}
    for fw, model in models.items():
        x = digits[arch][:n]
        if x.ndim == 4 and not BY_NAME[fw].channels_last:
            x = x.transpose(0, 3, 1, 2).copy()
        result = slimkit.compress(model, recipe, train_data=(x, digits["y"][:n]), calib_data=x[:64], verbose=False)
        out[fw] = (adapter_for(result.model), adapter_for(model))
    out["a"], out["b"] = out[pair[0]], out[pair[1]]
    return out


def canonical_weights(adapter):
    """(layer, weight) -> array, kernels in canonical order."""
    out = {}
    for layer in adapter.layers():
        for key, value in adapter.get_weights(layer.name).items():
            out[(layer.name, key)] = to_canonical(value, layer.kernel_perm) if key == "kernel" else value
    return out


def assert_same_weights(results):
    weights_a, weights_b = canonical_weights(results["a"][0]), canonical_weights(results["b"][0])
    assert weights_a.keys() == weights_b.keys()
    for key, value in weights_a.items():
        scale = float(np.abs(value).max())
        diff = float(np.abs(value - weights_b[key]).max())
        assert diff <= RTOL * scale, f"{key}: twins differ by {diff:.3g} (largest value {scale:.3g})"


def largest_change(results):
    before, after = canonical_weights(results["a"][1]), canonical_weights(results["a"][0])
    return max(float(np.abs(after[k] - before[k]).max()) for k in after)


OPTIMIZERS = [
    ("sgd", 0.05), ("adam", 1e-3), ("adamw", 1e-3), ("rmsprop", 1e-3),
    ({"name": "sgd", "nesterov": True, "weight_decay": 1e-3}, 0.05),
    ({"name": "rmsprop", "momentum": 0.5, "centered": True}, 1e-3),
]


@pytest.mark.parametrize("optimizer, lr", OPTIMIZERS,
                         ids=["sgd", "adam", "adamw", "rmsprop", "sgd-nesterov-l2", "rmsprop-centered-momentum"])
def test_fine_tuned_twins_end_with_equal_weights(digits, optimizer, lr, pair):
    recipe = {"seed": 0, "fine_tune": {"epochs": 1, "batch_size": 64, "optimizer": optimizer, "learning_rate": lr},
              "stages": [{"prune": {"method": "magnitude", "sparsity": 0.0}}]}
    results = compress_twins("mlp", recipe, digits, pair)
    assert largest_change(results) > 100 * RTOL  # training really moved the weights
    assert_same_weights(results)


def test_batch_norm_statistics_agree(digits, pair):
    """Keras updates the moving variance with the biased batch variance; slimkit's PyTorch loop too."""
    recipe = {"seed": 0, "fine_tune": {"epochs": 1, "batch_size": 64},
              "stages": [{"prune": {"method": "magnitude", "sparsity": 0.0}}]}
    results = compress_twins("bn_cnn", recipe, digits, pair)
    assert_same_weights(results)
    var = results["a"][0].get_weights("bn1")["var"]
    start = results["a"][1].get_weights("bn1")["var"]
    assert np.abs(var - start).max() > 100 * RTOL * np.abs(var).max()


def test_gradual_magnitude_pruning_gives_identical_masks_and_weights(digits, pair):
    recipe = {"seed": 0, "fine_tune": {"epochs": 2, "batch_size": 64},
              "stages": [{"prune": {"method": "magnitude", "sparsity": 0.7, "schedule": {"every": 4, "end": 0.8}}}]}
    results = compress_twins("mlp", recipe, digits, pair)
    assert_same_weights(results)
    weights_a, weights_b = canonical_weights(results["a"][0]), canonical_weights(results["b"][0])
    for layer in ("fc1", "logits"):
        kernel = weights_a[(layer, "kernel")]
        np.testing.assert_array_equal(kernel == 0, weights_b[(layer, "kernel")] == 0, err_msg=layer)
        assert np.mean(kernel == 0) == pytest.approx(0.7, abs=0.01)


QAT = [
    ("bn_cnn", "minmax", "ema", "adam", 1e-3),
    # LSQ's scale gradients sum a rounding residual over every element, so a tie broken differently
    # by the frameworks' float kernels moves them by a step; plain SGD at a small rate keeps such a
    # nudge small where Adam would turn it into a full step (see the note in README's QAT section).
    ("mlp", "lsq", "lsq", "sgd", 2e-3),
    ("bn_cnn", "lsq", "lsq", "sgd", 2e-3),
]


@pytest.mark.parametrize("arch, weights, activations, optimizer, lr", QAT,
                         ids=[f"{a}-{w}-{act}" for a, w, act, _, _ in QAT])
def test_qat_twins_learn_the_same_scales(digits, arch, weights, activations, optimizer, lr, pair):
    """20 steps of QAT (batch norms folded first): every scale within 1e-4, zero points equal."""
    recipe = {"seed": 0, "fine_tune": {"epochs": 1, "batch_size": 32, "optimizer": optimizer, "learning_rate": lr},
              "stages": [{"quantize": {"method": "qat", "weights": {"learn": weights},
                                       "activations": {"learn": activations}}}]}
    results = compress_twins(arch, recipe, digits, pair, n=640)
    layers = {fw: per_layer(results[fw][0].quant_plan(), results[fw][0].quant_state()) for fw in ("a", "b")}
    assert layers["a"].keys() == layers["b"].keys() and len(layers["a"]) >= 2
    for layer, roles in layers["a"].items():
        assert roles.keys() == layers["b"][layer].keys()
        for role, (scale, zero_point) in roles.items():
            np.testing.assert_allclose(scale, layers["b"][layer][role][0], rtol=RTOL, err_msg=f"{layer} {role}")
            np.testing.assert_array_equal(zero_point, layers["b"][layer][role][1], err_msg=f"{layer} {role}")
    first = results["a"][0].layers()[0].name
    kernel = canonical_weights(results["a"][0])[(first, "kernel")]
    start = canonical_weights(results["a"][1])[(first, "kernel")]
    assert np.abs(kernel - start).max() > 10 * RTOL  # QAT really trained
