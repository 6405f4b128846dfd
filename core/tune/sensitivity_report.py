"""What a sensitivity pass returns: one row per (layer, action, setting), as data and as a table."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

#: Metrics where lower is better; every other metric (accuracy, an ``eval_fn``'s value) is higher-better.
LOWER_IS_BETTER = ("mse",)


@dataclass(frozen=True)
class SensitivityRow:
    """The effect of one change to one layer, every other layer left as it was.

    Attributes:
        layer: the layer's name.
        kind: its neutral kind (conv, dense, ...).
        action: ``prune`` or ``quantize``.
        setting: the pruning ratio, or the kernel's bits.
        metric: the metric with only this change (None without eval data or eval_fn).
        drop: how much worse than the baseline, positive = worse (for mse: the increase).
        sqnr_db: signal-to-quantization-noise ratio at the layer's output against the float model's, in
            dB (``inf`` when equal; None when not measured).
        cosine: cosine similarity of the layer's output with the float model's (None when not measured).
    """

    layer: str
    kind: str
    action: str
    setting: float
    metric: float | None
    drop: float | None
    sqnr_db: float | None
    cosine: float | None


@dataclass
class Sensitivity:
    """Per-layer sensitivity to pruning and quantization (:func:`slimkit.sensitivity`).

    Attributes:
        metric_name: ``eval_fn``, ``accuracy`` or ``mse``; None without eval data or eval_fn.
        baseline: the unchanged model's metric.
        rows: prune rows then quantize rows, layers in model order, settings ascending (bits descending).
        seconds: wall time of the pass.
        notes: layers an action skipped, and why.
    """

    metric_name: str | None
    baseline: float | None
    rows: list[SensitivityRow]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (an infinite SQNR is written as the string ``"inf"``)."""
        def plain(value: Any) -> Any:
            return str(value) if isinstance(value, float) and not math.isfinite(value) else value

        return {"metric": self.metric_name, "baseline": self.baseline, "seconds": self.seconds,
                "rows": [{k: plain(v) for k, v in dataclasses.asdict(row).items()} for row in self.rows],
                "notes": list(self.notes)}

    def to_markdown(self) -> str:
        """A table: one line per row, with the metric, its drop, SQNR and cosine."""
        name = self.metric_name or "metric"
        head = f"Sensitivity ({name} baseline {_fmt(self.baseline)}, {self.seconds:.1f}s)"
        lines = [head, "", f"| layer | kind | action | setting | {name} | drop | SQNR dB | cosine |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            setting = f"{r.setting:.2f}" if r.action == "prune" else f"int{int(r.setting)}"
            lines.append(f"| {r.layer} | {r.kind} | {r.action} | {setting} | {_fmt(r.metric)} | {_fmt(r.drop)} | "
                         f"{_fmt(r.sqnr_db, 1)} | {_fmt(r.cosine)} |")
        lines += [""] + [f"- {note}" for note in self.notes] if self.notes else []
        return "\n".join(lines) + "\n"

    def quant_order(self, bits: int = 8) -> list[str]:
        """Layers with a quantize row at ``bits``, most sensitive first: largest drop, then (ties, or no
        metric) lowest SQNR; layers without either keep model order."""
        rows = [r for r in self.rows if r.action == "quantize" and int(r.setting) == bits]

        def key(item: tuple[int, SensitivityRow]) -> tuple[float, float, int]:
            index, r = item
            drop = -r.drop if r.drop is not None else 0.0
            sqnr = r.sqnr_db if r.sqnr_db is not None else math.inf
            return drop, sqnr, index

        return [r.layer for _, r in sorted(enumerate(rows), key=key)]

    def prune_curve(self, layer: str) -> list[tuple[float, float]]:
        """``(ratio, drop)`` of ``layer``'s prune rows, ratio ascending (rows without a drop left out).

        Raises:
            KeyError: ``layer`` has no prune rows.
        """
        rows = [r for r in self.rows if r.action == "prune" and r.layer == layer]
        if not rows:
            known = sorted({r.layer for r in self.rows if r.action == "prune"})
            raise KeyError(f"no prune rows for layer {layer!r}; layers with prune rows: {', '.join(known) or 'none'}")
        return sorted((r.setting, r.drop) for r in rows if r.drop is not None)


def drop_of(metric_name: str, baseline: float, value: float) -> float:
    """How much worse ``value`` is than ``baseline``: positive = worse, for either direction of metric."""
    return value - baseline if metric_name in LOWER_IS_BETTER else baseline - value


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"
