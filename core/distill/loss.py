"""The distillation loss, written once over :class:`slimkit.ops.TensorOps`.

Soft term (Hinton et al., 2015): ``T^2 * KL(softmax(t / T) || softmax(s / T))``, the mean over samples
(and positions, for sequence outputs) of the sum over classes. The teacher's side arrives as numpy
log-probabilities at temperature T (:func:`teacher_log_probs`): it has no gradient, and computing it once
per sample lets a fixed training set reuse it every epoch. Hint terms: mean squared difference of
features, the student's through a learned 1x1 projection when widths differ (FitNets, Romero et al., 2015).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.ops import TensorOps

#: Probabilities are clipped to [EPS, 1] before their logarithm (Keras' epsilon), as the task losses do.
EPS = 1e-7


def as_logits(ops: TensorOps, out: Any, from_logits: bool) -> Any:
    """``out`` as logits: itself, or the log of probabilities (clipped), which softmax maps back."""
    return out if from_logits else ops.log(ops.clip(out, EPS, 1.0))


def log_softmax(ops: TensorOps, z: Any) -> Any:
    """Log-softmax over axis 1 of a 2-d tensor; the max is subtracted without a gradient (it cancels)."""
    m = ops.reshape(ops.stop_gradient(ops.amax(z, (1,))), (-1, 1))
    shifted = z - m
    return shifted - ops.reshape(ops.log(ops.sum(ops.exp(shifted), (1,))), (-1, 1))


def teacher_log_probs(out: np.ndarray, temperature: float, from_logits: bool) -> np.ndarray:
    """The teacher's log-softmax at ``temperature`` over the last axis, as (samples, classes) float32,
    computed in float64."""
    z = np.asarray(out, np.float64)
    z = z.reshape(-1, z.shape[-1]) if z.ndim != 2 else z
    if not from_logits:
        z = np.log(np.clip(z, EPS, 1.0))
    z = z / temperature
    z = z - z.max(axis=1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(np.float32)


def soft_loss(ops: TensorOps, out: Any, teacher_log_p: Any, temperature: float, from_logits: bool) -> Any:
    """``T^2 * KL(p_teacher || p_student)`` at temperature T, averaged over rows."""
    classes = int(teacher_log_p.shape[-1])
    z = ops.reshape(as_logits(ops, out, from_logits), (-1, classes)) * (1.0 / temperature)
    log_ps = log_softmax(ops, z)
    log_pt = ops.reshape(teacher_log_p, (-1, classes))
    kl = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), (1,))
    return ops.mean(kl, None) * (temperature * temperature)


def mse(ops: TensorOps, a: Any, b: Any) -> Any:
    """Mean squared difference."""
    d = a - b
    return ops.mean(d * d, None)


def hint_loss(ops: TensorOps, student: Any, teacher: Any, projection: Any | None) -> Any:
    """Mean squared difference of features (channels on axis 1), the student's projected first."""
    if projection is not None:
        student = ops.mix_channels(student, projection)
    return mse(ops, student, teacher)


def projection_init(c_teacher: int, c_student: int, seed: int) -> np.ndarray:
    """Initial projection weights (Glorot uniform, as Keras and torch initialise 1x1 layers roughly)."""
    limit = float(np.sqrt(6.0 / (c_teacher + c_student)))
    return np.random.default_rng(seed).uniform(-limit, limit, (c_teacher, c_student)).astype(np.float32)
