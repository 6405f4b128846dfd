"""Fake-quant modes as registered plugins, each in its own file (``fixed``, ``ema``, ``lsq``,
``minmax``, ``dynamic``); :data:`slimkit.quant.plan.MODES` lists them in their stored order."""

from __future__ import annotations

from slimkit.quant.modes.base import QUANT_MODES, Mode, NoOptions
from slimkit.quant.modes import dynamic, ema, fixed, lsq, minmax  # noqa: F401  (registers the modes)

__all__ = ["QUANT_MODES", "Mode", "NoOptions"]
