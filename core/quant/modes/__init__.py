"""Fake-quant modes as registered plugins, each in its own file (``fixed``, ``ema``, ``lsq``,
``minmax``, ``dynamic``, ``dorefa``, ``bnn``); :data:`slimkit.quant.plan.MODES` lists them in their
stored order."""

from __future__ import annotations

from slimkit.quant.modes.base import QUANT_MODES, Mode

__all__ = ["QUANT_MODES", "Mode"]
