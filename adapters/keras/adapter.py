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

import copy
import math
import re
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from slimkit.adapter import FitFn, LayerInfo, ModelAdapter, QuantAdapter, StructureAdapter, TrainHooks
from slimkit.errors import DataError, ExportError, UnsupportedModelError
from slimkit.graph import LayerGraph
from slimkit.labels import prepare_labels
from slimkit.recipe import FineTune

from . import export, rebuild, training
from . import graph as kgraph
from .layers import LayerEntry, walk

if TYPE_CHECKING:
    from slimkit.quant.plan import QuantPlan, SiteParams

# The keras modules an adapter can serve, in the order accepts() tries them.
_KERAS_MODULES = ("keras", "tf_keras")


def _keras_of(model: Any) -> ModuleType | None:
    """The already-loaded keras module whose ``Model`` class ``model`` is an instance of."""
    for name in _KERAS_MODULES:
        module = sys.modules.get(name)
        model_cls = getattr(module, "Model", None) if module is not None else None
        if isinstance(model_cls, type) and isinstance(model, model_cls):
            return module
    return None


def _describe(model: Any) -> str:
    """``'name' (ClassName)`` for messages."""
    return f"{getattr(model, 'name', '?')!r} ({type(model).__qualname__})"


def _is_graph_model(model: Any, k: ModuleType) -> bool:
    """True for plain Sequential and Functional models, whose structure Keras can clone from configs.

    Subclasses of either (a class deriving from ``keras.Model`` that calls ``super().__init__(inputs,
    outputs)``) are excluded: ``clone_model`` would rebuild them as the base class.
    """
    return kgraph.is_graph_model(model, k)


def _np_dtype(variable: Any) -> np.dtype:
    """A variable's dtype as numpy's (Keras 3 uses strings, tf_keras ``tf.DType``)."""
    dtype = variable.dtype
    try:
        return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
    except TypeError:
        return np.dtype(np.float32)  # exotic dtypes: let the variable's own assign() cast


def _set_constraint(variable: Any, fn: Callable[[Any], Any] | None) -> None:
    """Sets a variable's constraint; tf.Variable (tf_keras) exposes it read-only."""
    try:
        variable.constraint = fn
    except AttributeError:
        variable._constraint = fn


def _format_shape(shape: tuple[int | None, ...]) -> str:
    """``(batch, 8, 8, 1)``: the batch axis by name, unknown axes as None."""
    return "(" + ", ".join(["batch", *(str(d) for d in shape[1:])]) + ("," if len(shape) == 1 else "") + ")"


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line, for wrapping it in slimkit's messages.

    Keras wraps layer errors as "Exception encountered when calling X.call()." followed by the real
    cause in ANSI bold, then a dump of the call arguments; the cause is the part worth showing.
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    if any(line.startswith("Arguments received") for line in lines):  # Keras's call-argument dump
        lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("Arguments received"))]
    useful = [line for line in lines if not line.startswith("Exception encountered")] or lines
    # Keras wraps long messages over several lines; keep whole sentences, up to a readable length.
    text = " ".join(useful)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


class _MaskConstraint:
    """A kernel constraint: the layer's own constraint (if any), then zero where the mask is 0.

    ``where`` rather than a product so pruned entries are +0.0 even for negative weights.
    ``ops`` is ``keras.ops`` (Keras 3) or ``tensorflow`` (tf_keras); both name these functions alike.
    """

    def __init__(self, mask: Any, original: Callable[[Any], Any] | None, ops: Any) -> None:
        self.mask = mask
        self.original = original
        self._ops = ops

    def __call__(self, w: Any) -> Any:
        if self.original is not None:
            w = self.original(w)
        ops = self._ops
        return ops.where(ops.not_equal(self.mask, 0), w, ops.zeros_like(w))


@dataclass
class _Mask:
    """One masked kernel: the mask variable, the kernel, and the constraint the kernel had before."""

    variable: Any
    kernel: Any
    original: Callable[[Any], Any] | None


