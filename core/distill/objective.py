"""The distillation objective: what the adapters' training loops minimise when a stage distills.

Built once per stage from the recipe's :class:`slimkit.recipe.Distill`; the adapters call
:meth:`DistillObjective.targets` for each batch (numpy in) and :meth:`DistillObjective.loss` inside
their training step (framework tensors, through TensorOps). The teacher never sees a gradient.

Teacher outputs are computed once per training sample when the data is fixed arrays (slimkit's own
batches have no augmentation) and reused every epoch (:meth:`DistillObjective.prepare`); hint features
are cached likewise up to :data:`CACHE_BYTES`. Data a DataLoader or tf.data pipeline yields may differ
every epoch (augmentation), so the teacher runs on each of its batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slimkit.adapter import ModelAdapter, StructureAdapter, require
from slimkit.data import as_inputs, head, is_array_pair
from slimkit.distill.loss import hint_loss, mse, projection_init, soft_loss, teacher_log_probs
from slimkit.distill.teacher import Teacher, no_layer
from slimkit.errors import DataError, NotSupportedYetError, RecipeError
from slimkit.ops import TensorOps
from slimkit.recipe import Distill, FineTune

#: Largest cache of teacher layer outputs kept for fixed training arrays; above it hints run per batch.
CACHE_BYTES = 256 * 2**20

#: Samples the shapes of teacher and student are compared on.
_CHECK = 2


@dataclass(frozen=True)
class HintPlan:
    """One hint: its layers, weight, and the projection's initial weights (None: widths agree)."""

    teacher: str
    student: str
    weight: float
    projection: np.ndarray | None


