"""What a fake-quant mode is, and the registry of modes."""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.ops import TensorOps
from slimkit.plugins import Registry


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

    def state(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the site holds, from its variables' values (``scale``, ``zero_point``, ``range_min``,
        ``range_max``, ``ready``); nothing for modes that compute their range from each tensor."""
        return {}

    def forward(self, ops: TensorOps, site: Any, x: Any, training: bool) -> Any:
        """``x`` (float32) fake-quantized; may update the site's variables when ``training``."""
        raise NotImplementedError


#: name -> mode class.
QUANT_MODES: Registry[type[Mode]] = Registry("fake-quant mode", builtins=tuple(
    f"slimkit.quant.modes.{name}" for name in ("fixed", "ema", "lsq", "minmax", "dynamic")))


def params_state(values: dict[str, np.ndarray], scale: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``scale``/``zero_point`` of a site once it has parameters (``ready``), else nothing."""
    if float(values["ready"]) <= 0:
        return {}
    scale = np.asarray(values["scale"] if scale is None else scale, np.float32)
    return {"scale": scale.copy(), "zero_point": np.asarray(values["zero_point"]).astype(np.int32)}