class KerasAdapter(ModelAdapter, StructureAdapter, QuantAdapter):
    """slimkit's adapter for ``keras.Model`` (Keras 3) and ``tf_keras.Model`` objects.

    Supports Sequential, Functional and subclassed models with one input and one output. Training
    and ONNX export need Keras's TensorFlow backend. Structured pruning (:meth:`graph`,
    :meth:`shrink`, :meth:`layer_outputs`) needs a plain Keras 3 Sequential or Functional model, and
    so does fake quantization (:meth:`with_fake_quant`; see :mod:`.quant`).
    """

    framework = "keras"

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        k = _keras_of(model)
        if k is None:
            raise UnsupportedModelError(
                f"not a Keras model: {type(model).__module__}.{type(model).__qualname__}"
            )
        self._k: ModuleType = k
        self._entries: dict[str, LayerEntry] | None = None
        self._masks: dict[str, _Mask] = {}
        # (shape past the batch axis, dtype) of inputs a subclassed model already ran on
        self._good_inputs: set[tuple[tuple[int, ...], str]] = set()
        # (walker, graph, trace, node -> call) of the model's call graph; structure never changes
        self._structure: tuple[kgraph.Walker, LayerGraph, kgraph.Trace, dict[str, str]] | None = None
        self._fake_quant: bool | None = None

    # -- discovery -------------------------------------------------------------------------
    @classmethod
    def accepts(cls, model: Any) -> bool:
        """True for instances of ``keras.Model`` or ``tf_keras.Model``, if already imported."""
        return _keras_of(model) is not None

    @classmethod
    def copy_of(cls, model: Any) -> "KerasAdapter":
        """An adapter over an independent copy of ``model``.

        Sequential and Functional models are cloned from their layer configs (layer names are kept)
        and given the original's weights. Subclassed models are deep-copied, which Keras implements
        as an in-memory save and load.

        Raises:
            UnsupportedModelError: the model is not built, or cannot be copied.
        """
        k = _keras_of(model)
        if k is None:
            raise UnsupportedModelError(
                f"not a Keras model: {type(model).__module__}.{type(model).__qualname__}"
            )
        if not getattr(model, "built", False):
            raise UnsupportedModelError(
                f"Keras model {_describe(model)} is not built; call it on data or pass input shape "
                "(start it with keras.Input(shape=...), or call model.build(input_shape))"
            )
        clone = _clone_graph(model, k) if _is_graph_model(model, k) else _deep_copy(model, k)
        _check_independent(model, clone)
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
            mask = self._masks.get(name)
            if key == "kernel" and mask is not None:
                arr = np.where(mask.variable.numpy() != 0, arr, 0)
            var.assign(arr.astype(_np_dtype(var)))

    def set_mask(self, name: str, mask: np.ndarray) -> None:
        """Zeros the layer's kernel where ``mask`` is 0 and keeps it zero through later training.

        The first call for a layer attaches a mask variable and a kernel constraint (and, if the
        model already has a compiled train step, rebuilds it so the constraint is traced in); later
        calls only assign the mask variable, which a running ``fit`` sees at its next step.

        Args:
            name: the layer.
            mask: 0/1 array in the kernel's native shape.

        Raises:
            KeyError: no layer has that name.
            DataError: the layer has no kernel, or the mask's shape or values are wrong.
        """
        entry = self._entry(name)
        kernel = entry.variables.get("kernel")
        if kernel is None:
            raise DataError(f"layer {name!r} ({entry.info.type_name}) has no kernel to mask")
        mask = np.asarray(mask)
        expected = tuple(int(d) for d in kernel.shape)
        if mask.shape != expected:
            raise DataError(f"mask for layer {name!r}: expected the kernel's shape {expected}, got {mask.shape}")
        if not np.isin(mask, (0, 1)).all():
            raise DataError(f"mask for layer {name!r} must hold only 0 and 1")
        dtype = _np_dtype(kernel)
        values = (mask != 0).astype(dtype)
        record = self._masks.get(name)
        if record is None:
            variable = self._new_mask_variable(values, name)
            original = kernel.constraint
            ops = sys.modules["tensorflow"] if self._k.__name__ == "tf_keras" else self._k.ops
            _set_constraint(kernel, _MaskConstraint(variable, original, ops))
            self._masks[name] = _Mask(variable, kernel, original)
            self._retrace_train_step()
        else:
            record.variable.assign(values)
        kernel.assign(np.where(values != 0, kernel.numpy(), 0).astype(dtype))

    def strip(self) -> Any:
        """A plain model with the pruned zeros in its weights and no slimkit constraint.

        Sequential and Functional models: a fresh clone (the adapter's model stays masked); a
        fake-quant model stays one (its sites and their state are kept). Subclassed models cannot
        be cloned cheaply, so the adapter's own model is unmasked in place and returned; the adapter
        forgets its masks.
        """
        k = self._k
        if _is_graph_model(self.model, k):
            clone = _clone_structure(self.model, k)
            clone.set_weights(self.model.get_weights())
            return clone
        for record in self._masks.values():
            _set_constraint(record.kernel, record.original)
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
        """Raises DataError naming ``what`` if ``x`` cannot be fed to the model.

        Checks against the declared input shape where the model has one (Sequential, Functional);
        a subclassed model is run once on ``x[:1]`` instead.

        Raises:
            DataError: ``x`` is not a non-empty numeric numpy array of the model's input shape.
            UnsupportedModelError: the model has several inputs or outputs.
        """
        if not isinstance(x, np.ndarray):
            raise DataError(f"{what}: expected a numpy array, got {type(x).__module__}.{type(x).__qualname__}")
        if x.dtype.kind not in "biuf":
            raise DataError(f"{what}: expected numbers, got an array of dtype {x.dtype}")
        if x.ndim == 0 or x.shape[0] == 0:
            raise DataError(f"{what}: no samples (shape {tuple(x.shape)})")
        shape, _ = self._input_spec()
        if shape is not None:
            if x.ndim != len(shape) or any(e is not None and e != a for e, a in zip(shape[1:], x.shape[1:])):
                raise DataError(f"{what}: expected shape {_format_shape(shape)}, got {tuple(x.shape)}")
            return
        key = (tuple(x.shape[1:]), x.dtype.str)
        if key in self._good_inputs:
            return
        try:
            out = self.model(x[:1], training=False)
        except Exception as exc:  # any failure to run on this shape is the data's fault
            raise DataError(
                f"{what}: the model cannot run on inputs of shape {tuple(x.shape)} ({_one_line(exc)})"
            ) from exc
        self._single_output(out)
        self._good_inputs.add(key)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Inference-mode (``training=False``) outputs for ``x`` as float32."""
        self.check_input(x, "inputs")
        out = self.model.predict(x, batch_size=int(batch_size), verbose=0)
        self._single_output(out)
        return np.asarray(out, dtype=np.float32)

    def num_batches(self, data: Any, batch_size: int) -> int:
        """Steps per epoch: ceil(len(x) / batch_size) for (x, y), the length of a dataset otherwise.

        Raises:
            DataError: ``data`` is empty, of unknown or infinite length, or of an unsupported type.
        """
        kind, x, _ = self._split_data(data)
        if kind == "arrays":
            if len(x) == 0:
                raise DataError(f"train_data: no samples (x has shape {np.shape(x)})")
            return math.ceil(len(x) / int(batch_size))
        if kind == "dataset":
            import tensorflow as tf  # loaded already: data is a tf.data.Dataset

            n = int(data.cardinality())
            if n in (int(tf.data.INFINITE_CARDINALITY), int(tf.data.UNKNOWN_CARDINALITY)):
                raise DataError(
                    "train_data: the tf.data.Dataset has "
                    f"{'infinite' if n == int(tf.data.INFINITE_CARDINALITY) else 'unknown'} length; "
                    "pass a finite, batched dataset (use .take(n), or .apply(tf.data.experimental."
                    "assert_cardinality(n)) after operations such as filter)"
                )
        else:
            n = len(data)
        if n == 0:
            raise DataError("train_data: the dataset is empty")
        return n

    def fit(self, data: Any, settings: FineTune, hooks: TrainHooks, fit_fn: FitFn | None = None) -> None:
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
            fit_fn(self.model, self._training_callback(hooks))
            return
        kind, x, y = self._split_data(data)
        if kind == "arrays":
            x, y = np.asarray(x), np.asarray(y)  # lists are array-likes too, as core's checks accept
            y = self._check_arrays(x, y, settings)
        elif kind == "dataset":
            self._check_dataset(data)
        self.num_batches(data, settings.batch_size)  # rejects empty or endless data up front
        if settings.epochs == 0:
            hooks.begin(0)
            hooks.end()
            return
        k = self._k
        self.model.compile(
            optimizer=training.make_optimizer(k, settings),
            loss=training.make_loss(k, settings),
            metrics=training.make_metrics(k, settings),
        )
        callback = self._training_callback(hooks)
        if kind == "arrays":
            # Batches in core's order (slimkit.batches), the same as every other adapter's.
            order = self.batches(len(x), settings)
            self.model.fit(training.array_batches(x, y, order, settings.epochs), epochs=settings.epochs,
                           steps_per_epoch=len(order), shuffle=False, verbose=0, callbacks=[callback])
        else:
            # Datasets and PyDatasets shuffle themselves; Keras warns if asked to.
            self.model.fit(data, epochs=settings.epochs, shuffle=False, verbose=0, callbacks=[callback])

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

    def shrink(self, weights: dict[str, dict[str, np.ndarray]], drop: tuple[str, ...] = ()) -> "KerasAdapter":
        """An adapter over a rebuilt copy of the model in which the named layers hold ``weights``.

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
                f"cannot shrink the fake-quant Keras model {_describe(self.model)}; shrink the float model "
                "before with_fake_quant(), or shrink without_fake_quant()"
            )
        walker, graph, trace, _ = self._graph_parts()
        arrays = {name: {key: np.asarray(v) for key, v in ws.items()} for name, ws in weights.items()}
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
        _, dtype = self._input_spec()
        return kgraph.collect_outputs(walker, trace, source, x, list(names), batch_size, dtype)

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
        kind, x, y = self._split_data(data)
        count = max(0, int(batches))
        if kind == "arrays":
            x, y = np.asarray(x), np.asarray(y)
            self._check_arrays(x, y, settings)
            size = int(settings.batch_size)
            stream: Any = ((x[i:i + size], y[i:i + size]) for i in range(0, min(len(x), count * size), size))
        elif kind == "dataset":
            self._check_dataset(data)
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
        if k.__name__ != "keras" or not _is_graph_model(self.model, k):
            raise UnsupportedModelError(
                f"fake quantization needs a Keras 3 Sequential or Functional model; {_describe(self.model)} "
                "is subclassed or a tf_keras model (rebuild it with keras.Model(inputs, outputs))"
            )
        from . import quant  # imports Keras: only once quantization is used

        _, _, trace, source = self._graph_parts()
        model = quant.fake_quant_model(self.model, k, trace, source, self._walk(), plan)
        adapter = self.derived(KerasAdapter(model))
        for name, record in self._masks.items():
            adapter.set_mask(name, record.variable.numpy())
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
        found = self._quant_sites()
        for key in params:
            if key not in found:
                known = ", ".join(sorted(found)) or "none: call with_fake_quant first"
                raise KeyError(f"no quantization site {key!r} in Keras model {_describe(self.model)}; sites: {known}")
        for key, value in params.items():
            found[key].check_params(value)
        changed = False
        for key, value in params.items():
            changed |= found[key].set_params(value)
        if changed:
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

    def without_fake_quant(self) -> "KerasAdapter":
        """An adapter over a float copy: fake-quant layers removed, wrapped layers unwrapped with
        their float weights (masks baked in, no mask constraints), names as in the plan."""
        if not self._has_fake_quant():
            if _is_graph_model(self.model, self._k):
                return self.derived(KerasAdapter(self.strip()))
            return self.derived(KerasAdapter.copy_of(self.model))
        from . import quant

        return self.derived(KerasAdapter(quant.float_model(self.model, self._k)))

    # -- export ----------------------------------------------------------------------------
    def export_onnx(self, path: str, sample: np.ndarray, opset: int) -> None:
        """Writes the model to ``path`` as ONNX (input ``input``, dynamic batch axis) via tf2onnx.

        The ONNX input is always float32, as slimkit verifies exports with float32 samples; a model
        declaring an integer input (token ids) gets a Cast to that type inside the graph.

        Raises:
            DataError: ``sample`` does not fit the model.
            ExportError: tf2onnx cannot convert the model.
            UnsupportedModelError: Keras runs on a backend other than TensorFlow.
        """
        self._require_tensorflow("ONNX export")
        if self._has_fake_quant():
            raise ExportError(
                f"Keras model {_describe(self.model)} has fake-quant layers; export its float copy "
                "(without_fake_quant()) and quantize the ONNX model, as slimkit's quantized export does"
            )
        self.check_input(sample, "sample")
        _, dtype = self._input_spec()
        cast_to = dtype if dtype is not None and np.dtype(dtype).kind in "iu" else None
        export.export_onnx(self.model, path, sample, opset, cast_to)

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
            self._fake_quant = any(kgraph.fake_quant_role(layer) is not None for layer in layers)
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

    def _new_mask_variable(self, values: np.ndarray, name: str) -> Any:
        """A non-trainable variable holding ``values``, tracked by no layer (weights lists stay as they were)."""
        var_name = "slimkit_mask_" + name.replace("/", "_")
        if self._k.__name__ == "tf_keras":
            import tensorflow as tf  # loaded already: tf_keras imports it

            return tf.Variable(values, trainable=False, name=var_name)
        return self._k.Variable(values, trainable=False, autocast=False, name=var_name)

    def _retrace_train_step(self) -> None:
        """Rebuilds a compiled train step so it applies a newly attached constraint.

        Keras reads ``variable.constraint`` while tracing, so a step traced before the constraint
        existed would not apply it. Keras's fit loop looks ``model.train_function`` up anew each
        step, so this works mid-fit too (from a hook), at the cost of one retrace.
        """
        if getattr(self.model, "train_function", None) is not None:
            self.model.make_train_function(force=True)

    def _require_tensorflow(self, what: str) -> None:
        if self._k.__name__ == "keras":
            backend = self._k.backend.backend()
            if backend != "tensorflow":
                raise UnsupportedModelError(
                    f"{what} of Keras models needs the TensorFlow backend; this Keras runs on "
                    f"{backend!r} (set KERAS_BACKEND=tensorflow before importing keras)"
                )

    def _input_spec(self) -> tuple[tuple[int | None, ...] | None, str | None]:
        """The declared input shape and dtype, or (None, None) for a model without declared inputs.

        Raises:
            UnsupportedModelError: the model has several inputs or several outputs.
        """
        try:
            inputs = self.model.inputs
        except AttributeError:  # Keras 3 subclassed models have no ``inputs``
            inputs = None
        if not inputs:
            return None, None
        if len(inputs) != 1:
            raise UnsupportedModelError(
                f"Keras model {_describe(self.model)} has {len(inputs)} inputs; slimkit supports "
                "models with one input and one output"
            )
        outputs = getattr(self.model, "outputs", None) or []
        if len(outputs) > 1:
            raise UnsupportedModelError(
                f"Keras model {_describe(self.model)} has {len(outputs)} outputs; slimkit supports "
                "models with one input and one output"
            )
        shape = tuple(None if d is None else int(d) for d in inputs[0].shape)
        dtype = inputs[0].dtype
        return shape, str(getattr(dtype, "name", dtype))

    def _single_output(self, out: Any) -> None:
        if isinstance(out, (list, tuple, dict)):
            raise UnsupportedModelError(
                f"Keras model {_describe(self.model)} returns a {type(out).__name__} of outputs; "
                "slimkit supports models with one input and one output"
            )

    def _output_shape(self, x: np.ndarray) -> tuple[int | None, ...]:
        """The model's output shape past the batch axis."""
        outputs = getattr(self.model, "outputs", None)
        if outputs:
            return tuple(None if d is None else int(d) for d in outputs[0].shape[1:])
        out = self.model(x[:1], training=False)
        self._single_output(out)
        return tuple(int(d) for d in out.shape[1:])

    def _split_data(self, data: Any) -> tuple[str, Any, Any]:
        """Classifies training data: ("arrays", x, y), ("dataset", None, None) or ("sequence", None, None)."""
        if isinstance(data, (tuple, list)):
            if len(data) != 2:
                raise DataError(f"train_data: expected a pair (x, y), got a {type(data).__name__} of {len(data)}")
            return "arrays", data[0], data[1]
        tf = sys.modules.get("tensorflow")
        if tf is not None and isinstance(data, tf.data.Dataset):
            return "dataset", None, None
        pydataset = getattr(self._k.utils, "PyDataset", None) or getattr(self._k.utils, "Sequence", None)
        if pydataset is not None and isinstance(data, pydataset):
            return "sequence", None, None
        raise DataError(
            f"train_data: expected (x, y) numpy arrays, a tf.data.Dataset or a keras.utils.PyDataset, "
            f"got {type(data).__module__}.{type(data).__qualname__}"
        )

    def _check_arrays(self, x: Any, y: Any, settings: FineTune) -> np.ndarray:
        """Checks (x, y) against the model's input and output and the loss; the labels in core's
        canonical form (:func:`slimkit.labels.prepare_labels`)."""
        self.check_input(x, "train_data")
        return prepare_labels(y, settings.loss, self._output_shape(x), len(x))

    def _check_dataset(self, data: Any) -> None:
        """Checks that a tf.data.Dataset yields batched (x, y) pairs of the model's input shape."""
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise DataError(f"train_data: the tf.data.Dataset must yield (x, y) pairs, it yields {spec}")
        shape, _ = self._input_spec()
        x_shape = getattr(spec[0], "shape", None)
        if x_shape is None or x_shape.rank is None:
            return
        got = tuple(x_shape.as_list())
        if shape is None:
            # No declared input: run the model once on zeros of the dataset's batch shape.
            zeros = np.zeros(tuple(1 if d is None else d for d in got), dtype=spec[0].dtype.as_numpy_dtype)
            try:
                self.check_input(zeros, "train_data")
            except DataError as exc:
                raise DataError(
                    f"train_data: the model cannot run on the tf.data.Dataset's inputs of shape {got} "
                    f"({_one_line(exc.__cause__ or exc)}); is the dataset batched (.batch(n))?"
                ) from exc
            return
        if len(got) == len(shape) - 1:
            raise DataError(
                f"train_data: the tf.data.Dataset yields single samples of shape {got}; "
                "batch it with .batch(batch_size)"
            )
        if len(got) != len(shape) or any(
            e is not None and g is not None and e != g for e, g in zip(shape[1:], got[1:])
        ):
            raise DataError(
                f"train_data: the tf.data.Dataset yields inputs of shape {got}, "
                f"expected {_format_shape(shape)}"
            )


