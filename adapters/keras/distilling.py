"""Distillation in Keras' ``fit``: a wrapper model whose ``compute_loss`` is core's objective.

The wrapper calls the student (or, with hints, a functional model over the student's own layers that
also returns the hinted layers' outputs), owns the hint projections, and is dropped after training:
the student's variables are the ones trained, the projections never reach the student. Batches carry
their teacher targets as ``y = {"y": labels, "soft": ..., "hint0": ...}``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from slimkit.errors import RecipeError, UnsupportedModelError

from .ops import KERAS_OPS

_CLASSES: dict[str, type] = {}


def distilling_model(k: ModuleType, student: Any, objective: Any, task_loss: Any) -> Any:
    """The wrapper model training ``student`` on ``objective`` with the task loss ``task_loss``."""
    net = student
    names = objective.feature_names
    if names:
        try:
            inputs, outputs = student.inputs, student.outputs
        except (AttributeError, ValueError):
            inputs = outputs = None
        if not inputs or not outputs:
            raise UnsupportedModelError(f"{objective.field}.hints: hints read layer outputs of a functional or "
                                        f"Sequential Keras model; {type(student).__name__} is subclassed")
        taps = []
        for i, name in enumerate(names):
            try:
                taps.append(student.get_layer(name).output)
            except (ValueError, AttributeError):
                raise RecipeError(f"{objective.field}.hints[{i}].student: the student has no top-level layer named "
                                  f"{name!r} with one output") from None
        net = k.Model(student.inputs, [student.outputs[0], *taps])
    return _class(k)(net, bool(names), objective, task_loss)


def user_loop_model(k: ModuleType, student: Any, objective: Any) -> Any:
    """The model a user's ``fit_fn`` gets when its stage distills: compile and fit it as the student.
    Its loss is ``alpha * soft + (1 - alpha) * (the loss the user compiles)``; the teacher runs on each
    batch (the user's data may augment), through ``tf.numpy_function`` (so not under XLA)."""
    objective.check_user_loop()
    return _class(k)(student, False, objective, None)


def _class(k: ModuleType) -> type:
    cls = _CLASSES.get(k.__name__)
    if cls is None:
        cls = _CLASSES[k.__name__] = _define(k)
    return cls


def _define(k: ModuleType) -> type:
    from keras import ops

    class DistillingModel(k.Model):  # type: ignore[misc, valid-type]
        """The student trained on the distillation loss; see the module docstring."""

        def __init__(self, net: Any, with_features: bool, objective: Any, task_loss: Any) -> None:
            super().__init__()
            self.net, self.with_features = net, with_features
            self._objective, self._task_loss = objective, task_loss
            self.hint_projections = [
                self.add_weight(shape=h.projection.shape, initializer=k.initializers.Constant(h.projection),
                                trainable=True, name=f"hint{i}_projection")
                for i, h in enumerate(objective.hints) if h.projection is not None]

        def call(self, x: Any, training: bool = False) -> Any:
            return self.net(x, training=training)

        def compile(self, *args: Any, **kwargs: Any) -> None:
            if self._task_loss is None:  # a user's loop: the teacher runs through tf.numpy_function
                kwargs["jit_compile"] = False
            super().compile(*args, **kwargs)

        def _user_loss(self, x: Any, y: Any, out: Any, sample_weight: Any, training: bool) -> Any:
            import tensorflow as tf

            flat = tf.nest.flatten(x)
            objective = self._objective

            def soft_targets(*arrays: Any) -> Any:
                inputs = arrays[0] if len(arrays) == 1 else tuple(arrays)
                return np.ascontiguousarray(objective.targets(inputs)["soft"], dtype=np.float32)

            target = tf.numpy_function(soft_targets, flat, tf.float32)
            target.set_shape(out.shape)
            task = super().compute_loss(x, y, out, sample_weight, training=training)
            return objective.soft(KERAS_OPS, out, target) * objective.alpha + task * (1.0 - objective.alpha)

        def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                         training: bool = True) -> Any:
            if self._task_loss is None:
                return self._user_loss(x, y, y_pred, sample_weight, training)
            if self.with_features:
                out, features = y_pred[0], list(y_pred[1:])
            else:
                out, features = y_pred, []
            # channels on axis 1, as the adapter's layer_outputs gives the teacher's
            features = [ops.moveaxis(f, -1, 1) if len(f.shape) >= 3 else f for f in features]
            variables = iter(self.hint_projections)
            projections = [None if h.projection is None else ops.convert_to_tensor(next(variables))
                           for h in self._objective.hints]
            targets = {key: value for key, value in y.items() if key != "y"}
            task = self._task_loss(y["y"], out)
            loss = self._objective.loss(KERAS_OPS, task, out, targets, features, projections)
            extra = list(self.losses)
            if extra:
                loss = loss + ops.sum(ops.stack([ops.cast(v, "float32") for v in extra]))
            return loss

    DistillingModel.__module__ = __name__
    return DistillingModel


def with_targets(batches: Any, objective: Any) -> Any:
    """(x, y, index) batches -> (x, {"y": y, targets...}) batches; ``index`` None: computed on x."""
    for xb, yb, index in batches:
        x_np = _numpy(xb)
        targets = objective.targets(x_np, index)
        yield xb, {"y": yb, **{key: np.ascontiguousarray(v) for key, v in targets.items()}}


def _numpy(x: Any) -> Any:
    if isinstance(x, dict):
        return {key: np.asarray(v) for key, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(np.asarray(v) for v in x)
    return np.asarray(x)
