"""KerasAdapter: slimkit's :class:`~slimkit.adapter.ModelAdapter` for Keras 3 and tf_keras models.

Keras is never imported here at module level: the registry imports this module only once the user
has loaded a Keras, and :meth:`KerasAdapter.accepts` looks only at ``sys.modules``. Each adapter
works with the keras module its model belongs to (``keras`` for Keras 3, ``tf_keras`` for Keras 2).

Pruning masks live on the adapter, not in the model: each masked kernel gets a non-trainable mask
variable and a variable constraint. Keras optimizers (both generations) apply variable constraints
after every update inside the compiled train step, so pruned weights stay exactly zero through
``model.fit`` -- slimkit's or the user's -- with any optimizer, momentum included.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from slimkit.adapter.saving import SavingAdapter
from slimkit.attention import AttentionBlock
from slimkit.adapter import FitFn, LayerInfo, ModelAdapter, QuantAdapter, StructureAdapter, TrainHooks
from slimkit.data import as_inputs, n_samples, take
from slimkit.errors import DataError, ExportError, UnsupportedModelError
from slimkit.graph import LayerGraph
from slimkit.labels import prepare_labels
from slimkit.adapter.collective import Collective
from slimkit.recipe import Distributed, FineTune

from . import data as kdata
from . import distributed as kdist
from . import export, predicting, rebuild, saving, training
from . import graph as kgraph
from .layer_copy import ZeroInit
from .layers import LayerEntry, attention_blocks, walk
from .node_kinds import fake_quant_role
from .masks import Mask, MaskConstraint, new_mask_variable, np_dtype, retrace_train_step, set_constraint
from .quiet import quiet
from .models import (
    clone_structure, describe, independent_copy, is_graph_model, keras_of,
)

if TYPE_CHECKING:
    from slimkit.quant.plan import QuantPlan, SiteParams

class KerasAdapter(ModelAdapter, StructureAdapter, QuantAdapter, SavingAdapter):
    """slimkit's adapter for ``keras.Model`` (Keras 3) and ``tf_keras.Model`` objects.

    Supports Sequential, Functional and subclassed models with one input and one output. Training
    and ONNX export need Keras's TensorFlow backend. Structured pruning (:meth:`graph`,
    :meth:`shrink`, :meth:`layer_outputs`) needs a plain Keras 3 Sequential or Functional model, and
    so does fake quantization (:meth:`with_fake_quant`; see :mod:`.quant`).
    """

    framework = "keras"

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        k = keras_of(model)
        if k is None:
            raise UnsupportedModelError(
                f"not a Keras model: {type(model).__module__}.{type(model).__qualname__}"
            )
        self._k: ModuleType = k
        self._entries: dict[str, LayerEntry] | None = None
        self._masks: dict[tuple[str, str], Mask] = {}  # (layer, neutral weight name) -> its mask
        # (shape past the batch axis, dtype) of inputs a subclassed model already ran on
        self._good_inputs: set[tuple[tuple[int, ...], str]] = set()
        # (walker, graph, trace, node -> call) of the model's call graph; structure never changes
        self._structure: tuple[kgraph.Walker, LayerGraph, kgraph.Trace, dict[str, str]] | None = None
        self._fake_quant: bool | None = None
        self._plain: dict[int, Any] = {}  # predict's traced function for a model under a strategy

    # -- discovery -------------------------------------------------------------------------
    @classmethod
    def accepts(cls, model: Any) -> bool:
        """True for instances of ``keras.Model`` or ``tf_keras.Model``, if already imported."""
        return keras_of(model) is not None

    @classmethod
    def copy_of(cls, model: Any) -> "KerasAdapter":
        """An adapter over an independent copy of ``model``.

        Sequential and Functional models are cloned from their layer configs (layer names are kept)
        and given the original's weights. Subclassed models are deep-copied, which Keras implements
        as an in-memory save and load.

        Raises:
            UnsupportedModelError: the model is not built, or cannot be copied.
        """
        with kdist.creating():  # under the running job's strategy, if any
            clone = independent_copy(model)
        kdist.same_weights(clone)
        return cls(clone)

    def layers(self) -> list[LayerInfo]:
        """Every layer holding weights, nested ones named ``outer/inner``; see :func:`layers.walk`."""
        return [entry.info for entry in self._walk().values()]

    # -- weights and masks ----------------------------------------------------------------
    def get_weights(self, name: str) -> dict[str, np.ndarray]:
        """The layer's weights by neutral name, native (Keras) layout, as float32 copies.

        Raises:
            KeyError: no layer has that name.
        """
        entry = self._entry(name)
        return {key: np.array(var.numpy(), dtype=np.float32) for key, var in entry.variables.items()}

    def set_weights(self, name: str, weights: dict[str, np.ndarray]) -> None:
        """Overwrites some weights of a layer. A masked kernel stays masked.

        Raises:
            KeyError: no layer has that name.
            KeyError: an unknown weight name.
            DataError: a shape that differs from the layer's.
        """
        entry = self._entry(name)
        arrays: dict[str, np.ndarray] = {}
        # Validate everything before assigning anything, so a bad call changes nothing.
        for key, value in weights.items():
            var = entry.variables.get(key)
            if var is None:
                raise KeyError(
                    f"layer {name!r} ({entry.info.type_name}) has no weight {key!r}; "
                    f"it has {', '.join(entry.variables)}"
                )
            arr = np.asarray(value)
            expected = tuple(int(d) for d in var.shape)
            if arr.shape != expected:
                raise DataError(
                    f"layer {name!r} weight {key!r}: expected shape {expected}, got {arr.shape}"
                )
            arrays[key] = arr
        for key, arr in arrays.items():
            var = entry.variables[key]
            mask = self._masks.get((name, key))
            if mask is not None:
                arr = np.where(mask.variable.numpy() != 0, arr, 0)
            var.assign(arr.astype(np_dtype(var)))

    def set_mask(self, name: str, mask: np.ndarray, weight: str = "kernel") -> None:
        """Zeros one weight matrix of the layer where ``mask`` is 0 and keeps it zero through later
        training.

        The first call for a matrix attaches a mask variable and a constraint (and, if the model
        already has a compiled train step, rebuilds it so the constraint is traced in); later calls
        only assign the mask variable, which a running ``fit`` sees at its next step.

        Args:
            name: the layer.
            mask: 0/1 array in the matrix's native shape.
            weight: the neutral weight name (``kernel``, or another of ``LayerInfo.maskable``).

        Raises:
            KeyError: no layer has that name.
            DataError: the layer has no such weight, or the mask's shape or values are wrong.
        """
        entry = self._entry(name)
        target = entry.variables.get(weight)
        if target is None or weight not in entry.info.maskable:
            raise DataError(
                f"layer {name!r} ({entry.info.type_name}) has no {weight} to mask; "
                f"its maskable weights: {', '.join(entry.info.maskable) or 'none'}"
            )
        mask = np.asarray(mask)
        expected = tuple(int(d) for d in target.shape)
        if mask.shape != expected:
            raise DataError(f"mask for layer {name!r} {weight}: expected its shape {expected}, got {mask.shape}")
        if not ((mask == 0) | (mask == 1)).all():  # np.isin sorts: seconds over a schedule
            raise DataError(f"mask for layer {name!r} must hold only 0 and 1")
        dtype = np_dtype(target)
        values = (mask != 0).astype(dtype)
        record = self._masks.get((name, weight))
        ops = sys.modules["tensorflow"] if self._k.__name__ == "tf_keras" else self._k.ops
        if record is None:
            label = name if weight == "kernel" else f"{name}/{weight}"
            with kdist.creating():
                variable = new_mask_variable(self._k, values, label)
            original = target.constraint
            set_constraint(target, MaskConstraint(variable, original, ops))
            record = self._masks[(name, weight)] = Mask(variable, target, original)
            retrace_train_step(self.model)
        else:
            record.variable.assign(values)
        # zero the kernel in the framework (no copy of it to numpy and back at each schedule step)
        target.assign(MaskConstraint(record.variable, None, ops)(ops.convert_to_tensor(target)))

    def state_arrays(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every variable of the model (masks and fake-quant state included) by its path, as numpy."""
        for variable in self.model.weights:  # tf_keras variables have a name, no path
            yield getattr(variable, "path", None) or variable.name, np.asarray(variable.numpy())

    def strip(self) -> Any:
        """A plain model with the pruned zeros in its weights and no slimkit constraint.

        Sequential and Functional models: a fresh clone (the adapter's model stays masked); a
        fake-quant model stays one (its sites and their state are kept). A graph model with no masks
        carries no constraint of slimkit's and is returned as it is (a clone of a ResNet50 costs
        seconds). Subclassed models cannot be cloned cheaply, so the adapter's own model is unmasked
        in place and returned; the adapter forgets its masks.
        """
        k = self._k
        if is_graph_model(self.model, k):
            if not self._masks:
                return self.model
            zeros = ZeroInit(k)
            with kdist.creating():
                clone = clone_structure(self.model, k, zeros)
            clone.set_weights(self.model.get_weights())
            zeros.restore()
            return clone
        for record in self._masks.values():
            set_constraint(record.kernel, record.original)
        self._masks.clear()
        # A traced train step would still apply the old constraints; make fit trace a new one.
        if getattr(self.model, "train_function", None) is not None:
            self.model.train_function = None
        return self.model

    # -- running ---------------------------------------------------------------------------
    def seed_framework(self, seed: int) -> None:
        """Seeds Python, numpy, TensorFlow and Keras's global seed generator."""
        self._k.utils.set_random_seed(seed)

    def check_input(self, x: np.ndarray, what: str) -> None:
        """Raises DataError naming ``what`` if ``x`` cannot be fed to the model (see
        :func:`.data.check_input`); UnsupportedModelError for several inputs or outputs."""
        kdata.check_input(self.model, x, what, self._good_inputs)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Inference-mode (``training=False``) outputs for ``x`` as float32; see ``predicting.py``."""
        x = as_inputs(x, "inputs")
        self.check_input(x, "inputs")
        return predicting.predict(self.model, x, max(1, int(batch_size)), self._plain)

    def num_batches(self, data: Any, batch_size: int) -> int:
        """Steps per epoch: ceil(len(x) / batch_size) for (x, y), the length of a dataset otherwise.

        Raises:
            DataError: ``data`` is empty, of unknown or infinite length, or of an unsupported type.
        """
        return kdata.num_batches(self._k, data, batch_size)

    def fit(self, data: Any, settings: FineTune, hooks: TrainHooks, fit_fn: FitFn | None = None,
            objective: Any = None) -> None:
        """Fine-tunes the model with ``model.fit``, driving ``hooks`` through :class:`SlimkitCallback`.

        Args:
            data: ``(x, y)`` numpy arrays, a batched finite ``tf.data.Dataset`` of ``(x, y)``, or a
                ``keras.utils.PyDataset``.
            settings: optimizer, loss and loop settings; ``batch_size`` and ``shuffle`` apply to
                numpy data only.
            hooks: called each step and epoch.
            fit_fn: if given, called as ``fit_fn(model, callback)`` instead; it must compile the
                model, and pass ``callback`` to its ``model.fit``.

        Raises:
            DataError: the data does not fit the model or the loss.
            UnsupportedModelError: Keras runs on a backend other than TensorFlow.
        """
        self._require_tensorflow("fine-tuning")
        if fit_fn is not None:
            model = self.model
            if objective is not None:  # the user compiles and fits a wrapper whose loss distills
                from . import distilling

                model = distilling.user_loop_model(self._k, self.model, objective)
            fit_fn(model, self._training_callback(hooks))
            return
        kind, x, y = kdata.split_data(self._k, data)
        if kind == "arrays":
            x, y = as_inputs(x, "train_data"), np.asarray(y)
            self.check_input(x, "train_data")
            y = prepare_labels(y, settings.loss, kdata.output_shape(self.model, x), n_samples(x))
        elif kind == "dataset":
            kdata.check_dataset(self.model, data, self.check_input, settings.loss)
        self.num_batches(data, settings.batch_size)  # rejects empty or endless data up front
        if settings.epochs == 0:
            hooks.begin(0)
            hooks.end()
            return
        # the runtime's own lines (a dataset notice at the first fit) stay out of the progress output
        with quiet(native=True):
            k = self._k
            if objective is not None:
                if kdist.active() is not None:
                    raise UnsupportedModelError("distillation under a tf.distribute strategy is not supported for "
                                                "Keras models; distill outside the strategy, or pass fit_fn")
                self._fit_distilling(kind, data, x, y, settings, hooks, objective)
                return
            def compile_model() -> None:
                self.model.compile(optimizer=training.make_optimizer(k, settings), loss=training.make_loss(k, settings),
                                   metrics=training.make_metrics(k, settings))

            callback = self._training_callback(hooks)
            job = kdist.active()
            if job is not None:  # the global batches split over the strategy's replicas
                if kind == "arrays":
                    order = self.batches(n_samples(x), settings)
                    plan = [idx for epoch in order.epochs(settings.epochs) for idx in epoch]
                    kdist.fit_arrays(self.model, k, job, x, y, plan, len(order), settings, callback, compile_model)
                else:
                    kdist.fit_dataset(self.model, k, job, data, settings, callback, compile_model)
                return
            compile_model()
            if kind == "arrays":
                # Batches in core's order (slimkit.batches), the same as every other adapter's.
                order = self.batches(n_samples(x), settings)
                self.model.fit(training.array_batches(x, y, order, settings.epochs), epochs=settings.epochs,
                               steps_per_epoch=len(order), shuffle=False, verbose=0, callbacks=[callback])
            else:
                import tensorflow as tf

                # Datasets and PyDatasets shuffle themselves; Keras warns if asked to. Only their first batch
                # was checked up front: a later one TensorFlow cannot train on (class ids out of range for the
                # loss, a shape that changes) surfaces here.
                try:
                    self.model.fit(data, epochs=settings.epochs, shuffle=False, verbose=0, callbacks=[callback])
                except tf.errors.InvalidArgumentError as exc:
                    first = (exc.message or str(exc)).strip().splitlines()[0][:300]
                    raise DataError(f"train_data: TensorFlow could not train on a batch after the first (which was "
                                    f"checked): {first}; check every batch's labels against loss "
                                    f"{settings.loss!r} and the model's outputs") from exc

    def _fit_distilling(self, kind: str, data: Any, x: Any, y: Any, settings: FineTune, hooks: TrainHooks,
                        objective: Any) -> None:
        """``fit`` of a wrapper whose loss is the distillation objective (``distilling.py``); batches carry
        the teacher's targets, by sample index for arrays (computed once), else computed per batch."""
        from . import distilling

        k = self._k
        objective.prepare(data)
        wrapper = distilling.distilling_model(k, self.model, objective, training.make_loss(k, settings))
        wrapper.compile(optimizer=training.make_optimizer(k, settings))
        if kind == "arrays":
            order = self.batches(n_samples(x), settings)
            steps = len(order)
            stream = training.array_batches(x, y, order, settings.epochs, with_index=True)
        else:
            steps = self.num_batches(data, settings.batch_size)
            stream = ((element[0], element[1], None) for _ in range(settings.epochs) for element in data)
        wrapper.fit(distilling.with_targets(stream, objective), epochs=settings.epochs, steps_per_epoch=steps,
                    shuffle=False, verbose=0, callbacks=[self._training_callback(hooks)])
        learned = iter(wrapper.hint_projections)
        objective.learned = [None if h.projection is None else np.asarray(next(learned)) for h in objective.hints]

    def _training_callback(self, hooks: TrainHooks) -> Any:
        """A ``SlimkitCallback`` (a ``keras.callbacks.Callback``) to pass to ``model.fit``."""
        return training.callback_class(self._k)(hooks)

    # -- structure (structured pruning) ----------------------------------------------------
    def graph(self, sample: np.ndarray | None = None) -> LayerGraph:
        """The model's call graph as a neutral :class:`slimkit.graph.LayerGraph`; see :mod:`.graph`.

        One node per layer call, named by layer path (``outer/inner`` for layers of a nested
        Sequential/Functional model called once, which is inlined); ``channels`` is the size of the
        output's last axis. Layers the graph cannot describe exactly (shared layers, channels-first
        layers, channel-mixing ops, custom layers, Keras ops called on tensors) become ``opaque``.
        ``sample`` is not needed: Keras graphs carry static shapes.

        Raises:
            UnsupportedModelError: a subclassed or tf_keras model, or several inputs or outputs.
        """
        return self._graph_parts()[1]

    def save_files(self, folder: Path) -> dict[str, Any]:
        """One ``.keras`` file; see ``saving.py``."""
        return saving.save_files(self.model, self._k, folder)

    @classmethod
    def load_files(cls, folder: Path, entry: dict[str, Any], model: Any = None) -> Any:
        """The ``.keras`` file read in safe mode (``model`` is not needed)."""
        return saving.load_files(folder, entry)

    # legacy HDF5 files too: Keras 3 reads their configs in safe mode as well (no Lambda bytecode)
    model_file_suffixes = (".keras", ".h5")

    @classmethod
    def load_file(cls, path: Path) -> Any:
        """A ``.keras`` (or legacy ``.h5``) file read in safe mode."""
        path = Path(path)
        if path.suffix.lower() == ".keras" and path.is_file() and not zipfile.is_zipfile(path):
            raise DataError(f"{path} is not a .keras file: Keras writes those as zip archives")
        return saving.load_files(path.parent, {"file": path.name, "keras": "keras"})

    def attention_blocks(self) -> list[AttentionBlock]:
        """MultiHeadAttention layers (heads of the query/key/value kernels and the output projection)."""
        return attention_blocks(list(self._walk().values()))

    def shrink(self, weights: dict[str, dict[str, np.ndarray]], drop: tuple[str, ...] = (),
               adopt: bool = False) -> "KerasAdapter":
        """An adapter over a rebuilt copy of the model in which the named layers hold ``weights``
        (assigned to new variables, copied whether or not the caller hands the arrays over: ``adopt``).

        Convolutions and dense layers get ``filters``/``units`` from their new kernels; batch norms,
        depthwise convolutions and all input features follow from the smaller inputs. A ``bias``
        given for a layer built with ``use_bias=False`` rebuilds it with a bias. Batch norms named in
        ``drop`` become ``keras.layers.Identity`` layers of the same name (their graph node turns
        ``elementwise``). Layer names are kept; the copy has no masks. This adapter's model is not
        modified.

        Raises:
            KeyError: a name is no layer of the model.
            ValueError: a weight does not fit its rebuilt layer, a layer given no weights would
                change shape, or ``drop`` names a layer that is not a batch norm.
            UnsupportedModelError: the model has no functional graph, cannot be rebuilt, or has
                fake-quant layers.
        """
        if self._has_fake_quant():
            raise UnsupportedModelError(
                f"cannot shrink the fake-quant Keras model {describe(self.model)}; shrink the float model "
                "before with_fake_quant(), or shrink without_fake_quant()"
            )
        walker, graph, trace, _ = self._graph_parts()
        arrays = {name: {key: np.asarray(v) for key, v in ws.items()} for name, ws in weights.items()}
        with kdist.creating():
            model = rebuild.shrink_model(self.model, self._k, graph, trace, self._walk(), arrays, tuple(drop))
        return self.derived(KerasAdapter(model))

    def layer_outputs(self, x: np.ndarray, names: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
        """Inference outputs of the named layers (or any graph node) for ``x``, channels on axis 1.

        Raises:
            KeyError: a name is no node of :meth:`graph`.
            DataError: ``x`` does not fit the model.
        """
        self.check_input(x, "inputs")
        walker, _, trace, source = self._graph_parts()
        _, dtype = kdata.input_spec(self.model, "reading layer outputs")
        return kgraph.collect_outputs(walker, trace, source, x, list(names), batch_size, dtype)

    def stream_outputs(self, x: np.ndarray, names: list[str], consume: Callable[[str, np.ndarray], None],
                       batch_size: int = 256) -> None:
        """Each tensor handed over as the call-by-call walk computes it: none held past its last reader."""
        self.check_input(x, "inputs")
        walker, _, trace, source = self._graph_parts()
        _, dtype = kdata.input_spec(self.model, "reading layer outputs")
        kgraph.stream_outputs(walker, trace, source, x, list(names), consume, batch_size, dtype)

    def weight_gradients(self, data: Any, settings: FineTune, batches: int) -> dict[str, dict[str, np.ndarray]]:
        """Mean gradients of the training loss over the first ``batches`` batches, in order.

        The loss is the one :meth:`fit` uses (plus the model's regularization losses), computed in
        inference mode: batch norms use their moving statistics, dropout is off. Learned weights
        only: trainable variables, plus kernel, bias, gamma and beta of layers frozen with
        ``trainable = False`` (never batch-norm statistics); native layout, neutral names. Up to
        ``batches`` batches of ``settings.batch_size`` for (x, y) arrays, the first ``batches`` of
        a dataset. No weight changes.

        Raises:
            DataError: the data does not fit the model or the loss, or is empty.
            UnsupportedModelError: Keras runs on a backend other than TensorFlow.
        """
        self._require_tensorflow("computing gradients")
        kind, x, y = kdata.split_data(self._k, data)
        count = max(0, int(batches))
        if kind == "arrays":
            x, y = as_inputs(x, "train_data"), np.asarray(y)
            self.check_input(x, "train_data")
            prepare_labels(y, settings.loss, kdata.output_shape(self.model, x), n_samples(x))
            size = int(settings.batch_size)
            stream: Any = ((kdata.keras_inputs(take(x, slice(i, i + size))), y[i:i + size])
                           for i in range(0, min(n_samples(x), count * size), size))
        elif kind == "dataset":
            kdata.check_dataset(self.model, data, self.check_input)
            stream = ((element[0], element[1]) for element in data.take(count))
        else:
            stream = ((data[i][0], data[i][1]) for i in range(min(count, len(data))))
        entries = list(self._walk().values())
        return training.weight_gradients(self.model, self._k, entries, stream, settings)

    # -- quantization ----------------------------------------------------------------------
    def with_fake_quant(self, plan: "QuantPlan") -> "KerasAdapter":
        """An adapter over a copy of the model with fake-quant at every site of ``plan``.

        Quantized layers become ``QuantLayer`` wrappers (same names), activation sites get
        ``FakeQuant`` layers named ``<layer>_fakequant`` (see :mod:`.quant`); a Sequential model
        comes back as a Functional one with the same layers. This adapter's masks are set on the
        copy, so pruned weights stay zero through QAT. This model is not modified.

        Raises:
            UnsupportedModelError: the model is subclassed or tf_keras, already fake-quantized, or a
                site cannot take a fake-quant op (a Keras op called on tensors, a shared layer, a
                layer that is not Conv/DepthwiseConv/Dense); the message names it.
        """
        k = self._k
        if k.__name__ != "keras" or not is_graph_model(self.model, k):
            raise UnsupportedModelError(
                f"fake quantization needs a Keras 3 Sequential or Functional model; {describe(self.model)} "
                "is subclassed or a tf_keras model (rebuild it with keras.Model(inputs, outputs))"
            )
        from . import quant  # imports Keras: only once quantization is used

        _, _, trace, source = self._graph_parts()
        with kdist.creating():
            model = quant.fake_quant_model(self.model, k, trace, source, self._walk(), plan)
        adapter = self.derived(KerasAdapter(model))
        for (name, weight), record in self._masks.items():
            adapter.set_mask(name, record.variable.numpy(), weight)
        return adapter

    def set_quant_params(self, params: dict[str, "SiteParams"]) -> None:
        """Sets scale and zero point of the named sites and switches them to ``fixed`` mode.

        ``lsq`` sites take the values as their starting point and keep learning (QAT initializes them
        from calibration this way); ``dynamic`` sites keep computing their range per batch. Site keys
        are activation node names, ``<layer>/kernel`` and ``<layer>/bias``. Every key is checked
        before anything is set.

        Raises:
            KeyError: a key names no site of the model.
            ValueError: parameters that do not fit their site (shape, axis, range, scale <= 0).
        """
        if not self._has_fake_quant():
            if params:
                raise KeyError(f"no quantization site {next(iter(params))!r} in Keras model {describe(self.model)}; "
                               "sites: none: call with_fake_quant first")
            return
        from . import quant

        if quant.set_params(self.model, params, describe(self.model)):
            self._retrace_all()

    def quant_state(self) -> dict[str, dict[str, np.ndarray]]:
        """Per site key: ``scale``/``zero_point`` (fixed, lsq), ``min``/``max`` (ema; NaN until
        updated), or {} (minmax, dynamic, and fixed or lsq sites not yet set or initialized)."""
        return {key: quantizer.state() for key, quantizer in self._quant_sites().items()}

    def quant_plan(self) -> "QuantPlan | None":
        """The plan of the fake-quant layers in the model (sites in their current modes); None for a
        float model. Read from the layers' configs, so it survives a ``.keras`` save and load."""
        if not self._has_fake_quant():
            return None
        from . import quant

        return quant.read_plan(self.model)

    def without_fake_quant(self, read_only: bool = False) -> "KerasAdapter":
        """An adapter over a float copy: fake-quant layers removed, wrapped layers unwrapped with
        their float weights (masks baked in, no mask constraints), names as in the plan. A Keras copy
        is a new model with its own variables whether or not the caller only reads it (``read_only``)."""
        if not self._has_fake_quant():
            if is_graph_model(self.model, self._k) and self._masks:
                return self.derived(KerasAdapter(self.strip()))  # a clone with the masks baked in
            return self.derived(KerasAdapter.copy_of(self.model))
        from . import quant

        with kdist.creating():
            return self.derived(KerasAdapter(quant.float_model(self.model, self._k)))

    def collective(self, settings: Distributed) -> Collective:
        """The job of the tf.distribute strategy the model was built under (or the one in scope): one rank
        per worker of a MultiWorkerMirroredStrategy, one for a strategy within a process; LOCAL without
        one. Training then runs under it; see :mod:`.distributed`."""
        return kdist.job_of(self.model, settings.timeout_s)

    # -- export ----------------------------------------------------------------------------
    def export_onnx(self, path: str, sample: np.ndarray, opset: int) -> None:
        """Writes the model to ``path`` as ONNX via tf2onnx: one graph input per model input (``input``
        for a single one, else the model's input names) of the declared type and shape, batch axis
        dynamic.

        Raises:
            DataError: ``sample`` does not fit the model.
            ExportError: tf2onnx cannot convert the model.
            UnsupportedModelError: Keras runs on a backend other than TensorFlow.
        """
        self._require_tensorflow("ONNX export")
        if self._has_fake_quant():
            raise ExportError(
                f"Keras model {describe(self.model)} has fake-quant layers; export its float copy "
                "(without_fake_quant()) and quantize the ONNX model, as slimkit's quantized export does"
            )
        sample = as_inputs(sample, "sample")
        self.check_input(sample, "sample")
        with quiet(native=True):
            export.export_onnx(self.model, path, sample, opset, kdata.declared_inputs(self.model))

    # -- internals -------------------------------------------------------------------------
    def _graph_parts(self) -> tuple[kgraph.Walker, LayerGraph, kgraph.Trace, dict[str, str]]:
        if self._structure is None:
            walker = kgraph.Walker(self.model, self._k)
            graph, trace, source = kgraph.build_graph(walker, self._walk())
            self._structure = (walker, graph, trace, source)
        return self._structure

    def _walk(self) -> dict[str, LayerEntry]:
        if self._entries is None:
            entries = walk(self.model, self._k)
            if self._has_fake_quant():
                from . import quant

                entries = quant.unwrap_entries(entries, self.model)
            self._entries = {entry.info.name: entry for entry in entries}
        return self._entries

    def _has_fake_quant(self) -> bool:
        """True if the model holds slimkit fake-quant layers (checked once: structure never changes)."""
        if self._fake_quant is None:
            flatten = getattr(self.model, "_flatten_layers", None)
            layers = flatten(include_self=False, recursive=True) if flatten is not None else []
            self._fake_quant = any(fake_quant_role(layer) is not None for layer in layers)
        return self._fake_quant

    def _quant_sites(self) -> dict[str, Any]:
        if not self._has_fake_quant():
            return {}
        from . import quant

        return quant.sites(self.model)

    def _retrace_all(self) -> None:
        """Drops compiled steps: a site's mode is Python state, read when a step is traced."""
        for attr in ("train_function", "test_function", "predict_function"):
            if getattr(self.model, attr, None) is not None:
                setattr(self.model, attr, None)

    def _entry(self, name: str) -> LayerEntry:
        entry = self._walk().get(name)
        if entry is None:
            raise KeyError(f"no layer named {name!r}")
        return entry

    def _require_tensorflow(self, what: str) -> None:
        if self._k.__name__ == "keras":
            backend = self._k.backend.backend()
            if backend != "tensorflow":
                raise UnsupportedModelError(
                    f"{what} of Keras models needs the TensorFlow backend; this Keras runs on "
                    f"{backend!r} (set KERAS_BACKEND=tensorflow before importing keras)"
                )
