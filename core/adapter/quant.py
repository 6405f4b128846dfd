"""The quantization capability: fake-quant sites in the framework's model, their state, and the
float model back. The arithmetic itself is core's (:mod:`slimkit.quant.fake_quant`)."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from slimkit.quant.plan import QuantPlan, SiteParams


class QuantAdapter(abc.ABC):
    """Insert, set, read and remove fake-quant sites."""

    @abc.abstractmethod
    def with_fake_quant(self, plan: "QuantPlan") -> Any:
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
    def without_fake_quant(self, read_only: bool = False) -> Any:
        """An adapter over a float copy: fake-quant removed, float weights (masks baked in), whose
        graph has the node names the plan refers to.

        Args:
            read_only: the caller only reads the copy (exports it, runs it) and drops it before this
                model changes; the copy may then hold this model's weight arrays instead of copies.
        """
