"""The prune -> distill -> QAT pipeline (``examples/recipes/prune_distill_qat.yaml``) runs unchanged on
twins of every framework pair, each taught by its own unpruned model, and their int8 ONNX files score
within 1 point of each other on held-out digits (and stay close to the float teacher)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import slimkit
from slimkit.deploy.runtime import run as onnx_run
from frameworks import pair_ids, pairs
from test_training_parity import canonical_weights
from twins import load_canonical, twin_pair

RECIPE = Path(__file__).resolve().parents[2] / "examples" / "recipes" / "prune_distill_qat.yaml"


@pytest.fixture(scope="module")
def split():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)  # flattened: the mlp twins
    y = data.target.astype(np.int64)
    return (x[:640], y[:640]), (x[1200:], y[1200:])


def _layout(x: np.ndarray, fw: str) -> np.ndarray:
    return x  # flat inputs: the same layout in every framework


@pytest.mark.parametrize("pair", pairs("twins"), ids=pair_ids("twins"))
def test_pipeline_int8_twins_score_within_a_point(pair, split, tmp_path):
    (x, y), (x_test, y_test) = split
    models = twin_pair("mlp", seed=1, he=True, frameworks=pair)
    # train the first twin briefly (slimkit's own loop), then give the other its weights: trained twins
    first = slimkit.compress(models[pair[0]], {"stages": [{"distill": {"alpha": 0.0, "fine_tune": {
        "epochs": 8, "batch_size": 32, "learning_rate": 0.01}}}]}, train_data=(_layout(x, pair[0]), y),
        teacher=models[pair[0]], verbose=False).model
    weights = {name: dict(v) for name, v in _by_layer(canonical_weights(slimkit.registry.adapter_for(first))).items()}
    teachers = {fw: first if fw == pair[0] else models[fw] for fw in pair}
    for fw in pair[1:]:
        load_canonical(teachers[fw], weights)
    scores = {}
    for fw in pair:
        teacher = teachers[fw]
        result = slimkit.compress(teacher, RECIPE, train_data=(_layout(x, fw), y), teacher=teacher, verbose=False)
        assert [s.name for s in result.report.stages] == ["prune:channel", "distill", "quantize:qat"]
        path = tmp_path / f"{fw}.onnx"
        result.export_onnx(path)
        scores[fw] = float(np.mean(np.argmax(onnx_run(str(path), _layout(x_test, fw)), axis=1) == y_test))
        float_score = float(np.mean(np.argmax(slimkit.registry.adapter_for(teacher).predict(_layout(x_test, fw)), 1)
                                    == y_test))
        assert scores[fw] >= float_score - 0.03, (fw, scores[fw], float_score)  # half the hidden units, int8
    a, b = (scores[fw] for fw in pair)
    print("int8 ONNX accuracy", scores)
    assert a > 0.85 and abs(a - b) <= 0.01, scores


def _by_layer(flat: dict) -> dict:
    out: dict = {}
    for (layer, key), value in flat.items():
        out.setdefault(layer, {})[key] = value
    return out
