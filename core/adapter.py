"""The abstract adapter: everything an algorithm may ask of a framework, in numpy terms.

Algorithms in ``slimkit`` are written once against :class:`ModelAdapter`. Each framework implements it
in ``slimkit.adapters.<framework>``. Only numpy arrays, Python scalars and the dataclasses below cross
this boundary. If an algorithm needs something this interface cannot express, add one method here
rather than branching on the framework in core.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from slimkit.batches import ArrayBatches
from slimkit.recipe import FineTune

if TYPE_CHECKING:
    from slimkit.graph import LayerGraph
    from slimkit.quant.plan import QuantPlan, SiteParams


@dataclass(frozen=True)
class LayerInfo:
    """One layer with weights, described neutrally.

    Attributes:
        name: the framework's own unique name (Keras layer path, PyTorch module path).
        kind: neutral kind: dense, conv, depthwise_conv, embedding, batchnorm, or other.
        type_name: the framework class name, for messages (``Conv2D``, ``Conv2d``).
        rank: spatial rank for convolutions (1, 2, 3); 0 otherwise.
        shapes: neutral weight name (kernel, bias, gamma, beta, mean, var) -> native shape.
        kernel_perm: permutation that transposes the native kernel to canonical order
            (out, in, *spatial). Canonical order makes masks and tie-breaking identical across
            frameworks whose native layouts differ (Keras HWIO, PyTorch OIHW).
        eps: a batch norm's epsilon (None for other kinds); batch-norm folding needs it.
        activation: the activation fused into the layer (Keras ``activation=``), ``linear`` if none.
    """

    name: str
    kind: str
    type_name: str
    rank: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    kernel_perm: tuple[int, ...] = ()
    eps: float | None = None
    activation: str = "linear"

    @property
    def params(self) -> int:
        """Number of scalars in all weights of the layer."""
        return int(sum(int(np.prod(s)) for s in self.shapes.values()))

    @property
    def out_axis(self) -> int:
        """Native axis of the kernel's output channels."""
        return self.kernel_perm[0] if self.kernel_perm else 0

    def matches_kind(self, kind: str) -> bool:
        """True if a selector kind (``conv``, ``conv2d``, ...) names this layer's kind."""
        for base in ("depthwise_conv", "conv"):
            if kind.startswith(base):
                suffix = kind[len(base):]
                return self.kind == base and (suffix == "" or suffix == f"{self.rank}d")
        return self.kind == kind


class TrainHooks:
    """Callbacks an algorithm receives from the adapter's training loop.

    The adapter calls :meth:`begin` once with the total number of optimizer steps, :meth:`step_end`
    after every optimizer step (steps count from 1), :meth:`epoch_end` after every epoch, and
    :meth:`end` once when training finishes. Algorithms override what they need.
    """

    def begin(self, total_steps: int) -> None:
        """Called before the first step."""

    def step_end(self, step: int) -> None:
        """Called after optimizer step ``step`` (1-based)."""

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Called after each epoch (1-based) with the epoch's mean loss and metrics."""

    def end(self) -> None:
        """Called after the last step."""


class HookChain(TrainHooks):
    """Several hooks called in order (a pruner plus a progress printer, say)."""

    def __init__(self, *hooks: TrainHooks) -> None:
        self._hooks = hooks

    def begin(self, total_steps: int) -> None:
        for h in self._hooks:
            h.begin(total_steps)

    def step_end(self, step: int) -> None:
        for h in self._hooks:
            h.step_end(step)

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for h in self._hooks:
            h.epoch_end(epoch, logs)

    def end(self) -> None:
        for h in self._hooks:
            h.end()