def _clone_graph(model: Any, k: ModuleType) -> Any:
    """A Sequential/Functional model rebuilt from layer configs, with the original's weights."""
    try:
        clone = _clone_structure(model, k)
    except Exception as exc:  # custom layers without get_config fail in many ways
        raise UnsupportedModelError(
            f"cannot copy Keras model {_describe(model)}: clone_model failed ({_one_line(exc)}); "
            "custom layers need get_config() returning their constructor arguments"
        ) from exc
    weights = model.get_weights()
    if [tuple(w.shape) for w in weights] != [tuple(int(d) for d in v.shape) for v in clone.weights]:
        # clone_model splits variables shared between layers; the copy would not be the same model.
        raise UnsupportedModelError(
            f"cannot copy Keras model {_describe(model)}: its clone has different weights "
            "(are variables shared between layers?)"
        )
    clone.set_weights(weights)
    if [e.info.name for e in walk(model, k)] != [e.info.name for e in walk(clone, k)]:
        raise UnsupportedModelError(f"cannot copy Keras model {_describe(model)}: its clone renamed layers")
    return clone


def _clone_structure(model: Any, k: ModuleType) -> Any:
    """``clone_model`` (fresh weights), keeping a Keras 3 Functional model's input layer names.

    Left to itself, Keras 3's ``clone_model`` names a Functional clone's input layers after the
    input *tensors* (``keras_tensor_12``); graph nodes are named after layers, so keep the originals.
    """
    if k.__name__ != "keras" or type(model) is k.Sequential:
        return k.models.clone_model(model)
    inputs = k.tree.map_structure(
        lambda t: k.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name), model.input
    )
    return k.models.clone_model(model, input_tensors=inputs)


