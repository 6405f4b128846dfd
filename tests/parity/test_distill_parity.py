"""Distillation is written once: twin students taught by twin teachers get the same loss and end with
the same weights on every framework pair.

Teacher: the ``cnn`` twins; student: the ``bn_cnn`` twins (fewer layers). The hint reads the student's
``conv1`` (8 channels) against the teacher's ``pw`` (16 channels), so a 16x8 projection is learned; its
initial weights come from core (numpy), the same on every framework.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.adapter import TrainHooks
from slimkit.distill.objective import DistillObjective
from slimkit.distill.teacher import AdapterTeacher
from slimkit.recipe import Distill, FineTune, Hint
from slimkit.registry import adapter_class, adapter_for
from frameworks import BY_NAME, pair_ids, pairs
from test_training_parity import canonical_weights
from twins import twin_pair

SPEC = Distill(temperature=3.0, alpha=0.6, hints=(Hint("pw", "conv1", 0.5),))


@pytest.fixture(params=pairs("twins"), ids=pair_ids("twins"))
def pair(request) -> tuple[str, str]:
    return request.param


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data[:256] / 16.0).astype(np.float32).reshape(-1, 8, 8, 1), data.target[:256].astype(np.int64)


def _layout(x: np.ndarray, fw: str) -> np.ndarray:
    return x if BY_NAME[fw].channels_last else x.transpose(0, 3, 1, 2).copy()


class _Losses(TrainHooks):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.losses.append(logs["loss"])


def test_first_step_distillation_loss_is_the_same(pair, digits):
    """One epoch of one batch: the logged loss is the first step's, computed before any update."""
    x, y = digits
    teachers, students = twin_pair("cnn", seed=2, he=True, frameworks=pair), twin_pair("bn_cnn", seed=1, he=True,
                                                                                          frameworks=pair)
    losses = {}
    for fw in pair:
        xf = _layout(x, fw)
        cls = adapter_class(students[fw])
        work = cls.copy_of(students[fw])
        settings = FineTune(epochs=1, batch_size=len(y), optimizer="sgd", learning_rate=0.01)
        objective = DistillObjective(AdapterTeacher(cls(teachers[fw]), "teacher"), SPEC, settings, "distill", work,
                                     xf, seed=0)
        assert objective.hints[0].projection is not None and objective.hints[0].projection.shape == (16, 8)
        record = _Losses()
        work.fit((xf, y), settings, record, None, objective)
        losses[fw] = record.losses[0]
    a, b = (losses[fw] for fw in pair)
    assert a > 0.1  # soft, task and hint terms all present
    assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), losses


def test_distilled_twins_end_with_the_same_weights(pair, digits):
    """Four steps of distillation with a hint: same student weights (within 1e-4 of each tensor's
    largest value), and the learned projection moved the same way on both."""
    x, y = digits
    teachers, students = twin_pair("cnn", seed=2, he=True, frameworks=pair), twin_pair("bn_cnn", seed=1, he=True,
                                                                                          frameworks=pair)
    recipe = {"seed": 3, "stages": [{"distill": {"temperature": 3.0, "alpha": 0.6,
                                                 "hints": [{"teacher": "pw", "student": "conv1", "weight": 0.5}],
                                                 "fine_tune": {"epochs": 1, "batch_size": 64, "optimizer": "adam",
                                                               "learning_rate": 0.003}}}]}
    weights = {}
    for fw in pair:
        result = slimkit.compress(students[fw], recipe, train_data=(_layout(x, fw), y), teacher=teachers[fw],
                                  verbose=False)
        weights[fw] = canonical_weights(adapter_for(result.model))
        assert any("learned 8->16 projection" in note for note in result.report.notes), result.report.notes
    a, b = (weights[fw] for fw in pair)
    assert set(a) == set(b)
    for key in a:
        scale = max(1e-6, float(np.abs(a[key]).max()))
        assert np.abs(a[key] - b[key]).max() <= 1e-4 * scale, key
