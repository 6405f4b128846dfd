"""Distillation on each framework: hint projections learned and dropped, the teacher untouched, an ONNX
teacher file serving either framework through one recipe file, and the errors users meet.

Teacher: the ``cnn`` twin; student: the ``bn_cnn`` twin. The hint compares the student's ``conv1``
(8 channels) with the teacher's ``pw`` (16 channels), through a learned 16x8 projection.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import slimkit
from slimkit.adapter import TrainHooks
from slimkit.distill.objective import DistillObjective
from slimkit.distill.teacher import AdapterTeacher
from slimkit.errors import DataError, RecipeError
from slimkit.recipe import Distill, FineTune, Hint
from slimkit.registry import adapter_class, adapter_for
from frameworks import BY_NAME, building, pair_ids, pairs
from twins import twin_pair

HINT = {"teacher": "pw", "student": "conv1", "weight": 0.5}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data[:192] / 16.0).astype(np.float32).reshape(-1, 8, 8, 1), data.target[:192].astype(np.int64)


def _weights(model) -> dict:
    adapter = adapter_for(model)
    return {(layer.name, key): value for layer in adapter.layers() for key, value in adapter.get_weights(layer.name).items()}


def _layout(x: np.ndarray, fw: str) -> np.ndarray:
    return x if BY_NAME[fw].channels_last else x.transpose(0, 3, 1, 2).copy()


def _models(fw: str) -> tuple:
    return (twin_pair("cnn", seed=2, he=True, frameworks=(fw,))[fw],
            twin_pair("bn_cnn", seed=1, he=True, frameworks=(fw,))[fw])


def _recipe(**distill):
    return {"stages": [{"distill": {"temperature": 3.0, "alpha": 0.6, **distill,
                                    "fine_tune": {"epochs": 1, "batch_size": 64, "learning_rate": 0.003}}}]}


@pytest.mark.parametrize("fw", building("twins"))
def test_hint_projection_is_learned_and_not_part_of_the_student(fw, digits):
    teacher, student = _models(fw)
    x, y = _layout(digits[0], fw), digits[1]
    cls = adapter_class(student)
    work = cls.copy_of(student)
    names = {(layer.name, key, tuple(shape)) for layer in work.layers() for key, shape in layer.shapes.items()}
    settings = FineTune(epochs=2, batch_size=64, learning_rate=0.01)
    objective = DistillObjective(AdapterTeacher(cls(teacher), "teacher"),
                                 Distill(hints=(Hint("pw", "conv1", 1.0),)), settings, "distill", work, x, seed=0)
    initial = objective.hints[0].projection.copy()
    work.fit((x, y), settings, TrainHooks(), None, objective)
    learned = objective.learned[0]
    assert learned.shape == (16, 8) and np.abs(learned - initial).max() > 1e-3
    after = {(layer.name, key, tuple(shape)) for layer in work.layers() for key, shape in layer.shapes.items()}
    assert after == names  # no projection among the student's layers or weights


@pytest.mark.parametrize("fw", building("twins"))
def test_distilled_student_exports_without_projection_and_teacher_is_untouched(fw, digits, tmp_path):
    teacher, student = _models(fw)
    before = _weights(teacher)
    if hasattr(teacher, "bn1") and hasattr(teacher, "train"):  # PyTorch: a mix of train/eval flags survives
        teacher.train()
        teacher.bn1.eval()
    x, y = _layout(digits[0], fw), digits[1]
    result = slimkit.compress(student, _recipe(hints=[HINT]), train_data=(x, y), teacher=teacher, verbose=False)
    after = _weights(teacher)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    if hasattr(teacher, "bn1") and hasattr(teacher, "train"):
        assert teacher.training and not teacher.bn1.training and teacher.conv1.training
    assert any("learned 8->16 projection, dropped from the model" in n for n in result.report.notes)
    assert [r.name for r in result.report.stages] == ["distill"] and result.report.stages[0].steps == 3
    path = tmp_path / "student.onnx"
    result.export_onnx(path)
    shapes = {tuple(init.dims) for init in onnx.load(str(path)).graph.initializer}
    assert (16, 8) not in shapes and (8, 16) not in shapes and (16, 8, 1, 1) not in shapes


@pytest.fixture(scope="module")
def onnx_teacher(tmp_path_factory, digits):
    """The torch ``cnn`` twin (NCHW) exported to ONNX, beside a recipe file naming it relatively."""
    folder = tmp_path_factory.mktemp("onnx_teacher")
    fw = "torch" if "torch" in building("twins") else building("twins")[0]
    teacher = twin_pair("cnn", seed=2, he=True, frameworks=(fw,))[fw]
    slimkit.export_onnx(teacher, folder / "teacher.onnx", sample=_layout(digits[0][:4], fw))
    (folder / "recipe.yaml").write_text(
        "stages:\n  - distill:\n      teacher: teacher.onnx\n      temperature: 2.0\n      alpha: 1.0\n"
        "      fine_tune: {epochs: 6, batch_size: 32, learning_rate: 0.01}\n")
    return folder


def _kl(teacher_out: np.ndarray, student_out: np.ndarray) -> float:
    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))
    lt, ls = log_softmax(teacher_out), log_softmax(student_out)
    return float(np.mean(np.sum(np.exp(lt) * (lt - ls), 1)))


@pytest.mark.parametrize("fw", building("twins"))
def test_one_onnx_teacher_file_teaches_either_framework_through_one_recipe_file(fw, digits, onnx_teacher):
    """The file takes NCHW; a channels-last student's inputs are transposed on the way in. Pure
    distillation (alpha 1) brings the student's outputs closer to the teacher's: KL falls by half."""
    import onnxruntime as ort

    _, student = _models(fw)
    x, y = _layout(digits[0], fw), digits[1]
    session = ort.InferenceSession(str(onnx_teacher / "teacher.onnx"), providers=["CPUExecutionProvider"])
    nchw = digits[0].transpose(0, 3, 1, 2).copy()
    teacher_out = session.run(None, {session.get_inputs()[0].name: nchw})[0]
    kl_before = _kl(teacher_out, adapter_for(student).predict(x))
    result = slimkit.compress(student, onnx_teacher / "recipe.yaml", train_data=(x, y), verbose=False)
    kl_after = _kl(teacher_out, adapter_for(result.model).predict(x))
    assert kl_after < 0.5 * kl_before, (kl_before, kl_after)
    assert any("teacher file" in n and "teacher.onnx" in n for n in result.report.notes)


def _five_classes(fw: str):
    """A model of the students' inputs with 5 outputs instead of 10."""
    if BY_NAME[fw].channels_last:
        import keras

        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))


