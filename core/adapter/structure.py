"""The structure capability: the model as a neutral graph, rebuilt smaller, probed for outputs and
gradients. Channel pruning, batch-norm folding and quantization planning need it."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from slimkit.recipe import FineTune

if TYPE_CHECKING:
    from slimkit.attention import AttentionBlock
    from slimkit.graph import LayerGraph

#: A name :meth:`StructureAdapter.layer_outputs` may be asked for besides layers: the model's output as
#: :meth:`~slimkit.adapter.ModelAdapter.predict` returns it, read in the same pass (calibration then
#: gives the float reference outputs without running the model again).
MODEL_OUTPUT = "__model_output__"


class StructureAdapter(abc.ABC):
    """Graph, shrink, layer outputs and gradients of an adapter's model."""

    @abc.abstractmethod
    def graph(self, sample: np.ndarray | None = None) -> "LayerGraph":
        """The model as a neutral :class:`slimkit.graph.LayerGraph`.

        ``sample`` (a batch of inputs) lets frameworks without static shapes trace them. Ops the
        adapter cannot describe become ``opaque`` nodes, never a guess.

        Raises:
            UnsupportedModelError: the model cannot be traced at all; the message names the op/layer.
        """

    def attention_blocks(self) -> list["AttentionBlock"]:
        """The model's multi-head attention blocks whose heads can be removed (and the model rebuilt by
        :meth:`shrink` from head-sliced weights); none by default."""
        return []

    @abc.abstractmethod
    def shrink(self, weights: dict[str, dict[str, np.ndarray]], drop: tuple[str, ...] = (), adopt: bool = False) -> Any:
        """An adapter over a new model in which the named layers hold ``weights``.

        Weights (native layout, neutral names) may be smaller than the current ones along channel
        axes; each such layer is rebuilt with the sizes its new weights imply (filters, units,
        input features, batch-norm features, depthwise channels) and every other layer is kept.
        A ``bias`` given for a layer that has none rebuilds it with one. Layers named in ``drop``
        (batch norms folded into the preceding convolution) become identities. This model is not
        modified. ``adopt``: the caller hands the arrays over (holds them no more): the new model may
        use their memory instead of copies.

        Raises:
            KeyError: a name is no layer of the model.
            ValueError: ``drop`` names a layer that is not a batch norm, or weights do not fit.
        """

    @abc.abstractmethod
    def layer_outputs(self, x: np.ndarray, names: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
        """Inference-mode outputs of the named layers for ``x``, channels moved to axis 1.

        :data:`MODEL_OUTPUT` among ``names`` asks for the model's output too, exactly as ``predict``
        gives it (its layout, no channel move). An adapter that cannot read it in the same pass leaves
        it out of the result, and the caller runs ``predict``; every other name is always present.
        """

    def stream_outputs(self, x: np.ndarray, names: list[str], consume: Callable[[str, np.ndarray], None],
                       batch_size: int = 256) -> None:
        """Runs ``x`` and hands each named tensor (as :meth:`layer_outputs` gives it) to
        ``consume(name, values)`` as soon as the pass has it; names the pass cannot read (only
        :data:`MODEL_OUTPUT` may be one) are not handed over.

        ``values`` may be a view of the framework's own buffer, valid only during the call: ``consume``
        copies what it keeps. An adapter whose framework shows tensors as they are computed (PyTorch's
        hooks) then holds no tensor after it is consumed and copies none; this default reads them all
        with :meth:`layer_outputs` first.
        """
        found = self.layer_outputs(x, names, batch_size)
        for name in dict.fromkeys(names):
            if name in found:
                consume(name, found[name])

    @abc.abstractmethod
    def weight_gradients(self, data: Any, settings: FineTune, batches: int) -> dict[str, dict[str, np.ndarray]]:
        """Gradients of the training loss w.r.t. every learned weight (kernel, bias, gamma, beta; of
        frozen layers too, never batch-norm statistics), averaged over ``batches``.

        The model runs in inference mode (batch norms use their statistics, dropout is off). Native
        layout, neutral names; the model's weights do not change.
        """
