"""Keras models under a user's ``tf.distribute`` strategy: the job's collective, and training split over
replicas.

slimkit adds no distribution layer of its own. :func:`job_of` finds the strategy the user's model was
built under (``model.distribute_strategy``) or the one in scope when ``compress`` is called:

* ``MirroredStrategy`` (or any other one-process strategy): the job has one rank (one process writes the
  files); tf.distribute runs each training step on every replica;
* ``MultiWorkerMirroredStrategy`` over several workers: one rank per worker (the chief, or worker 0 when
  there is no chief, is rank 0 and writes), numpy collectives over the strategy's own all-gather.

While compress runs (:func:`active`), every model the adapter makes (the working copy, fake-quant and
rebuilt copies, mask variables) is created under ``strategy.scope()``, and :func:`fit_arrays` fine-tunes
on the recipe's global batches: each global batch (the batch order of a single process) is split in
``num_replicas_in_sync`` consecutive parts, replica ``r`` training on part ``r``, every worker reading
its parts from its own copy of the data. Each sample's loss is weighted so that the gradient summed over
the replicas is the one of the global batch's mean loss, also when the batch does not split evenly.

Inference (predict, calibration passes, layer outputs) runs in each process on its own, outside
tf.distribute's replicas: no collective is hidden in it, so one rank may predict alone (the writer
verifying an export).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator

import numpy as np

from slimkit.adapter.collective import LOCAL, REDUCE_OPS, Collective, DistributedError, current
from slimkit.data import take
from slimkit.errors import DataError, UnsupportedModelError

#: dtypes the strategy's all-gather carries as they are; others travel as float64.
_GATHERED = ("float32", "float64", "int32", "int64")


class StrategyJob(Collective):
    """The ranks of a tf.distribute job: the workers of a ``MultiWorkerMirroredStrategy``, or one rank
    for a strategy within one process. ``strategy`` is what the adapter trains under."""

    def __init__(self, strategy: Any, rank: int = 0, size: int = 1, timeout_s: float = 300.0) -> None:
        self.strategy = strategy
        self.rank, self.size = int(rank), int(size)
        self.timeout_s = float(timeout_s)

    def all_reduce(self, value: np.ndarray, op: str, what: str) -> np.ndarray:
        if op not in REDUCE_OPS:
            raise ValueError(f"{what}: unknown reduction {op!r}; expected one of {', '.join(REDUCE_OPS)}")
        value = np.asarray(value)
        if self.size <= 1:
            return value
        rows = self._gather(value, what)
        reduced = {"sum": np.sum, "min": np.min, "max": np.max}[op](rows, axis=0)
        return np.asarray(reduced).astype(value.dtype, copy=False)

    def broadcast(self, value: np.ndarray, what: str) -> np.ndarray:
        value = np.asarray(value)
        if self.size <= 1:
            return value
        return self._gather(value, what)[0].astype(value.dtype, copy=False)

    def _gather(self, value: np.ndarray, what: str) -> np.ndarray:
        """Every worker's ``value``, stacked in rank order (one all-gather over the strategy)."""
        import tensorflow as tf

        sent = value if value.dtype.name in _GATHERED else value.astype(np.float64)
        tensor = tf.constant(sent.reshape((1,) + sent.shape))
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=self.timeout_s)

        def gather() -> Any:
            return tf.distribute.get_replica_context().all_gather(tensor, axis=0, options=options)

        from .quiet import quiet

        try:
            with quiet():  # "using CollectiveAllReduceStrategy eagerly has overhead": a handful of calls
                out = self.strategy.run(gather)
            rows = np.asarray(self.strategy.experimental_local_results(out)[0])
        except tf.errors.OpError as exc:
            first = (exc.message or str(exc)).strip().splitlines()[0][:300]
            raise DistributedError(
                f"{what}: rank {self.rank} of {self.size} got no answer from the other workers within "
                f"{self.timeout_s:g}s or one of them failed ({type(exc).__name__}: {first}); see the other "
                "ranks' own errors") from exc
        replicas = rows.shape[0] // self.size  # each worker's replicas sent the same value
        return rows.reshape((self.size, replicas) + sent.shape)[:, 0]