@pytest.mark.parametrize("fw", building("twins"))
def test_distill_errors_name_their_field(fw, digits):
    teacher, student = _models(fw)
    data = (_layout(digits[0], fw), digits[1])
    with pytest.raises(DataError, match=r"^stages\[0\]\.distill\.teacher: the teacher .* outputs of shape \(5,\) "
                                        r"per sample and the student \(10,\)"):
        slimkit.compress(student, _recipe(), train_data=data, teacher=_five_classes(fw), verbose=False)
    with pytest.raises(RecipeError, match=r"^stages\[0\]\.distill\.hints\[0\]\.student: the student has no layer "
                                          r"named 'nope'; its layers: conv1"):
        slimkit.compress(student, _recipe(hints=[{**HINT, "student": "nope"}]), train_data=data, teacher=teacher,
                         verbose=False)
    with pytest.raises(RecipeError, match=r"^stages\[0\]\.distill\.hints\[0\]\.teacher: the teacher .* has no layer "
                                          r"named 'nope'"):
        slimkit.compress(student, _recipe(hints=[{**HINT, "teacher": "nope"}]), train_data=data, teacher=teacher,
                         verbose=False)
    with pytest.raises(RecipeError, match=r"^stages\[0\]\.distill\.teacher: no teacher: name a file"):
        slimkit.compress(student, _recipe(), train_data=data, verbose=False)
    with pytest.raises(DataError, match=r"^stages\[0\]\.distill\.teacher: .*missing\.onnx does not exist"):
        slimkit.compress(student, _recipe(teacher="missing.onnx"), train_data=data, verbose=False)


