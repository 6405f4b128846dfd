"""The model capability: what every adapter implements, in numpy terms.

Only numpy arrays, Python scalars and the dataclasses below cross this boundary. If an algorithm
needs something the capabilities cannot express, add one method to the narrowest capability rather
than branching on the framework in core.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import numpy as np

from slimkit.adapter.collective import LOCAL, Collective
from slimkit.adapter.hooks import FitFn, TrainHooks
from slimkit.batches import ArrayBatches
from slimkit.recipe import Distributed, FineTune


@dataclass(frozen=True)
class LayerInfo:
    """One layer with weights, described neutrally.

    Attributes:
        name: the framework's own unique name (Keras layer path, PyTorch module path).
        kind: neutral kind: dense, conv, depthwise_conv, embedding, batchnorm, layernorm,
            recurrent (LSTM, GRU, simple RNN), attention (multi-head attention projections), or other.
        type_name: the framework class name, for messages (``Conv2D``, ``Conv2d``).
        rank: spatial rank for convolutions (1, 2, 3); 0 otherwise.
        shapes: neutral weight name (kernel, bias, gamma, beta, mean, var) -> native shape.
        kernel_perm: permutation that transposes the native kernel to canonical order
            (out, in, *spatial). Canonical order makes masks and tie-breaking identical across
            frameworks whose native layouts differ (Keras HWIO, PyTorch OIHW).
        eps: a batch norm's epsilon (None for other kinds); batch-norm folding needs it.
        activation: the activation fused into the layer (Keras ``activation=``), ``linear`` if none.
        matrices: extra weight matrices magnitude pruning masks besides ``kernel`` (a recurrent
            layer's ``recurrent_kernel``, an attention block's projections), each with the
            permutation to its canonical (out, in, ...) order.
    """

    name: str
    kind: str
    type_name: str
    rank: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    kernel_perm: tuple[int, ...] = ()
    eps: float | None = None
    activation: str = "linear"
    matrices: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def params(self) -> int:
        """Number of scalars in all weights of the layer."""
        return int(sum(int(np.prod(s)) for s in self.shapes.values()))

    @property
    def maskable(self) -> dict[str, tuple[int, ...]]:
        """Weight name -> canonical permutation of every matrix magnitude pruning masks."""
        own = {"kernel": self.kernel_perm} if "kernel" in self.shapes else {}
        return {**own, **self.matrices}

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


class ModelAdapter(abc.ABC):
    """The model capability every adapter implements: copy, layers, weights, masks, strip, run,
    fine-tune and export the float model.

    An adapter that implements only this supports magnitude and N:M pruning; channel pruning needs
    :class:`~slimkit.adapter.structure.StructureAdapter` too, quantization
    :class:`~slimkit.adapter.quant.QuantAdapter`, and core code that runs inside the framework
    (fake quantization, optimizer rules) an implementation of :class:`slimkit.ops.TensorOps`.
    """

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

    def read_weights(self, name: str) -> dict[str, np.ndarray]:
        """:meth:`get_weights`' values for reading at once (statistics, folding, export): an adapter may
        hand read-only float32 arrays that share the model's memory, valid until the model next changes,
        instead of copies (five copies of a ResNet50's weights in one quantization run). This default
        copies."""
        return self.get_weights(name)

    @abc.abstractmethod
    def set_weights(self, name: str, weights: dict[str, np.ndarray]) -> None:
        """Overwrites the named weights of a layer (a subset of :meth:`get_weights`'s keys); a masked
        kernel stays masked. Tools and the twin tests load identical weights into every framework
        through it.

        Raises:
            KeyError: no layer has that name, or it has no weight of a given name.
            DataError: a weight's shape differs from the layer's (nothing is written then).
        """

    @abc.abstractmethod
    def set_mask(self, name: str, mask: np.ndarray, weight: str = "kernel") -> None:
        """Zeros a weight matrix (the kernel, or another of :attr:`LayerInfo.maskable`) where ``mask``
        is 0 and keeps it zero through any later training.

        Raises:
            KeyError: no layer has that name.
            DataError: the layer has no such weight, or the mask does not have its shape (the
                message names the layer).
        """

    @abc.abstractmethod
    def state_arrays(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every array the model's inference outputs depend on (weights, buffers such as batch-norm
        statistics, fake-quant parameters), each under a name stable for the same model, in a fixed
        order. Core digests them to tell whether a model changed; numpy views are fine (read only)."""

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
    def fit(self, data: Any, settings: FineTune, hooks: TrainHooks, fit_fn: FitFn | None = None,
            objective: Any = None) -> None:
        """Fine-tunes the model, calling ``hooks`` each step; ``fit_fn`` replaces the built-in loop.

        ``objective`` (a :class:`slimkit.distill.objective.DistillObjective`) replaces the task loss by
        the distillation loss: per batch the loop asks it for the teacher's targets (by sample index
        for fixed arrays), reads the outputs of its ``feature_names`` layers (channels on axis 1, as
        ``layer_outputs`` gives them), trains its projections with the model and drops them after."""

    def collective(self, settings: Distributed) -> Collective:
        """The ranks of the distributed job this process belongs to, found from the framework's own engine
        (an initialised process group, the model's tf.distribute strategy), with ``settings``' timeout;
        :data:`~slimkit.adapter.collective.LOCAL` in a single process (the default). An adapter that
        returns a job of several ranks also splits every global training batch across them, keeps the
        working copy's weights identical on every rank, and reduces statistics a training step gathers
        (:meth:`slimkit.ops.TensorOps.across_replicas`)."""
        return LOCAL

    # -- export ----------------------------------------------------------------------------
    @abc.abstractmethod
    def export_onnx(self, path: str, sample: np.ndarray, opset: int) -> None:
        """Writes the float model to ``path`` as ONNX with a dynamic batch axis."""