class StepCallback:
    """Drives :class:`TrainHooks` from any training loop that can call a function per step.

    Adapters whose framework has no callback system of its own (PyTorch) hand this to a user's
    ``fit_fn``. Use it in your own loop (``compress(..., fit_fn=my_fit)`` calls ``my_fit(model, cb)``)::

        cb.begin(total_steps)      # optional if compress() could count steps from train_data
        for epoch in range(epochs):
            for x, y in loader:
                ...; optimizer.step()
                cb.step()          # after every optimizer step: masks are updated here
            cb.epoch_end(epoch + 1, {"loss": epoch_loss})   # optional, for progress lines
        cb.close()                 # optional: compress() calls it after my_fit returns
    """

    def __init__(self, hooks: TrainHooks) -> None:
        self._hooks = hooks
        self._step = 0
        self._total: int | None = None
        self._closed = False

    def begin(self, total_steps: int) -> None:
        """Starts the schedule; ``total_steps`` is the number of optimizer steps that will run."""
        if self._total is None:
            self._total = int(total_steps)
            self._hooks.begin(self._total)

    def step(self) -> None:
        """Call after every ``optimizer.step()``."""
        if self._total is None:
            raise RuntimeError("slimkit StepCallback: call begin(total_steps) before the first step()")
        self._step += 1
        self._hooks.step_end(self._step)

    def epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Optional: reports an epoch's metrics to progress output."""
        self._hooks.epoch_end(epoch, {k: float(v) for k, v in (logs or {}).items()})

    def run_user_fit(self, fit_fn: "FitFn", model: Any, total_steps: int | None) -> None:
        """Runs a user's ``fit_fn(model, self)``, starting the schedule first when the step count is
        known and closing it afterwards."""
        if total_steps is not None:
            self.begin(total_steps)
        fit_fn(model, self)
        self.close()

    def close(self) -> None:
        """Ends the schedule (final masks are applied); later calls do nothing."""
        if not self._closed and self._total is not None:
            self._closed = True
            self._hooks.end()


#: A user-supplied training function: ``fit_fn(model, callback)``. ``callback`` is what
#: :meth:`ModelAdapter.training_callback` returns: a ``keras.callbacks.Callback`` to pass to
#: ``model.fit(callbacks=[...])``, or for PyTorch an object whose ``.step()`` must be called after
#: every ``optimizer.step()`` (and ``.close()`` at the end).
FitFn = Callable[[Any, Any], None]