def _deep_copy(model: Any, k: ModuleType) -> Any:
    """A subclassed model copied with ``copy.deepcopy``, or else rebuilt from its config.

    Keras 3 deep-copies through an in-memory save and load, which looks classes up by registered
    name; the model's own classes are put in scope so unregistered ones are found too. The load also
    restores the compile state, which fails for a model compiled with an unregistered custom loss or
    metric; slimkit needs no compile state, so it then rebuilds the model from ``get_config()``.
    """
    classes: dict[str, type] = {}
    get_name = getattr(k.saving, "get_registered_name", None) or getattr(k.utils, "get_registered_name", None)
    flatten = getattr(model, "_flatten_layers", None)
    for layer in flatten(include_self=True, recursive=True) if flatten else [model]:
        cls = type(layer)
        classes.setdefault(cls.__name__, cls)
        if get_name is not None:
            classes.setdefault(get_name(cls), cls)
    scope = getattr(k.saving, "custom_object_scope", None) or k.utils.custom_object_scope
    try:
        with scope(classes):
            clone = copy.deepcopy(model)
        _check_same_weights(model, clone)
    except Exception as exc:  # deserialization fails in many ways; all mean "cannot rebuild"
        try:
            with scope(classes):
                clone = _rebuild_from_config(model)
        except Exception:
            raise UnsupportedModelError(
                f"cannot copy the subclassed Keras model {_describe(model)} ({_one_line(exc)}). "
                "slimkit never modifies your model, so it works on a copy: give the class a get_config() "
                "returning its constructor arguments (and a from_config() if they are not plain values), "
                "or build the model with the Functional API"
            ) from exc
    _copy_layer_names(model, clone)
    # A copied compiled step would belong to the original's variables; drop it.
    for attr in ("train_function", "test_function", "predict_function"):
        if getattr(clone, attr, None) is not None:
            setattr(clone, attr, None)
    return clone


