"""Twins trained by the same QAT stage with ``dorefa`` or ``bnn`` end with the same frozen grids: equal
kernel values (integer levels and scales), activation parameters and outputs, for every pair of the
``zoo`` family.

The stages take real optimizer steps on unshuffled batches. Why few: with 4-bit weights and activations,
an activation that lands within float rounding of a rounding tie (``x * 15`` at ``k + 0.5``) may round to
different levels in two frameworks whose sums differ in the last bit; the next steps then differ by a whole
level's gradient (measured on ``plain``: equal after 3 steps of sgd 0.01, 0.6% apart in a kernel's max|w|
after the 4th). One step from the twins' identical weights is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.registry import adapter_for
import zoo
from frameworks import canonical, pair_ids, pairs

PAIRS, PAIR_IDS = pairs("zoo"), pair_ids("zoo")


def recipe(quantize: dict, epochs: int, batch_size: int, lr: float) -> dict:
    return {"seed": 0, "fine_tune": {"epochs": epochs, "batch_size": batch_size, "optimizer": "sgd",
                                     "learning_rate": lr, "shuffle": False},
            "stages": [{"quantize": {"method": "qat", **quantize}}]}


CASES = {
    # DoReFa-Net's setting: first and last layers float, W4A4 in between (post-ReLU sites only)
    "dorefa": ("plain", recipe({"layers": {"exclude": ["conv1", "logits"]}, "weights": {"bits": 4, "learn": "dorefa"},
                                "activations": {"bits": 4, "learn": "dorefa"}}, 1, 64, 0.05)),
    # BinaryNet's: +-alpha weights, sign activations between dense layers without ReLU; 8 steps
    "bnn": ("binary", recipe({"layers": {"exclude": ["fc1", "logits"]}, "weights": {"bits": 1, "learn": "bnn"},
                              "activations": {"bits": 1, "learn": "bnn"}}, 2, 16, 0.01)),
}


def trained(model, arch, framework, body):
    x = zoo.sample(arch, framework, n=64, seed=3)
    result = slimkit.compress(model, body, train_data=(x, np.arange(64) % 4), verbose=False)
    adapter = adapter_for(result.model)
    return adapter, adapter.quant_plan(), adapter.quant_state()


def levels(adapter, state, layer):
    """The kernel's integer levels per output channel, sorted (flatten orders differ between frameworks)."""
    kernel = canonical(adapter, layer)["kernel"]
    scale = np.asarray(state[f"{layer}/kernel"]["scale"]).reshape((-1,) + (1,) * (kernel.ndim - 1))
    q = kernel / scale
    np.testing.assert_allclose(q, np.rint(q), atol=1e-4, err_msg=layer)  # the frozen kernel is on its grid
    return np.sort(np.rint(q).reshape(q.shape[0], -1), axis=1)


@pytest.mark.filterwarnings("ignore:.*correlate.*with the float model")  # low-bit models drift from float
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_twins_freeze_to_the_same_grids(case, pair):
    arch, body = CASES[case]
    models = zoo.twins(arch, seed=4, frameworks=pair)
    (a_ad, a_plan, a_state), (b_ad, b_plan, b_state) = (trained(models[fw], arch, fw, body) for fw in pair)
    assert [s.layer for s in a_plan.layers] == [s.layer for s in b_plan.layers] and a_plan.layers
    assert [(a.spec.mode, a.spec.qmin, a.spec.qmax) for a in a_plan.acts] == \
        [(a.spec.mode, a.spec.qmin, a.spec.qmax) for a in b_plan.acts]
    for site_a, site_b in zip(a_plan.acts, b_plan.acts):  # per-tensor parameters of their own grid
        for key in ("scale", "zero_point"):
            assert np.array_equal(a_state[site_a.node].get(key), b_state[site_b.node].get(key)), (site_a, key)
    for s in a_plan.layers:
        np.testing.assert_allclose(a_state[f"{s.layer}/kernel"]["scale"], b_state[f"{s.layer}/kernel"]["scale"],
                                   rtol=1e-6, err_msg=s.layer)
        np.testing.assert_array_equal(levels(a_ad, a_state, s.layer), levels(b_ad, b_state, s.layer), err_msg=s.layer)
    out_a, out_b = (ad.predict(zoo.sample(arch, fw, n=32, seed=9)) for ad, fw in zip((a_ad, b_ad), pair))
    np.testing.assert_allclose(out_a, out_b, rtol=0, atol=1e-5 * max(1.0, float(np.abs(out_a).max())))