def user_strategy(model: Any) -> Any:
    """The non-default tf.distribute strategy the model was built under, or the one in scope; None
    without one (or without TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    strategy = getattr(model, "_distribute_strategy", None)  # Keras 3 (TensorFlow backend)
    if strategy is None:
        strategy = getattr(model, "_distribution_strategy", None)  # tf_keras
    if strategy is None and tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
    return strategy


def job_of(model: Any, timeout_s: float) -> Collective:
    """The job of the strategy in effect for ``model`` (see the module docstring); LOCAL without one.

    Raises:
        UnsupportedModelError: a ParameterServerStrategy (its coordinator runs training elsewhere).
    """
    strategy = user_strategy(model)
    if strategy is None:
        return LOCAL
    import tensorflow as tf

    name = type(strategy).__name__
    if "ParameterServer" in name or "CentralStorage" in name:
        raise UnsupportedModelError(
            f"Keras model under {name}: slimkit fine-tunes under MirroredStrategy and MultiWorkerMirroredStrategy "
            "(and one-device strategies); build the model under one of those, or outside any strategy")
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode():
        from tensorflow.python.distribute import multi_worker_util

        resolver = strategy.cluster_resolver
        spec, task_type, task_id = resolver.cluster_spec(), resolver.task_type, resolver.task_id
        return StrategyJob(strategy, multi_worker_util.id_in_cluster(spec, task_type, task_id),
                           multi_worker_util.worker_count(spec, task_type), timeout_s)
    return StrategyJob(strategy, 0, 1, timeout_s)


def active() -> StrategyJob | None:
    """The job of the running compress call when it runs under a strategy."""
    coll = current()
    return coll if isinstance(coll, StrategyJob) else None


def creating() -> Any:
    """Context in which new variables belong to the running job's strategy (nothing outside one)."""
    job = active()
    return job.strategy.scope() if job is not None else contextlib.nullcontext()


def same_weights(model: Any) -> None:
    """Gives every worker the writer's weights (one broadcast): the working copy starts alike everywhere
    even if the workers' models were initialised differently."""
    job = active()
    if job is None or job.size <= 1:
        return
    variables = list(model.weights)
    if not variables:
        return
    values = [np.asarray(v) for v in variables]
    flat = job.broadcast(np.concatenate([a.astype(np.float64).ravel() for a in values]), "the model's weights")
    at = 0
    for var, a in zip(variables, values):
        var.assign(flat[at:at + a.size].reshape(a.shape).astype(a.dtype))
        at += a.size


def runs_distributed(model: Any) -> bool:
    """True when Keras would run ``model``'s predict over a strategy's replicas."""
    if getattr(model, "_distribute_strategy", None) is not None:
        return True
    tf = sys.modules.get("tensorflow")
    return tf is not None and tf.distribute.has_strategy()


def plain_predict(model: Any, cache: dict[int, Any], x: Any, batch: int, n: int) -> Any:
    """The model's inference outputs computed in this process alone (no replicas, no collective), in
    batches of ``batch`` (``x`` has a multiple of it, or fewer); ``cache`` keeps the traced function."""
    import tensorflow as tf

    from .data import keras_inputs

    fn = cache.get(id(model))
    if fn is None:
        fn = cache[id(model)] = tf.function(lambda inputs: model(inputs, training=False))
    outs = [np.asarray(fn(keras_inputs(take(x, slice(i, i + batch)))))
            for i in range(0, max(n, 1), batch)]
    return np.concatenate(outs) if len(outs) > 1 else outs[0]


# ------------------------------------------------------------------------------------------- training
def _per_replica_batches(strategy: Any, x: Any, y: np.ndarray, plan: list[np.ndarray]) -> Any:
    """A distributed dataset giving replica ``r`` part ``r`` of every global batch of ``plan`` (with the
    sample weights that make the replicas' summed gradient the global batch mean's)."""
    import tensorflow as tf

    replicas = int(strategy.num_replicas_in_sync)

    def element(idx: np.ndarray, part: np.ndarray) -> tuple[Any, Any, Any]:
        xb = take(x, part)  # positional inputs as a tuple: tf.data cannot carry lists
        xb = xb if isinstance(xb, tuple) and len(xb) > 1 else (xb[0] if isinstance(xb, (tuple, list)) else xb)
        weight = np.full(len(part), len(part) * replicas / max(len(idx), 1), np.float32)
        return xb, y[part], weight

    first = element(plan[0], plan[0][:1])
    signature = tf.nest.map_structure(
        lambda a: tf.TensorSpec((None,) + np.shape(a)[1:], tf.as_dtype(np.asarray(a).dtype)), first)

    def dataset(context: Any) -> Any:
        local = replicas // context.num_input_pipelines
        mine = range(context.input_pipeline_id * local, (context.input_pipeline_id + 1) * local)

        def parts() -> Iterator[tuple[Any, Any, Any]]:
            for idx in plan:
                split = np.array_split(idx, replicas)
                for r in mine:
                    yield element(idx, split[r])

        return tf.data.Dataset.from_generator(parts, output_signature=signature)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset, options)


