"""Twins pruned by network slimming or by ADMM toward channels, with the same recipe, end with the same
channels and equal weights (within 1e-4 of each tensor's largest value; they agree to about 2e-6): the
penalty steps and Z/U updates are core's numpy, the training is the shared fine-tuning (see
test_training_parity.py).

SGD, not Adam: Adam turns a float32 rounding difference in a near-zero gradient into a step of about
``lr`` either way, and the penalties nudge the weights off the trajectories where the twins' roundings
agree (with Adam at 1e-3 the twins' batch-norm shifts drift apart by 1e-4..5e-4 of their largest value).
"""

from __future__ import annotations

import pytest

from test_training_parity import assert_same_weights, compress_twins, digits, pair  # noqa: F401 (fixtures)

STAGES = {
    "slimming": {"method": "channel", "sparsity": 0.5, "criterion": "bn_scale", "regularize": {"bn_l1": 0.5}},
    "admm-channel": {"method": "admm", "target": "channel", "sparsity": 0.5, "every": 4, "retrain": 0.25},
}


@pytest.mark.parametrize("stage", list(STAGES.values()), ids=list(STAGES))
def test_twins_keep_the_same_channels_and_weights(digits, stage, pair):  # noqa: F811
    recipe = {"seed": 0, "fine_tune": {"epochs": 2, "batch_size": 64, "optimizer": "sgd", "learning_rate": 0.05},
              "layers": {"exclude": ["logits"]}, "stages": [{"prune": stage}]}
    results = compress_twins("bn_cnn", recipe, digits, pair)
    for layer, channels in (("conv1", 4), ("conv2", 8)):
        shapes = [next(i for i in results[fw][0].layers() if i.name == layer) for fw in ("a", "b")]
        assert [info.shapes["kernel"][info.kernel_perm[0]] for info in shapes] == [channels, channels], layer
    assert_same_weights(results)
