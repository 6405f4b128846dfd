"""A pure-numpy fake framework and its slimkit adapter, for testing core without Keras or PyTorch.

``FakeModel`` is a small sequential network of named layers:

* ``FakeDense``: ``x @ kernel + bias`` with the kernel in its native layout ``(in, out)`` and an
  optional ReLU after it (kind ``dense``).
* ``FakeBatchNorm``: inference-mode batch normalisation ``(x - mean) / sqrt(var + eps) * gamma + beta``
  (kind ``batchnorm``).
* ``FakeScale``: an elementwise learned scale (kind ``other``): a weighted layer no algorithm handles.

Training is real: :meth:`FakeModel.train_step` backpropagates softmax cross-entropy (integer labels)
or mean squared error and takes a plain SGD step on every weight. A layer's ``mask`` is re-applied after
every step, the way a Keras kernel constraint holds a mask, so masked weights stay exactly zero.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Callable, Iterator

import numpy as np

from slimkit.adapter import MODEL_OUTPUT, FitFn, LayerInfo, ModelAdapter, QuantAdapter, StructureAdapter, StepCallback, TrainHooks
from slimkit.data import as_arrays, is_array_pair
from slimkit.errors import DataError, ExportError, UnsupportedModelError
from slimkit.graph import LayerGraph, Node
from slimkit.optim import NumpyOptimizer
from slimkit.ops import NUMPY_OPS
from slimkit.quant import fake_quant
from slimkit.quant.plan import FakeQuantSpec, QuantPlan, SiteParams
from slimkit.quant.specs import bias_spec
from slimkit.recipe import FineTune

_EPS = 1e-5


class FakeDense:
    """Dense layer; ``kernel`` has native layout (in, out)."""

    kind = "dense"

    def __init__(self, name: str, kernel: np.ndarray, bias: np.ndarray, relu: bool) -> None:
        self.name = name
        self.weights = {"kernel": np.asarray(kernel, np.float32), "bias": np.asarray(bias, np.float32)}
        self.relu = relu
        self.mask: np.ndarray | None = None

    #: fake-quant of ``kernel`` / ``bias``: weight name -> FakeQuant (set by the adapter's with_fake_quant)
    quant: dict[str, "FakeQuant"] = {}

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        kernel, bias = self.weights["kernel"], self.weights["bias"]
        if self.quant:
            kernel = self.quant["kernel"].apply(kernel, training=False)
            bias = self.quant["bias"].apply(bias, training=False) if "bias" in self.quant else bias
        z = x @ kernel + bias
        out = np.maximum(z, 0.0) if self.relu else z
        return out, (x, z)

    def backward(self, grad: np.ndarray, cache: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x, z = cache
        if self.relu:
            grad = grad * (z > 0)
        grads = {"kernel": x.T @ grad, "bias": grad.sum(axis=0)}
        return grad @ self.weights["kernel"].T, grads


class FakeBatchNorm:
    """Inference-mode batch normalisation over the last axis."""

    kind = "batchnorm"

    def __init__(self, name: str, size: int, rng: np.random.Generator) -> None:
        self.name = name
        self.weights = {
            "gamma": rng.uniform(0.5, 1.5, size).astype(np.float32),
            "beta": rng.normal(0.0, 0.1, size).astype(np.float32),
            "mean": rng.normal(0.0, 0.1, size).astype(np.float32),
            "var": rng.uniform(0.5, 1.5, size).astype(np.float32),
        }
        self.mask = None

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        w = self.weights
        normed = (x - w["mean"]) / np.sqrt(w["var"] + _EPS)
        return normed * w["gamma"] + w["beta"], normed

    def backward(self, grad: np.ndarray, normed: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        w = self.weights
        grads = {"gamma": (grad * normed).sum(axis=0), "beta": grad.sum(axis=0)}
        return grad * w["gamma"] / np.sqrt(w["var"] + _EPS), grads


class FakeScale:
    """Elementwise learned scale: a weighted layer of kind ``other``."""

    kind = "other"

    def __init__(self, name: str, size: int, rng: np.random.Generator) -> None:
        self.name = name
        self.weights = {"scale": rng.uniform(0.5, 1.5, size).astype(np.float32)}
        self.mask = None

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return x * self.weights["scale"], x

    def backward(self, grad: np.ndarray, x: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return grad * self.weights["scale"], {"scale": (grad * x).sum(axis=0)}


class FakeModel:
    """A sequential stack of fake layers taking 2-D inputs ``(batch, in_features)``."""

    def __init__(self, layers: list[Any]) -> None:
        names = [layer.name for layer in layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique: {names}")
        self.layers = layers
        #: Test instrumentation: ``observer(model, step)`` runs after each built-in training step,
        #: once slimkit's hooks for that step have run. Use plain functions or closures: deep copies
        #: of the model share them (a bound method would be copied along with its object).
        self.step_observers: list[Callable[[FakeModel, int], None]] = []

    @property
    def in_features(self) -> int:
        first = next(layer for layer in self.layers if isinstance(layer, FakeDense))
        return first.weights["kernel"].shape[0]

    def layer(self, name: str) -> Any:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(x, np.float32)
        for layer in self.layers:
            out, _ = layer.forward(out)
        return out

    __call__ = forward

    def gradients(
        self, x: np.ndarray, y: np.ndarray, loss: str = "auto"
    ) -> tuple[float, dict[tuple[str, str], np.ndarray]]:
        """Batch loss and its gradient for every weight, keyed by (layer name, weight name).

        ``loss`` is ``mse``, ``sparse_categorical_crossentropy`` (softmax over logits), or ``auto``:
        cross-entropy for integer labels, MSE otherwise.
        """
        out = np.asarray(x, self._dtype())
        caches = []
        for layer in self.layers:
            out, cache = layer.forward(out)
            caches.append(cache)
        y = np.asarray(y)
        if loss == "auto":
            loss = "sparse_categorical_crossentropy" if np.issubdtype(y.dtype, np.integer) else "mse"
        n = len(out)
        if loss == "mse":
            diff = out - y.reshape(out.shape).astype(out.dtype)
            value = float(np.mean(diff ** 2))
            grad = 2.0 * diff / diff.size
        else:
            labels = y.astype(np.int64)
            shifted = out - out.max(axis=1, keepdims=True)
            probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
            value = float(-np.mean(np.log(probs[np.arange(n), labels] + 1e-12)))
            grad = probs.copy()
            grad[np.arange(n), labels] -= 1.0
            grad /= n
        grads = {}
        for layer, cache in zip(reversed(self.layers), reversed(caches)):
            grad, own = layer.backward(grad, cache)
            grads.update({(layer.name, key): g for key, g in own.items()})
        return value, grads

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float, loss: str = "auto",
                   optimizer: NumpyOptimizer | None = None) -> float:
        """One optimizer step on a batch (plain SGD without ``optimizer``); masks are re-applied
        afterwards, the way a Keras kernel constraint holds them. Returns the batch loss."""
        quants = [layer for layer in self.layers if isinstance(layer, FakeQuant)]
        for q in quants:
            q.training = True
        try:
            value, grads = self.gradients(x, y, loss)
        finally:
            for q in quants:
                q.training = False
        if optimizer is None:
            for (name, key), g in grads.items():
                w = self.layer(name).weights[key]
                self.layer(name).weights[key] = (w - lr * g).astype(w.dtype)
        else:
            params = {(name, key): self.layer(name).weights[key] for name, key in grads}
            optimizer.step(params, grads)
        for layer in self.layers:
            if layer.mask is not None:  # the "constraint": masked weights stay zero
                kernel = layer.weights["kernel"]
                layer.weights["kernel"] = kernel * layer.mask.astype(kernel.dtype)
        return value

    def _dtype(self) -> type:
        first = next(layer for layer in self.layers if isinstance(layer, FakeDense))
        return first.weights["kernel"].dtype.type


def make_mlp(
    sizes: tuple[int, ...] = (8, 16, 12, 4),
    batchnorm: bool = True,
    other: bool = True,
    seed: int = 0,
) -> FakeModel:
    """An MLP ``fc1 [bn] relu fc2 relu [scale] logits`` with random float32 weights.

    Args:
        sizes: input features, hidden widths..., classes. Dense layers are ``fc1``, ``fc2``, ... and
            the last one ``logits``.
        batchnorm: put a ``bn`` layer (kind batchnorm) after ``fc1``.
        other: put a ``scale`` layer (kind other) before ``logits``.
        seed: weight initialisation seed.
    """
    rng = np.random.default_rng(seed)
    layers: list[Any] = []
    count = len(sizes) - 1
    for i in range(count):
        fan_in, fan_out = sizes[i], sizes[i + 1]
        last = i == count - 1
        if last and other:
            layers.append(FakeScale("scale", fan_in, rng))
        name = "logits" if last else f"fc{i + 1}"
        kernel = rng.normal(0.0, 1.0 / math.sqrt(fan_in), (fan_in, fan_out))
        bias = rng.normal(0.0, 0.1, fan_out)
        relu = not last
        if i == 0 and batchnorm and not last:
            layers.append(FakeDense(name, kernel, bias, relu=False))
            layers.append(FakeBatchNorm("bn", fan_out, rng))
            layers.append(_Relu("relu1"))
        else:
            layers.append(FakeDense(name, kernel, bias, relu=relu))
    return FakeModel(layers)


class _Identity:
    """What a dropped (folded) batch norm becomes."""

    kind = "identity"

    def __init__(self, name: str) -> None:
        self.name = name
        self.weights: dict[str, np.ndarray] = {}
        self.mask = None

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return x, None

    def backward(self, grad: np.ndarray, _: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return grad, {}


class _Relu:
    """A weightless ReLU (not reported by the adapter: it holds no weights)."""

    kind = "activation"

    def __init__(self, name: str) -> None:
        self.name = name
        self.weights: dict[str, np.ndarray] = {}
        self.mask = None

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return np.maximum(x, 0.0), x

    def backward(self, grad: np.ndarray, x: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return grad * (x > 0), {}


class FakeQuant:
    """One fake-quant site over numpy: the arithmetic and every mode are core's
    (:func:`slimkit.quant.fake_quant.forward` with :data:`slimkit.ops.NUMPY_OPS`); this class only
    holds the site's variables. Gradients are straight-through; the fake learns no lsq scale (numpy
    has no autodiff), so an lsq site keeps the scale it was set or first initialised to."""

    kind = "fakequant"

    def __init__(self, name: str, key: str, spec: FakeQuantSpec, channels: int | None = None,
                 role: str = "activation") -> None:
        self.name, self.key, self.site, self.spec, self.role = name, key, key, spec, role
        self.mode, self.qmin, self.qmax = spec.mode, spec.qmin, spec.qmax
        self.symmetric, self.axis, self.momentum = spec.symmetric, spec.axis, spec.momentum
        self.channels = channels if spec.axis is not None else None
        shape = () if self.channels is None else (int(self.channels),)
        self.scale = np.ones(shape, np.float32)
        self.zero_point = np.zeros(shape, np.float32)
        self.range_min = np.full(shape, np.nan, np.float32)
        self.range_max = np.full(shape, np.nan, np.float32)
        self.ready = np.zeros((), np.float32)
        self.weights: dict[str, np.ndarray] = {}
        self.mask = None
        self.training = False

    def set(self, p: SiteParams) -> None:
        scale, zp = fake_quant.check_params(self, self.channels, p)
        if fake_quant.range_follows_params(self.mode):
            self.qmin, self.qmax = int(p.qmin), int(p.qmax)
        self.mode = fake_quant.mode_after_params(self.mode)
        self.scale[...], self.zero_point[...], self.ready[...] = scale, zp, 1.0

    def state(self) -> dict[str, np.ndarray]:
        names = ("scale", "zero_point", "range_min", "range_max", "ready")
        return fake_quant.state_of(self.mode, {n: getattr(self, n) for n in names})

    @property
    def current_spec(self) -> FakeQuantSpec:
        return dataclasses.replace(self.spec, mode=self.mode, qmin=self.qmin, qmax=self.qmax)

    def apply(self, x: np.ndarray, training: bool) -> np.ndarray:
        return np.asarray(fake_quant.forward(NUMPY_OPS, self, np.asarray(x, np.float32), training), np.float32)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return self.apply(x, self.training), None

    def backward(self, grad: np.ndarray, _: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return grad, {}  # straight-through


def all_weights(model: FakeModel) -> dict[tuple[str, str], np.ndarray]:
    """(layer, weight) -> a copy of every array of the model, for before/after comparisons."""
    return {(layer.name, k): v.copy() for layer in model.layers for k, v in layer.weights.items()}


class FakeAdapter(ModelAdapter, StructureAdapter, QuantAdapter):
    """slimkit adapter over :class:`FakeModel`."""

    framework = "fake"

    @classmethod
    def accepts(cls, model: Any) -> bool:
        return isinstance(model, FakeModel)

    @classmethod
    def copy_of(cls, model: Any) -> "FakeAdapter":
        return cls(copy.deepcopy(model))

    def layers(self) -> list[LayerInfo]:
        infos = []
        for layer in self.model.layers:
            if not layer.weights:
                continue
            shapes = {k: tuple(v.shape) for k, v in layer.weights.items()}
            perm = (1, 0) if "kernel" in shapes else ()
            eps = _EPS if layer.kind == "batchnorm" else None
            act = "relu" if getattr(layer, "relu", False) else "linear"
            infos.append(LayerInfo(layer.name, layer.kind, type(layer).__name__, 0, shapes, perm, eps, act))
        return infos

    def get_weights(self, name: str) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float32, copy=True) for k, v in self.model.layer(name).weights.items()}

    def set_weights(self, name: str, weights: dict[str, np.ndarray]) -> None:
        layer = self.model.layer(name)
        for key, value in weights.items():  # every weight is checked before any is written
            if key not in layer.weights:
                raise KeyError(f"layer {name!r} has no weight {key!r}; it has {sorted(layer.weights)}")
            if np.shape(value) != layer.weights[key].shape:
                raise DataError(f"layer {name!r} weight {key!r}: shape {np.shape(value)} != "
                                f"{layer.weights[key].shape}")
        for key, value in weights.items():
            layer.weights[key] = np.array(value, dtype=np.float32)

    def set_mask(self, name: str, mask: np.ndarray, weight: str = "kernel") -> None:
        layer = self.model.layer(name)
        if "kernel" not in layer.weights or weight != "kernel":  # the fake's layers have one matrix each
            raise DataError(f"layer {name!r} ({type(layer).__name__}) has no {weight} to mask")
        kernel = layer.weights["kernel"]
        if mask.shape != kernel.shape:
            raise DataError(f"layer {name!r}: mask shape {mask.shape} != kernel shape {kernel.shape}")
        layer.mask = np.asarray(mask, np.float32).copy()
        layer.weights["kernel"] = kernel * layer.mask

    def state_arrays(self) -> Iterator[tuple[str, np.ndarray]]:
        for layer in self.model.layers:
            for key, value in layer.weights.items():
                yield f"{layer.name}/{key}", value
            if layer.mask is not None:
                yield f"{layer.name}/mask", layer.mask
            if isinstance(layer, FakeQuant):
                for key in ("scale", "zero_point", "range_min", "range_max", "ready"):
                    yield f"{layer.name}/{key}", getattr(layer, key)
                yield f"{layer.name}/{layer.mode}/{layer.qmin}/{layer.qmax}", np.zeros(0, np.float32)
            for key, site in getattr(layer, "quant", {}).items():
                yield f"{layer.name}/{key}/quant/scale", site.scale
                yield f"{layer.name}/{key}/quant/zero_point", site.zero_point

    def strip(self) -> Any:
        """Bakes masks into kernels; fake-quant sites stay."""
        for layer in self.model.layers:
            if layer.mask is not None:
                layer.weights["kernel"] = layer.weights["kernel"] * layer.mask
                layer.mask = None
        return self.model

    def seed_framework(self, seed: int) -> None:
        """The fake has no random generator of its own: batches come from core's order."""

    def check_input(self, x: np.ndarray, what: str) -> None:
        x = np.asarray(x)
        expected = (self.model.in_features,)
        if x.ndim == 0 or x.shape[0] == 0:
            raise DataError(f"{what}: no samples (shape {x.shape})")
        if x.ndim != 2 or x.shape[1:] != expected:
            raise DataError(
                f"{what}: expected input of shape (batch, {expected[0]}), got shape {x.shape}"
            )

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        x = np.asarray(x, np.float32)
        outs = [self.model.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def num_batches(self, data: Any, batch_size: int) -> int:
        if not is_array_pair(data):
            raise DataError(f"train_data: expected an (x, y) tuple of arrays, got {type(data).__name__}")
        return math.ceil(len(data[0]) / batch_size)

    def fit(self, data: Any, settings: FineTune, hooks: TrainHooks, fit_fn: FitFn | None = None,
            objective: Any = None) -> None:
        if objective is not None:  # numpy has no autograd: the fake trains on its own task losses only
            raise UnsupportedModelError(f"{objective.field}: the numpy fake adapter does not distill")
        callback = self._training_callback(hooks)
        if fit_fn is not None:
            callback.run_user_fit(fit_fn, self.model, self.total_steps(data, settings))
            return
        x, y = as_arrays(data, "train_data", need_labels=True)
        self.check_input(x[:2], "train_data")
        order = self.batches(len(x), settings)
        loss = "mse" if settings.loss == "mse" else "auto"
        optimizer = NumpyOptimizer(settings.rule(), settings.learning_rate)
        callback.begin(settings.epochs * len(order))
        step = 0
        for epoch, batches in enumerate(order.epochs(settings.epochs), start=1):
            total = 0.0
            for idx in batches:
                total += self.model.train_step(x[idx], y[idx], settings.learning_rate, loss, optimizer) * len(idx)
                callback.step()
                step += 1
                for observer in self.model.step_observers:
                    observer(self.model, step)
            callback.epoch_end(epoch, {"loss": total / len(x)})
        callback.close()

    def _training_callback(self, hooks: TrainHooks) -> StepCallback:
        return StepCallback(hooks)

    def export_onnx(self, path: str, sample: np.ndarray, opset: int) -> None:
        raise ExportError("fake adapter has no ONNX exporter")

    # -- structure -------------------------------------------------------------------------
    def graph(self, sample: np.ndarray | None = None) -> LayerGraph:
        nodes = [Node("input", "input", (), self.model.in_features)]
        width = self.model.in_features
        for layer in self.model.layers:
            prev = nodes[-1].name
            if isinstance(layer, FakeDense):
                width = layer.weights["kernel"].shape[1]
                nodes.append(Node(layer.name, "dense", (prev,), width, layer.name))
                if layer.relu:
                    nodes.append(Node(f"{layer.name}/relu", "elementwise", (layer.name,), width,
                                      attrs={"quant": "relu"}))
            elif isinstance(layer, FakeBatchNorm):
                nodes.append(Node(layer.name, "batchnorm", (prev,), width, layer.name))
            elif isinstance(layer, FakeQuant):
                continue
            elif isinstance(layer, _Relu):
                nodes.append(Node(layer.name, "elementwise", (prev,), width, attrs={"quant": "relu"}))
            elif isinstance(layer, _Identity):
                nodes.append(Node(layer.name, "elementwise", (prev,), width, attrs={"quant": "same"}))
            else:  # FakeScale: per-channel weights no algorithm understands
                nodes.append(Node(layer.name, "opaque", (prev,), width, attrs={"type_name": "FakeScale"}))
        nodes.append(Node("__output__", "output", (nodes[-1].name,), width))
        return LayerGraph(nodes)

    def shrink(self, weights: dict[str, dict[str, np.ndarray]], drop: tuple[str, ...] = (),
               adopt: bool = False) -> "FakeAdapter":
        for name in [*weights, *drop]:
            self.model.layer(name)  # KeyError for a name that is no layer
        for name in drop:
            if not isinstance(self.model.layer(name), FakeBatchNorm):
                raise ValueError(f"shrink: cannot drop layer {name!r}: only batch norms (folded into the layer "
                                 "before them) can be dropped")
        clone = copy.deepcopy(self.model)
        for i, layer in enumerate(clone.layers):
            layer.mask = None
            if layer.name in drop:
                clone.layers[i] = _Identity(layer.name)
            elif layer.name in weights:
                layer.weights.update({k: np.asarray(v, np.float32).copy() for k, v in weights[layer.name].items()})
        return FakeAdapter(clone)

    def layer_outputs(self, x: np.ndarray, names: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
        out, found = np.asarray(x, np.float32), {}
        if "input" in names:
            found["input"] = out.copy()
        for layer in self.model.layers:
            out, cache = layer.forward(out)
            if isinstance(layer, FakeDense) and layer.relu:
                found[layer.name] = cache[1].copy()  # the graph's dense node is before its ReLU
                found[f"{layer.name}/relu"] = out.copy()
            elif layer.name in names:
                found[layer.name] = out.copy()
        found[MODEL_OUTPUT] = out.astype(np.float32, copy=True)  # what predict returns
        missing = set(names) - set(found)
        if missing:
            raise KeyError(f"no layer named {sorted(missing)[0]!r}")
        return {n: found[n] for n in names}

    # -- quantization ----------------------------------------------------------------------
    def with_fake_quant(self, plan: QuantPlan) -> "FakeAdapter":
        clone = copy.deepcopy(self.model)
        layers: list[Any] = []
        after = {a.node: a for a in plan.acts}
        nodes = {node.name for node in self.graph().nodes}
        for node in [*after, *(s.node for s in plan.layers)]:
            if node not in nodes:
                raise UnsupportedModelError(f"no node {node!r} in the fake model to quantize; nodes: {sorted(nodes)}")
        if "input" in after:
            layers.append(FakeQuant("fq:input", "input", after["input"].spec))
        sites = {s.layer: s for s in plan.layers}
        for layer in clone.layers:
            layers.append(layer)
            if layer.name in sites:
                site = sites[layer.name]
                out = layer.weights["kernel"].shape[1]
                layer.quant = {"kernel": FakeQuant("", f"{layer.name}/kernel", site.kernel, out, "kernel"),
                               "bias": FakeQuant("", f"{layer.name}/bias", bias_spec(site.kernel), out, "bias")}
            node = f"{layer.name}/relu" if getattr(layer, "relu", False) else layer.name
            if node in after:
                layers.append(FakeQuant(f"fq:{node}", node, after[node].spec))
            elif layer.name in after:
                raise UnsupportedModelError(f"cannot quantize {layer.name!r} before its fused ReLU")
        clone.layers = layers
        clone.plan = plan
        return FakeAdapter(clone)

    def _sites(self) -> dict[str, FakeQuant]:
        found = {}
        for layer in self.model.layers:
            if isinstance(layer, FakeQuant):
                found[layer.key] = layer
            for q in getattr(layer, "quant", {}).values():
                found[q.key] = q
        return found

    def set_quant_params(self, params: dict[str, SiteParams]) -> None:
        sites = self._sites()
        for key in params:  # every key and every parameter is checked before any is set
            if key not in sites:
                raise KeyError(f"no quantization site {key!r}; sites: {sorted(sites)}")
        for key, p in params.items():
            fake_quant.check_params(sites[key], sites[key].channels, p)
        for key, p in params.items():
            sites[key].set(p)

    def quant_state(self) -> dict[str, dict[str, np.ndarray]]:
        return {key: q.state() for key, q in self._sites().items()}

    def quant_plan(self) -> QuantPlan | None:
        """The plan with each site's current mode and range (``fixed`` once parameters were set)."""
        plan = getattr(self.model, "plan", None)
        if plan is None:
            return None
        sites = self._sites()
        acts = tuple(dataclasses.replace(a, spec=sites[a.node].current_spec) for a in plan.acts)
        layers = tuple(dataclasses.replace(s, kernel=sites[f"{s.layer}/kernel"].current_spec) for s in plan.layers)
        return dataclasses.replace(plan, acts=acts, layers=layers)

    def without_fake_quant(self, read_only: bool = False) -> "FakeAdapter":
        clone = copy.deepcopy(self.model)
        clone.layers = [layer for layer in clone.layers if not isinstance(layer, FakeQuant)]
        for layer in clone.layers:
            layer.quant = {}
            if layer.mask is not None:
                layer.weights["kernel"] = layer.weights["kernel"] * layer.mask
                layer.mask = None
        clone.plan = None
        return FakeAdapter(clone)

    def weight_gradients(self, data: Any, settings: FineTune, batches: int) -> dict[str, dict[str, np.ndarray]]:
        x, y = as_arrays(data, "train_data", need_labels=True)
        loss = "mse" if settings.loss == "mse" else "auto"
        total: dict[str, dict[str, np.ndarray]] = {}
        used = 0
        for b in range(min(batches, self.num_batches((x, y), settings.batch_size))):
            sl = slice(b * settings.batch_size, (b + 1) * settings.batch_size)
            _, grads = self.model.gradients(x[sl], y[sl], loss)
            for (name, key), g in grads.items():
                total.setdefault(name, {}).setdefault(key, np.zeros_like(g))
                total[name][key] = total[name][key] + g
            used += 1
        return {n: {k: (g / used).astype(np.float32) for k, g in d.items()} for n, d in total.items()}