def _copy_layer_names(model: Any, clone: Any) -> None:
    """Gives the copy's layers the original's names.

    A rebuilt subclassed model creates its layers anew, and Keras numbers unnamed layers from a
    global counter (``dense`` comes back as ``dense_2``); slimkit reports and selects layers by the
    names the user sees in the original.

    Raises:
        UnsupportedModelError: the copy's layers do not match the original's one to one.
    """
    src = list(model._flatten_layers(include_self=True, recursive=True))
    dst = list(clone._flatten_layers(include_self=True, recursive=True))
    if len(src) != len(dst) or any(type(a) is not type(b) for a, b in zip(src, dst)):
        raise UnsupportedModelError(
            f"cannot copy the subclassed Keras model {_describe(model)}: the copy's layers differ from "
            "the original's; check the class's get_config()/from_config()"
        )
    for a, b in zip(src, dst):
        if b.name != a.name:
            try:
                b.name = a.name
            except AttributeError:  # tf_keras exposes ``name`` read-only
                b._name = a.name


def _rebuild_from_config(model: Any) -> Any:
    """``from_config(get_config())``, built like the original and given its weights (not compiled)."""
    clone = type(model).from_config(model.get_config())
    build_config = model.get_build_config() if hasattr(model, "get_build_config") else None
    shape = (build_config or {}).get("input_shape")
    if isinstance(shape, (list, tuple)) and all(d is None or isinstance(d, int) for d in shape):
        # Build it the way users build subclassed models, by a call: Keras's build_from_config
        # creates the variables but leaves a subclassed model marked unbuilt.
        clone(np.zeros(tuple(1 if d is None else d for d in shape), dtype=np.float32), training=False)
    elif build_config:
        clone.build_from_config(build_config)
    _check_same_weights(model, clone)
    clone.set_weights(model.get_weights())
    return clone