@pytest.mark.parametrize("pair", pairs("twins"), ids=pair_ids("twins"))
def test_a_teacher_object_of_another_framework_is_refused(pair, digits):
    student_fw, teacher_fw = pair
    teacher = twin_pair("cnn", seed=2, frameworks=(teacher_fw,))[teacher_fw]
    student = twin_pair("bn_cnn", seed=1, frameworks=(student_fw,))[student_fw]
    with pytest.raises(RecipeError, match=rf"^stages\[0\]\.distill\.teacher: the teacher is a {teacher_fw} model and "
                                          rf"the student a {student_fw} model; .*teacher: teacher\.onnx"):
        slimkit.compress(student, _recipe(), train_data=(_layout(digits[0], student_fw), digits[1]), teacher=teacher,
                         verbose=False)


@pytest.mark.parametrize("fw", building("twins"))
def test_a_users_fit_fn_distills_as_the_built_in_loop_does(fw, digits):
    """The user's own loop (SGD 0.05, unshuffled batches, their framework's cross-entropy) with a
    distilling stage ends where slimkit's loop with the same settings does: the user's loss became
    ``alpha * soft + (1 - alpha) * task``. And it differs from plain training on labels."""
    teacher, student = _models(fw)
    x, y = _layout(digits[0], fw), digits[1]
    settings = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "momentum": 0.0}, "learning_rate": 0.05,
                "shuffle": False}
    recipe = _recipe()
    recipe["stages"][0]["distill"]["fine_tune"] = settings
    built_in = slimkit.compress(student, recipe, train_data=(x, y), teacher=teacher, verbose=False)

    def my_fit(model, callback):
        BY_NAME[fw].user_fit(model, callback, x, y, epochs=2, batch_size=64)

    users = slimkit.compress(student, recipe, train_data=(x, y), teacher=teacher, fit_fn=my_fit, verbose=False)
    plain_recipe = _recipe(alpha=0.0)
    plain_recipe["stages"][0]["distill"]["fine_tune"] = settings
    plain = slimkit.compress(student, plain_recipe, train_data=(x, y), teacher=teacher, fit_fn=my_fit, verbose=False)
    a, b, c = _weights(built_in.model), _weights(users.model), _weights(plain.model)
    assert a.keys() == b.keys()
    # learned weights; batch-norm statistics differ by design (PyTorch's own loop keeps Bessel's correction)
    for key in [k for k in a if k[1] not in ("mean", "var")]:
        assert np.abs(a[key] - b[key]).max() <= 1e-4 * max(1.0, float(np.abs(a[key]).max())), key
    assert max(float(np.abs(a[k] - c[k]).max()) for k in a) > 1e-2  # distillation changed the training
    with pytest.raises(slimkit.NotSupportedYetError, match=r"^stages\[0\]\.distill\.hints: hints with a fit_fn"):
        slimkit.compress(student, _recipe(hints=[HINT]), train_data=(x, y), teacher=teacher, fit_fn=my_fit,
                         verbose=False)


@pytest.mark.parametrize("fw", [f for f in building("twins") if BY_NAME[f].saves])
def test_teacher_files_of_the_students_framework(fw, digits, tmp_path):
    """A folder slimkit saved teaches a student of its framework when it loads without code (Keras);
    a PyTorch folder needs the architecture, which a recipe cannot give: a DataError says so. A Keras
    ``.keras`` file is loaded in safe mode."""
    teacher, student = _models(fw)
    data = (_layout(digits[0], fw), digits[1])
    slimkit.compress(teacher, {"stages": [{"prune": {"sparsity": 0.3, "fine_tune": None}}]}, train_data=data,
                     verbose=False).save(tmp_path / "teacher")
    files = [tmp_path / "teacher"]
    if BY_NAME[fw].channels_last:
        teacher.save(tmp_path / "teacher.keras")
        files.append(tmp_path / "teacher.keras")
    for file in files:
        recipe = _recipe(teacher=str(file))
        if not BY_NAME[fw].channels_last:  # PyTorch: the saved folder holds weights, not the architecture
            with pytest.raises(DataError, match=r"model="):
                slimkit.compress(student, recipe, train_data=data, verbose=False)
            continue
        result = slimkit.compress(student, recipe, train_data=data, verbose=False)
        assert any(f"teacher file {file}" in n for n in result.report.notes), result.report.notes