@contextlib.contextmanager
def _fitting(model: Any, k: Any, strategy: Any, sample: Any, sync_batchnorm: bool) -> Iterator[None]:
    """``model.fit`` under ``strategy``, with two Keras 3 (3.15) behaviours worked around and batch norms
    synchronised when asked:

    * with a model built under a strategy, fit first reads one batch of the distributed dataset and
      averages it over the replicas to build metrics and optimizer; under MultiWorkerMirroredStrategy
      that averaging fails (a tuple handed to ``strategy.reduce``), so they are built from ``sample``
      (shapes only);
    * under MultiWorkerMirroredStrategy fit averages each step's scalar logs with
      ``strategy.reduce(MEAN, axis=0)``, which fails on a scalar: the logs are handed over as 1-vectors.
    """
    import tensorflow as tf

    norms = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, k.layers.BatchNormalization) and hasattr(layer, "synchronized")] \
        if sync_batchnorm else []
    synchronized = [layer.synchronized for layer in norms]
    for layer in norms:
        layer.synchronized = True
    cls = type(model)
    if hasattr(cls, "_maybe_symbolic_build"):  # Keras 3
        model._maybe_symbolic_build = lambda iterator=None, data_batch=None: cls._maybe_symbolic_build(
            model, data_batch=sample)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        step = model.train_step
        model.train_step = lambda data: tf.nest.map_structure(
            lambda v: tf.reshape(v, (1,)) if getattr(v, "shape", None) is not None and v.shape.rank == 0 else v,
            step(data))
    try:
        yield
    finally:
        for attr in ("_maybe_symbolic_build", "train_step"):
            if attr in vars(model):
                delattr(model, attr)
        for layer, value in zip(norms, synchronized):
            layer.synchronized = value
        model.train_function = None  # the next fit traces a step of its own


@contextlib.contextmanager
def _lost_workers(job: StrategyJob) -> Iterator[None]:
    """Training's collectives failing (a worker stopped, or did not answer within the strategy's own
    communication timeout) as DistributedError naming this rank."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.AbortedError) as exc:
        if job.size <= 1:
            raise
        first = (exc.message or str(exc)).strip().splitlines()[0][:300]
        raise DistributedError(f"fine-tuning: rank {job.rank} of {job.size} lost the other workers during a training "
                               f"step ({type(exc).__name__}: {first}); see the other ranks' own errors") from exc


def fit_arrays(model: Any, k: Any, job: StrategyJob, x: Any, y: np.ndarray, plan: list[np.ndarray],
               steps: int, settings: Any, callback: Any, compile_model: Callable[[], None]) -> None:
    """``model.fit`` on numpy data under the job's strategy: the global batches of ``plan`` (every epoch's,
    in order) split over the replicas; ``steps`` per epoch, one schedule step per global batch.

    Raises:
        DataError: the global batch is smaller than the number of replicas.
        DistributedError: the workers' data would give different numbers of steps.
    """
    strategy = job.strategy
    replicas = int(strategy.num_replicas_in_sync)
    if int(settings.batch_size) < replicas:
        raise DataError(f"fine_tune.batch_size: {settings.batch_size} is the global batch, split over the "
                        f"strategy's {replicas} replicas; use at least {replicas}")
    if job.size > 1 and not job.agree([np.array([len(plan), steps, sum(len(i) for i in plan)], np.int64)],
                                      "checking that every worker has the same train_data"):
        samples = sum(len(i) for i in plan) // max(settings.epochs, 1)
        raise DistributedError(f"train_data: rank {job.rank} has {samples} samples, another rank a different "
                               "number; every worker passes the same train_data (each trains on its replicas' "
                               "share of every global batch)")
    with strategy.scope():
        compile_model()
    data = _per_replica_batches(strategy, x, y, plan)
    first = take(x, plan[0][:1])
    first = first if isinstance(first, tuple) and len(first) > 1 else (
        first[0] if isinstance(first, (tuple, list)) else first)
    sample = (first, y[plan[0][:1]], np.ones(1, np.float32))
    with _fitting(model, k, strategy, sample, bool(settings.sync_batchnorm)), _lost_workers(job):
        model.fit(data, epochs=settings.epochs, steps_per_epoch=steps, shuffle=False, verbose=0,
                  callbacks=[callback])


def fit_dataset(model: Any, k: Any, job: StrategyJob, data: Any, settings: Any, callback: Any,
                compile_model: Callable[[], None]) -> None:
    """``model.fit`` on a user's dataset under the job's strategy (tf.distribute splits its batches)."""
    with job.strategy.scope():
        compile_model()
    first = data[0] if hasattr(data, "__getitem__") and not hasattr(data, "element_spec") else next(iter(data))
    with _fitting(model, k, job.strategy, tuple(first), bool(settings.sync_batchnorm)), _lost_workers(job):
        model.fit(data, epochs=settings.epochs, shuffle=False, verbose=0, callbacks=[callback])