def _check_same_weights(model: Any, clone: Any) -> None:
    """Raises ValueError unless the copy is built with variables shaped like the original's."""
    if not getattr(clone, "built", False):
        raise ValueError("the copy came back unbuilt (does the class restore its build state?)")
    if [tuple(v.shape) for v in model.weights] != [tuple(v.shape) for v in clone.weights]:
        raise ValueError("the copy's variables differ from the original's (check get_config/from_config)")


def _check_independent(model: Any, clone: Any) -> None:
    """Raises UnsupportedModelError if the copy shares a variable with the original.

    Identity covers every variable; one write-and-compare probe guards against distinct wrapper
    objects over shared storage.
    """
    originals = model.weights
    if {id(v) for v in originals} & {id(v) for v in clone.weights}:
        raise UnsupportedModelError(f"the copy of Keras model {_describe(model)} shares variables with it")
    probe = next((i for i, v in enumerate(clone.weights) if np.size(v.numpy()) > 0), None)
    if probe is None:
        return
    theirs, mine = originals[probe], clone.weights[probe]
    before = theirs.numpy().copy()
    saved = mine.numpy().copy()
    mine.assign(saved + 1)
    changed = theirs.numpy().tobytes() != before.tobytes()  # bytes: NaN-safe
    mine.assign(saved)
    if changed:
        raise UnsupportedModelError(f"the copy of Keras model {_describe(model)} shares variables with it")