class ModelAdapter(abc.ABC):
    """One framework's implementation of what slimkit's algorithms need."""

    framework: ClassVar[str]

    def __init__(self, model: Any) -> None:
        self.model = model
        self._batch_rng = np.random.default_rng(0)

    def derived(self, other: "ModelAdapter") -> "ModelAdapter":
        """``other`` (an adapter over a model made from this one) continuing this one's batch order."""
        other._batch_rng = self._batch_rng
        return other

    def batches(self, n: int, settings: FineTune) -> ArrayBatches:
        """The batch order of fine-tuning on ``n`` numpy samples: the same in every adapter."""
        return ArrayBatches(n, settings.batch_size, settings.shuffle, self._batch_rng)

    # -- discovery -------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def accepts(cls, model: Any) -> bool:
        """True if ``model`` belongs to this framework. Must not import a framework not yet loaded."""

    @classmethod
    @abc.abstractmethod
    def copy_of(cls, model: Any) -> "ModelAdapter":
        """An adapter over an independent copy of ``model``; the user's object is never touched."""

    @abc.abstractmethod
    def layers(self) -> list[LayerInfo]:
        """Every layer that holds weights, in model order (including kind ``other``)."""

    # -- weights and masks ----------------------------------------------------------------
    @abc.abstractmethod
    def get_weights(self, name: str) -> dict[str, np.ndarray]:
        """The layer's weights by neutral name, native layout, as float32 copies."""

    @abc.abstractmethod
    def set_weights(self, name: str, weights: dict[str, np.ndarray]) -> None:
        """Overwrites the named weights of a layer (a subset of :meth:`get_weights`'s keys)."""

    @abc.abstractmethod
    def set_mask(self, name: str, mask: np.ndarray) -> None:
        """Zeros the kernel where ``mask`` is 0 and keeps it zero through any later training."""

    @abc.abstractmethod
    def strip(self) -> Any:
        """A plain framework model with masks baked into the weights and no slimkit wrappers."""

    # -- running ---------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        """Seeds the batch order and the framework's random generators so training is repeatable."""
        self._batch_rng = np.random.default_rng(seed)
        self.seed_framework(seed)

    @abc.abstractmethod
    def seed_framework(self, seed: int) -> None:
        """Seeds the framework's own random generators (dropout, initializers)."""

    @abc.abstractmethod
    def check_input(self, x: np.ndarray, what: str) -> None:
        """Raises DataError naming ``what`` if ``x`` cannot be fed to the model."""

    @abc.abstractmethod
    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Inference-mode outputs of the model for ``x`` as float32."""

    @abc.abstractmethod
    def num_batches(self, data: Any, batch_size: int) -> int:
        """Optimizer steps in one epoch over ``data`` (numpy tuple or the framework's own loader)."""

    def total_steps(self, data: Any, settings: FineTune) -> int | None:
        """Optimizer steps fine-tuning on ``data`` takes (None when there is no data to count)."""
        return None if data is None else settings.epochs * self.num_batches(data, settings.batch_size)

    @abc.abstractmethod
    def fit(self, data: Any, settings: FineTune, hooks: TrainHooks, fit_fn: FitFn | None = None) -> None:
        """Fine-tunes the model, calling ``hooks`` each step; ``fit_fn`` replaces the built-in loop."""

    @abc.abstractmethod
    def training_callback(self, hooks: TrainHooks) -> Any:
        """The framework-native object that drives ``hooks`` from a user's own training loop."""

    # -- structure (structured pruning) ----------------------------------------------------
    @abc.abstractmethod
    def graph(self, sample: np.ndarray | None = None) -> "LayerGraph":
        """The model as a neutral :class:`slimkit.graph.LayerGraph`.

        ``sample`` (a batch of inputs) lets frameworks without static shapes trace them. Ops the
        adapter cannot describe become ``opaque`` nodes, never a guess.

        Raises:
            UnsupportedModelError: the model cannot be traced at all; the message names the op/layer.
        """

    @abc.abstractmethod
    def shrink(self, weights: dict[str, dict[str, np.ndarray]], drop: tuple[str, ...] = ()) -> "ModelAdapter":
        """An adapter over a new model in which the named layers hold ``weights``.

        Weights (native layout, neutral names) may be smaller than the current ones along channel
        axes; each such layer is rebuilt with the sizes its new weights imply (filters, units,
        input features, batch-norm features, depthwise channels) and every other layer is kept.
        A ``bias`` given for a layer that has none rebuilds it with one. Layers named in ``drop``
        (batch norms folded into the preceding convolution) become identities. This model is not
        modified.
        """

    @abc.abstractmethod
    def layer_outputs(self, x: np.ndarray, names: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
        """Inference-mode outputs of the named layers for ``x``, channels moved to axis 1."""

    @abc.abstractmethod
    def weight_gradients(self, data: Any, settings: FineTune, batches: int) -> dict[str, dict[str, np.ndarray]]:
        """Gradients of the training loss w.r.t. every layer's weights, averaged over ``batches``.

        Native layout, neutral names (trainable weights only); the model's weights do not change.
        """

    # -- quantization ----------------------------------------------------------------------
    @abc.abstractmethod
    def with_fake_quant(self, plan: "QuantPlan") -> "ModelAdapter":
        """An adapter over a copy of this model with fake-quant at every site of ``plan``.

        Pruning masks keep holding. Sites in ``fixed`` mode pass values through unchanged until
        :meth:`set_quant_params` gives them parameters; the other modes work as
        :data:`slimkit.quant.plan.MODES` describes. The copy trains with :meth:`fit` (straight-through
        rounding) and keeps its sites through the framework's own save and load.

        Raises:
            UnsupportedModelError: a site's node cannot take a fake-quant op; the message names it.
        """

    @abc.abstractmethod
    def set_quant_params(self, params: dict[str, "SiteParams"]) -> None:
        """Sets parameters of the named sites (keys: see :class:`slimkit.quant.plan.QuantPlan`).

        ``lsq`` sites take them as the starting point of their learned step size and keep learning;
        ``dynamic`` sites stay dynamic; every other site switches to ``fixed`` mode. A
        ``<layer>/bias`` key of a layer without bias is accepted and does nothing.

        Raises:
            KeyError: a key names no site of the model.
        """

    @abc.abstractmethod
    def quant_state(self) -> dict[str, dict[str, np.ndarray]]:
        """What each site has learned or holds: ``scale``/``zero_point`` (fixed, lsq; empty until
        set or initialised) or ``min``/``max`` (ema; NaN while never updated); empty for minmax and
        dynamic sites."""

    @abc.abstractmethod
    def quant_plan(self) -> "QuantPlan | None":
        """The plan of the fake-quant sites found in the model; None for a float model."""

    @abc.abstractmethod
    def without_fake_quant(self) -> "ModelAdapter":
        """An adapter over a float copy: fake-quant removed, float weights (masks baked in), whose
        graph has the node names the plan refers to."""

    # -- export ----------------------------------------------------------------------------
    @abc.abstractmethod
    def export_onnx(self, path: str, sample: np.ndarray, opset: int) -> None:
        """Writes the float model to ``path`` as ONNX with a dynamic batch axis."""
