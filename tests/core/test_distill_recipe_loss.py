"""Distillation in core: the recipe's distill settings, and the loss written once over TensorOps
(checked here on numpy against the textbook formulas)."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.distill.loss import hint_loss, soft_loss, teacher_log_probs
from slimkit.errors import DataError, RecipeError
from slimkit.ops import NUMPY_OPS
from slimkit.recipe import DistillStage, Hint, Recipe


def _raises(raw, error=RecipeError) -> str:
    with pytest.raises(error) as info:
        Recipe.load(raw)
    assert type(info.value) is error
    return str(info.value)


# -- recipe -----------------------------------------------------------------------------------------
def test_distill_stage_keys_and_defaults():
    recipe = Recipe.load({"stages": [{"distill": {"teacher": "t.onnx", "temperature": 2.0, "alpha": 0.5,
                                                  "hints": [{"teacher": "b3", "student": "s3", "weight": 0.1}],
                                                  "fine_tune": {"epochs": 3}}}]})
    stage = recipe.stages[0]
    assert isinstance(stage, DistillStage) and stage.name == "distill"
    assert (stage.distill.teacher, stage.distill.temperature, stage.distill.alpha) == ("t.onnx", 2.0, 0.5)
    assert stage.distill.hints == (Hint("b3", "s3", 0.1),) and stage.fine_tune.epochs == 3
    default = Recipe.load({"stages": [{"distill": {}}]}).stages[0].distill
    assert (default.teacher, default.temperature, default.alpha, default.hints) == (None, 4.0, 0.7, ())


def test_later_distill_settings_inherit_the_teacher_file():
    recipe = Recipe.load({"stages": [
        {"prune": {"sparsity": 0.5, "method": "channel", "fine_tune": None}},
        {"distill": {"teacher": "teacher.onnx"}},
        {"quantize": {"method": "qat", "distill": {"alpha": 0.5}}}]})
    assert recipe.stages[2].distill.teacher == "teacher.onnx" and recipe.stages[2].distill.alpha == 0.5
    assert recipe.stages[0].distill is None


@pytest.mark.parametrize("raw, start", [
    ({"stages": [{"distill": {"fine_tune": None}}]}, "stages[0].distill.fine_tune: a distill stage trains"),
    ({"stages": [{"distill": {"fine_tune": {"epochs": 0}}}]}, "stages[0].distill.fine_tune:"),
    ({"stages": [{"distill": {"temperature": 0}}]}, "stages[0].distill.temperature:"),
    ({"stages": [{"distill": {"alpha": 1.5}}]}, "stages[0].distill.alpha:"),
    ({"stages": [{"distill": {"teacher": 3}}]}, "stages[0].distill.teacher: expected a file name"),
    ({"stages": [{"distill": {"hints": [{"teacher": "a"}]}}]}, "stages[0].distill.hints[0].student:"),
    ({"stages": [{"distill": {"hints": [{"teacher": "a", "student": "b", "weight": -1}]}}]},
     "stages[0].distill.hints[0].weight:"),
    ({"stages": [{"distill": {"teacher_outputs": "scores"}}]}, "stages[0].distill.teacher_outputs:"),
    ({"stages": [{"distill": {"tempreature": 2}}]}, "stages[0].distill: unknown key 'tempreature'"),
    ({"stages": [{"quantize": {"method": "static", "distill": {}}}]}, "stages[0].quantize.distill: has no effect"),
    ({"stages": [{"prune": {"sparsity": 0.5, "fine_tune": None, "distill": {}}}]},
     "stages[0].prune.distill: has no effect"),
    ({"stages": [{"quantize": {"method": "static"}}, {"distill": {}}]},
     "stages[1].distill: a distill stage cannot follow the quantize stage"),
])
def test_bad_distill_settings_name_their_field(raw, start):
    assert _raises(raw).startswith(start)


# -- loss -------------------------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_soft_loss_is_t_squared_kl_of_the_softened_distributions():
    rng = np.random.default_rng(0)
    s, t, temp = rng.normal(size=(6, 5)) * 3, rng.normal(size=(6, 5)) * 3, 2.5
    pt, ps = _softmax(t / temp), _softmax(s / temp)
    expected = temp ** 2 * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))
    got = soft_loss(NUMPY_OPS, s, teacher_log_probs(t, temp, True).astype(np.float64), temp, True)
    assert got == pytest.approx(expected, rel=1e-6)
    # probabilities in, as a softmax-ended model gives them: the same loss
    got_p = soft_loss(NUMPY_OPS, _softmax(s), teacher_log_probs(_softmax(t), temp, False).astype(np.float64),
                      temp, False)
    assert got_p == pytest.approx(expected, rel=1e-5)
    # equal distributions: zero
    assert soft_loss(NUMPY_OPS, t, teacher_log_probs(t, temp, True).astype(np.float64), temp, True) == \
        pytest.approx(0.0, abs=1e-6)


def test_soft_loss_of_sequence_outputs_averages_over_positions():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    flat = soft_loss(NUMPY_OPS, s.reshape(6, 4), teacher_log_probs(t.reshape(6, 4), 2.0, True), 2.0, True)
    seq = soft_loss(NUMPY_OPS, s, teacher_log_probs(t, 2.0, True).reshape(t.shape), 2.0, True)
    assert seq == pytest.approx(flat, rel=1e-6)


def test_hint_loss_projects_student_channels_on_axis_1():
    rng = np.random.default_rng(2)
    student, teacher, w = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 4, 4)), rng.normal(size=(5, 3))
    projected = np.einsum("ji,nihw->njhw", w, student)
    assert hint_loss(NUMPY_OPS, student, teacher, w) == pytest.approx(np.mean((projected - teacher) ** 2))
    assert hint_loss(NUMPY_OPS, teacher, teacher, None) == 0.0
