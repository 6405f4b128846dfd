"""Fine-tuning pieces for Keras: optimizer, loss and metric from a recipe, and the hooks callback.

The keras module (``keras`` or ``tf_keras``) is always passed in, so importing this module loads
no framework. The callback class must subclass that module's ``Callback``, so it is defined on
first use per module by :func:`callback_class`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from slimkit.adapter import TrainHooks
from slimkit.batches import ArrayBatches
from slimkit.data import take
from slimkit.errors import DataError
from slimkit.recipe import FineTune

from .data import keras_inputs

_CALLBACK_CLASSES: dict[str, type] = {}


def make_optimizer(k: ModuleType, settings: FineTune) -> Any:
    """The recipe's optimizer: slimkit's update rule (the same formulas as PyTorch) in Keras."""
    from .optimizer import make_optimizer as rule_optimizer

    return rule_optimizer(k, settings.rule(), settings.learning_rate)


def array_batches(x: np.ndarray, y: np.ndarray, order: ArrayBatches, epochs: int, with_index: bool = False) -> Any:
    """A generator of ``epochs`` epochs of (x, y) batches in core's order, for
    ``fit(..., steps_per_epoch=len(order))``.

    A plain generator rather than a ``PyDataset``: Keras reads a PyDataset through a thread pool
    that can serve an epoch's last batch after ``on_epoch_end`` moved on, and out of order. The
    epochs are drawn up front so the order's generator advances exactly ``epochs`` times.
    """
    plan = list(order.epochs(epochs))

    def batches() -> Any:
        for epoch in plan:
            for idx in epoch:
                xb = take(x, idx)  # positional inputs as a tuple: tf.data cannot carry lists
                xb = xb if isinstance(xb, tuple) and len(xb) > 1 else keras_inputs(xb)
                yield (xb, y[idx], idx) if with_index else (xb, y[idx])

    return batches()


def make_loss(k: ModuleType, settings: FineTune) -> Any:
    """The loss named by ``settings.loss``; ``from_logits`` applies to the cross-entropies."""
    losses = k.losses
    if settings.loss == "sparse_categorical_crossentropy":
        return losses.SparseCategoricalCrossentropy(from_logits=settings.from_logits)
    if settings.loss == "categorical_crossentropy":
        return losses.CategoricalCrossentropy(from_logits=settings.from_logits)
    if settings.loss == "binary_crossentropy":
        return losses.BinaryCrossentropy(from_logits=settings.from_logits)
    return losses.MeanSquaredError()


def make_metrics(k: ModuleType, settings: FineTune) -> list[Any]:
    """An ``accuracy`` metric matching the loss; none for mse.

    Explicit metric objects rather than the string ``"accuracy"``: Keras's guess thresholds binary
    outputs at 0.5, which is wrong for logits.
    """
    m = k.metrics
    if settings.loss == "sparse_categorical_crossentropy":
        return [m.SparseCategoricalAccuracy(name="accuracy")]
    if settings.loss == "categorical_crossentropy":
        return [m.CategoricalAccuracy(name="accuracy")]
    if settings.loss == "binary_crossentropy":
        return [m.BinaryAccuracy(name="accuracy", threshold=0.0 if settings.from_logits else 0.5)]
    return []


def callback_class(k: ModuleType) -> type:
    """``SlimkitCallback`` for the keras module ``k``, defined once per module."""
    cls = _CALLBACK_CLASSES.get(k.__name__)
    if cls is None:
        cls = _define_callback(k.callbacks.Callback)
        _CALLBACK_CLASSES[k.__name__] = cls
    return cls


def _define_callback(base: type) -> type:
    class SlimkitCallback(base):  # type: ignore[misc, valid-type]
        """Drives slimkit's :class:`TrainHooks` from ``model.fit``.

        Pass it in ``model.fit(callbacks=[...])``. Steps count optimizer steps from 1 across all
        epochs of one ``fit`` call; epochs count from 1 likewise, whatever ``initial_epoch`` is.
        """

        # Hooks may change masks between steps, so Keras must call them in step order, never from a
        # background thread (Keras 3 dispatches callbacks asynchronously only if they opt in).
        async_safe = False

        def __init__(self, hooks: TrainHooks) -> None:
            super().__init__()
            self.hooks = hooks
            self._reset()

        def _reset(self) -> None:
            self._begun = False
            self._done = 0  # optimizer steps reported so far
            self._epoch_base = 0  # steps done before the current epoch
            self._epochs = 0

        def _begin(self, first_epoch: int) -> None:
            params = self.params or {}
            steps = params.get("steps")
            if steps is None:
                raise DataError(
                    "train_data: the number of steps per epoch is unknown; pass steps_per_epoch to "
                    "fit, or use data of known length (numpy arrays, a finite tf.data.Dataset)"
                )
            epochs = int(params.get("epochs") or 0)
            self._begun = True
            self.hooks.begin(max(0, epochs - first_epoch) * int(steps))

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self._reset()

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            # begin() waits for the first epoch: only then is initial_epoch known, and the total
            # is (epochs - initial_epoch) * steps. Still before any step, as TrainHooks promises.
            if not self._begun:
                self._begin(int(epoch))
            self._epoch_base = self._done

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            # With steps_per_execution > 1 Keras reports only the last batch of each execution;
            # report every step in between so schedules that count steps see each one.
            # Keras may report a batch index past the epoch's end when the last execution is short.
            steps = (self.params or {}).get("steps")
            current = self._epoch_base + (int(batch) + 1 if steps is None else min(int(batch) + 1, int(steps)))
            while self._done < current:
                self._done += 1
                self.hooks.step_end(self._done)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._epochs += 1
            loss = _floats(logs).get("loss")
            # once per epoch, not per step: a diverged run stops here instead of returning NaN weights
            check_finite_weights(self.model, f"after epoch {self._epochs}" +
                                 (f" (mean loss {loss:.4g})" if loss is not None else ""))
            self.hooks.epoch_end(self._epochs, _floats(logs))

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            if not self._begun:  # fit ran no epoch at all
                self._begun = True
                self.hooks.begin(0)
            self.hooks.end()

    SlimkitCallback.__module__ = __name__
    SlimkitCallback.__qualname__ = "SlimkitCallback"
    return SlimkitCallback


def check_finite_weights(model: Any, when: str) -> None:
    """Raises DataError naming the variable when training left NaN or infinite values in a weight (a
    diverged run); ``when`` says at which point (``after epoch 2``).

    Checked: trainable variables and batch-norm moving statistics, what training moves; other
    non-trainable state is left out (a fake-quant site keeps NaN in its range until it has seen data).

    Raises:
        DataError: a trained variable holds a non-finite value.
    """
    for variable in getattr(model, "weights", None) or []:
        name = getattr(variable, "path", None) or variable.name
        if not variable.trainable and not name.rsplit("/", 1)[-1].split(":")[0].startswith("moving_"):
            continue
        value = np.asarray(variable)
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            layer, _, attr = name.rpartition("/")  # Keras 3 paths: model/layer/kernel
            raise DataError(
                f"train_data: fine-tuning produced non-finite weights {when}: layer {layer!r} {attr} holds "
                f"{int(value.size - np.count_nonzero(np.isfinite(value)))} NaN or infinite value(s) of {value.size}; "
                "lower fine_tune.learning_rate, or check train_data for extreme values"
            )


def _floats(logs: dict[str, Any] | None) -> dict[str, float]:
    """Scalar logs as Python floats; anything that is not a scalar is dropped."""
    out: dict[str, float] = {}
    for key, value in (logs or {}).items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


#: Weights learned by training (not statistics): their gradients are reported even for frozen layers.
_LEARNED = ("kernel", "bias", "gamma", "beta")


def weight_gradients(model: Any, k: ModuleType, entries: list[Any], batches: Any,
                     settings: FineTune) -> dict[str, dict[str, Any]]:
    """Gradients of the training loss w.r.t. every learned layer weight, averaged over ``batches``.

    Learned weights are the trainable variables plus the kernel, bias, gamma and beta of layers
    frozen with ``trainable = False`` (a frozen backbone is still pruned, and Taylor scores need
    its gradients); batch-norm moving statistics are not. The loss is the one ``fit`` compiles
    (:func:`make_loss`) plus the model's own losses (regularizers), computed in inference mode
    (``training=False``): batch norms use their moving statistics and dropout is off, so the
    gradients are deterministic and no statistic is updated. No weight changes.

    Args:
        model: the Keras model (TensorFlow backend).
        k: its keras module.
        entries: :class:`layers.LayerEntry` objects whose variables to differentiate.
        batches: iterable of (x, y) batches.
        settings: the loss settings.

    Returns:
        layer name -> neutral weight name -> float32 gradient in the native layout.

    Raises:
        DataError: ``batches`` yields nothing.
    """
    import numpy as np
    import tensorflow as tf

    loss_fn = make_loss(k, settings)
    targets = [(e.info.name, key, var) for e in entries for key, var in e.variables.items()
               if var.trainable or (e.info.kind != "other" and key in _LEARNED)]
    # The tf.Variable behind each variable (Keras 3 wraps it; tf_keras variables are tf.Variables).
    handles = [var if isinstance(var, tf.Variable) else var.value for _, _, var in targets]
    sums: list[Any] = [None] * len(targets)
    used = 0
    for x, y in batches:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(handles)
            pred = model(x, training=False)
            loss = tf.cast(loss_fn(y, pred), tf.float32)
            extra = list(model.losses)
            if extra:
                loss = loss + tf.add_n([tf.cast(v, tf.float32) for v in extra])
        grads = tape.gradient(loss, handles)
        for i, (g, (_, _, var)) in enumerate(zip(grads, targets)):
            value = np.zeros(tuple(var.shape), np.float32) if g is None else np.asarray(
                tf.convert_to_tensor(g), dtype=np.float32)
            sums[i] = value if sums[i] is None else sums[i] + value
        used += 1
    if used == 0:
        raise DataError("train_data: no batches to compute gradients on")
    out: dict[str, dict[str, Any]] = {}
    for (name, key, _), total in zip(targets, sums):
        out.setdefault(name, {})[key] = (total / used).astype(np.float32)
    return out