class DistillObjective:
    """Soft targets and hints from ``teacher`` for training ``student`` with ``settings``' task loss.

    Args:
        teacher: the loaded teacher.
        spec: the recipe's distill settings.
        settings: the stage's fine-tuning (loss, ``from_logits``).
        field: the recipe path of the distill setting, for messages.
        student: the student's adapter (only read).
        sample: student inputs to check shapes on.
        seed: seeds the projections' initial weights.

    Raises:
        RecipeError: a hint names no layer.
        DataError: teacher and student outputs (or hinted layers) do not fit together.
        NotSupportedYetError: a ``binary_crossentropy`` task.
    """

    def __init__(self, teacher: Teacher, spec: Distill, settings: FineTune, field: str, student: ModelAdapter,
                 sample: Any, seed: int) -> None:
        if settings.loss == "binary_crossentropy":
            raise NotSupportedYetError(f"{field}: distillation of a binary_crossentropy model is not supported yet "
                                       "(softmax and mse outputs are)")
        if sample is None:
            raise DataError(f"{field}: distillation needs sample inputs: pass train_data or calib_data")
        self.teacher, self.spec, self.field = teacher, spec, field
        self.temperature, self.alpha = spec.temperature, spec.alpha
        self.regression = settings.loss == "mse"
        self.from_logits = settings.from_logits
        self.teacher_logits = (spec.teacher_outputs == "logits") if spec.teacher_outputs else settings.from_logits
        probe = head(sample, _CHECK)
        t_out, s_out = np.asarray(teacher.outputs(probe)), np.asarray(student.predict(probe))
        if t_out.shape != s_out.shape:
            raise DataError(f"{field}.teacher: the {teacher.label} gives outputs of shape {t_out.shape[1:]} per "
                            f"sample and the student {s_out.shape[1:]}; distillation compares them element by "
                            "element, so they must agree")
        self.hints = tuple(self._plan_hint(i, h, student, probe, seed) for i, h in enumerate(spec.hints))
        self._cache: dict[str, np.ndarray] = {}
        self._cached_for: int | None = None
        #: per hint, the projection's weights after training (set by the adapter's loop; dropped from the model)
        self.learned: list[np.ndarray | None] = [h.projection for h in self.hints]

    @property
    def cached(self) -> bool:
        """Whether the teacher's outputs were computed once for fixed training arrays."""
        return bool(self._cache)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Student layers whose outputs the loss needs (channels on axis 1), in hint order."""
        return tuple(h.student for h in self.hints)

    def _plan_hint(self, i: int, hint: Any, student: ModelAdapter, probe: Any, seed: int) -> HintPlan:
        where = f"{self.field}.hints[{i}]"
        self.teacher.check_layer(hint.teacher, f"{where}.teacher", probe)
        require(student, StructureAdapter, f"{where}.student: hints")
        try:
            s = student.layer_outputs(probe, [hint.student])[hint.student]
        except KeyError:
            raise RecipeError(no_layer(f"{where}.student", hint.student, "student", student)) from None
        t = self.teacher.features(probe, [hint.teacher])[hint.teacher]
        if s.ndim != t.ndim or s.shape[2:] != t.shape[2:]:
            raise DataError(f"{where}: student layer {hint.student!r} gives {s.shape[1:]} (channels first) and teacher "
                            f"layer {hint.teacher!r} {t.shape[1:]}; a hint needs the same positions (only the channel "
                            "counts may differ: a learned projection maps them)")
        projection = None if s.shape[1] == t.shape[1] else projection_init(int(t.shape[1]), int(s.shape[1]), seed + i)
        return HintPlan(hint.teacher, hint.student, hint.weight, projection)

    # -- targets ------------------------------------------------------------------------------------
    def _compute(self, x: Any) -> dict[str, np.ndarray]:
        out = np.asarray(self.teacher.outputs(x))
        if self.regression:
            soft = out.astype(np.float32)
        else:
            soft = teacher_log_probs(out, self.temperature, self.teacher_logits).reshape(out.shape)
        targets = {"soft": soft}
        if self.hints:
            names = [h.teacher for h in self.hints]
            feats = self.teacher.features(x, names)
            targets.update({f"hint{i}": np.asarray(feats[h.teacher], np.float32) for i, h in enumerate(self.hints)})
        return targets

    def prepare(self, data: Any) -> None:
        """Computes the teacher's targets for every sample once when ``data`` is fixed arrays."""
        if not is_array_pair(data):
            return
        x = as_inputs(data[0], "train_data")
        key = id(data[0])
        if self._cached_for == key:
            return
        targets = self._compute(x)
        if sum(a.nbytes for k, a in targets.items() if k != "soft") > CACHE_BYTES:
            targets = {"soft": targets["soft"]}
        self._cache, self._cached_for = targets, key

    def targets(self, x: Any, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The teacher's targets for a batch: cached rows ``index`` of the prepared data, else computed on
        ``x`` (numpy inputs of the batch)."""
        if index is not None and self._cache:
            got = {k: v[index] for k, v in self._cache.items()}
            if len(got) == 1 + len(self.hints):
                return got
            missing = self._compute(x)
            missing.update(got)
            return missing
        return self._compute(x)

    # -- the loss -----------------------------------------------------------------------------------
    def soft(self, ops: TensorOps, out: Any, target: Any) -> Any:
        """The soft term alone (without ``alpha``): KL at the temperature, or mse for regression."""
        if self.regression:
            return mse(ops, out, target)
        return soft_loss(ops, out, target, self.temperature, self.from_logits)

    def check_user_loop(self) -> None:
        """Raises NotSupportedYetError when the objective needs what a user's ``fit_fn`` cannot give:
        hints train projections, which the user's optimizer does not know."""
        if self.hints:
            raise NotSupportedYetError(f"{self.field}.hints: hints with a fit_fn are not supported yet (their "
                                       "projections would need your optimizer); leave fit_fn out, or the hints")

    def loss(self, ops: TensorOps, task: Any, out: Any, targets: dict[str, Any], features: list[Any],
             projections: list[Any | None]) -> Any:
        """``alpha * soft + (1 - alpha) * task + sum(weight * hint)`` over framework tensors.

        Args:
            ops: the framework's tensor ops.
            task: the task loss on the labels (a scalar tensor).
            out: the student's output.
            targets: :meth:`targets` of the batch, as tensors.
            features: the student's :attr:`feature_names` outputs, channels on axis 1.
            projections: per hint, the projection variable's value or None.
        """
        total = self.soft(ops, out, targets["soft"]) * self.alpha + task * (1.0 - self.alpha)
        for i, hint in enumerate(self.hints):
            total = total + hint_loss(ops, features[i], targets[f"hint{i}"], projections[i]) * hint.weight
        return total
