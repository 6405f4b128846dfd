"""What a fake-quant mode is, and the registry of modes."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from slimkit.ops import TensorOps
from slimkit.plugins import Registry
from slimkit.quant.params import qrange

if TYPE_CHECKING:
    from slimkit.graph import LayerGraph
    from slimkit.quant.plan import FakeQuantSpec, SiteParams


class Mode:
    """One way of choosing a site's quantization parameters while the model runs."""

    #: Setting parameters on the site keeps this mode (else the site becomes ``fixed``).
    keeps_mode_when_set = False
    #: Setting parameters on the site sets its integer range too.
    takes_range_when_set = True
    #: The site's scale is a trained variable.
    learns_scale = False
    #: The range is the current tensor's at every call, in the deployed model too.
    runtime_range = False
    #: The site holds fixed parameters an export can write.
    exportable = False
    #: Which recipe ``learn`` keys may name this mode in QAT: ``weights``, ``activations``.
    learnable_for: tuple[str, ...] = ()
    #: Bit widths the mode simulates (the recipe's ``bits`` bounds when ``learn`` names it).
    bits: tuple[int, int] = (2, 8)
    #: The mode defines its grid itself (DoReFa, BNN): ``symmetric``, ``signed`` and ``reduce_range``
    #: have no effect on it.
    own_grid = False
    #: Why an export cannot write a site that stays in this mode ("" when it can, or never stays).
    export_refusal = ""

    def integer_range(self, bits: int, role: str, signed: bool, reduce_range: bool = False) -> tuple[int, int]:
        """``(qmin, qmax)`` of a site of ``role`` (``kernel`` or ``activation``) with ``bits`` bits."""
        return qrange(bits, signed, reduce_range=reduce_range)

    def state(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the site holds, from its variables' values (``scale``, ``zero_point``, ``range_min``,
        ``range_max``, ``ready``); nothing for modes that compute their range from each tensor."""
        return {}

    def forward(self, ops: TensorOps, site: Any, x: Any, training: bool) -> Any:
        """``x`` (float32) fake-quantized; may update the site's variables when ``training``."""
        raise NotImplementedError

    # -- when a stage ends ------------------------------------------------------------------------------
    def frozen(self, spec: "FakeQuantSpec", role: str) -> "FakeQuantSpec":
        """The site's spec once a stage freezes it: ``fixed``, except where the deployed model computes
        the mode at run time too (``dynamic``)."""
        return spec if self.runtime_range else dataclasses.replace(spec, mode="fixed")

    def frozen_activation(self, spec: "FakeQuantSpec") -> "tuple[SiteParams | None, tuple[float, float]] | None":
        """Parameters (None: the site keeps computing its mode, and the biases of the layers reading it
        stay float) and covered range of a trained activation site whose grid the mode defines itself;
        None for modes whose parameters come from data ranges or a learned scale."""
        return None

    def frozen_kernel(self, kernel: np.ndarray, spec: "FakeQuantSpec") -> "tuple[np.ndarray, SiteParams] | None":
        """The values (native layout) and fixed parameters a trained kernel freezes to when the mode
        maps weights to values itself (DoReFa, BNN); None: the kernel is kept and its parameters come
        from its range or learned scale."""
        return None

    def site_problem(self, graph: "LayerGraph", node: str) -> str | None:
        """Why the activation site at ``node`` of ``graph`` cannot take this mode, or None."""
        return None


#: name -> mode class.
QUANT_MODES: Registry[type[Mode]] = Registry("fake-quant mode", builtins=tuple(
    f"slimkit.quant.modes.{name}" for name in ("fixed", "ema", "lsq", "minmax", "dynamic", "dorefa", "bnn")))


def params_state(values: dict[str, np.ndarray], scale: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``scale``/``zero_point`` of a site once it has parameters (``ready``), else nothing."""
    if float(values["ready"]) <= 0:
        return {}
    scale = np.asarray(values["scale"] if scale is None else scale, np.float32)
    return {"scale": scale.copy(), "zero_point": np.asarray(values["zero_point"]).astype(np.int32)}


def straight_through(ops: TensorOps, value: Any, surrogate: Any) -> Any:
    """Exactly ``value`` forward, the gradient of ``surrogate`` backward (``value`` carries none)."""
    return ops.stop_gradient(value) + (surrogate - ops.stop_gradient(surrogate))
