"""The report's figures of what the run measured: metrics, sizes, latency and MACs before and after, the
tuning trials, and the sensitivity curves. Drawn as :mod:`slimkit.report_plots` draws the per-layer
figures (whose helpers, colours and sizes these share), and like them None when the report holds nothing
to show.
"""

from __future__ import annotations

import math
from typing import Any

from slimkit.report_plots import (AFTER, BEFORE, BEST, FEASIBLE, INFEASIBLE, TARGET, WIDE, WIDTH, Plot,
                                  count_formatter, figure, finish, finite, short)

# -- the outcome: metrics, size, latency -------------------------------------------------------------


def outcome_plot(report: Any, mpl: Any) -> Plot | None:
    """Metrics, sizes, latency and MACs before and after, with the metric against the size."""
    panels = outcome_panels(report)
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = figure(mpl, WIDE, 3.0 * nrows, nrows=nrows, ncols=cols, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, (name, data) in zip(flat, panels):
        if name == "trade":
            _trade_axis(ax, *data)
        else:
            unit = {"metrics": "", "size": "bytes", "latency": "ms", "macs": "MACs per sample"}[name]
            _pairs_axis(ax, name, unit, data)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    return finish("outcome", "Metrics, size and latency",
                 "Before (grey) and after (blue): evaluation metrics, sizes (ONNX files, weights: fp32, and "
                 "zlib-compressed when pruned, which is what zeros save), onnxruntime latency for one sample, "
                 "multiply-accumulates. A quantized file's 'before' is its float twin (the same compressed model "
                 "without quantization); a tuned model's is the float model's ONNX file.", fig, wide=True)


Pair = tuple[str, Any, Any]  # label, before, after (either may be None)


def outcome_panels(report: Any) -> list[tuple[str, Any]]:
    """The panels of :func:`outcome_plot`, as data: ``("trade", (metric, size, latency or None))`` (the
    metric against a size measured alike before and after), then ``("metrics" | "size" | "latency" |
    "macs", [(label, before, after), ...])`` for those the report holds."""
    metrics = _metric_pairs(report)
    full = [(k, b, a) for k, b, a in metrics if b is not None and a is not None]
    panels: list[tuple[str, Any]] = []
    trade = _trade_pair(report)
    if full and trade is not None:
        panels.append(("trade", (full[0], *trade)))
    for name, pairs in (("metrics", metrics), ("size", _size_pairs(report)), ("latency", _latency_pairs(report)),
                        ("macs", _macs_pairs(report))):
        if pairs:
            panels.append((name, pairs))
    return panels


def _trade_pair(report: Any) -> tuple[Pair, Pair | None] | None:
    """Sizes (and latencies) of the user's model and the result, measured alike: the tuning run's ONNX
    files, else the weights. Weight bytes count int8 weights as float, so they stand only without
    quantization; a quantized file's float twin is the compressed model, not the user's."""
    tuned = [p for p in _size_pairs(report) if p[0] == _TUNED_FILE]
    if tuned:
        latency = [p for p in _latency_pairs(report) if p[0] == _TUNED_FILE]
        return tuned[0], latency[0] if latency else None
    if report.quant:
        return None
    weights = [p for p in _size_pairs(report) if p[0].endswith(" weights")]
    return (weights[0], None) if weights else None


def _metric_pairs(report: Any) -> list[Pair]:
    keys = list(report.metrics_before) + [k for k in report.metrics_after if k not in report.metrics_before]
    return [(k, finite(report.metrics_before.get(k)), finite(report.metrics_after.get(k))) for k in keys
            if finite(report.metrics_before.get(k)) is not None or finite(report.metrics_after.get(k)) is not None]


_TUNED_FILE = "ONNX file (tuning)"


def _size_pairs(report: Any) -> list[Pair]:
    """ONNX files first (what is deployed), then the weights: compressed (zeros count) and raw."""
    out: list[Pair] = []
    best = _best_trial(report)
    measures = getattr(report.tuning, "baseline_measures", None) or {}
    if best is not None and best.size_mb is not None and measures.get("size_mb") is not None:
        out.append((_TUNED_FILE, measures["size_mb"] * 1e6, best.size_mb * 1e6))
    for q in report.quant_exports:
        out.append((f"{_basename(q.path)}: fp32/int8", q.float_bytes, q.int8_bytes))
    for kind in ("zlib", "fp32"):
        b, a = report.weight_bytes.get(f"{kind} before"), report.weight_bytes.get(f"{kind} after")
        if b is not None and a is not None:
            out.append((f"{kind} weights", b, a))
    return out


def _latency_pairs(report: Any) -> list[Pair]:
    out: list[Pair] = []
    best = _best_trial(report)
    measures = getattr(report.tuning, "baseline_measures", None) or {}
    if best is not None and best.latency_ms is not None and measures.get("latency_ms") is not None:
        out.append((_TUNED_FILE, measures["latency_ms"], best.latency_ms))
    for q in report.quant_exports:
        if q.float_latency_ms is not None and q.int8_latency_ms is not None:
            out.append((f"{_basename(q.path)}: fp32/int8", q.float_latency_ms, q.int8_latency_ms))
    return out


def _macs_pairs(report: Any) -> list[Pair]:
    best = _best_trial(report)
    measures = getattr(report.tuning, "baseline_measures", None) or {}
    if best is not None and best.macs is not None and measures.get("macs") is not None:
        return [("ONNX graph", measures["macs"], best.macs)]
    rows = [r for r in report.layers if r.macs is not None]
    if rows:
        return [("layers", sum(r.macs if r.macs_before is None else r.macs_before for r in rows),
                 sum(r.macs for r in rows))]
    return []


def _pairs_axis(ax: Any, name: str, unit: str, pairs: list[Pair]) -> None:
    x = list(range(len(pairs)))
    before = [0.0 if b is None else b for _, b, _ in pairs]
    after = [0.0 if a is None else a for _, _, a in pairs]
    ax.bar([i - 0.2 for i in x], before, width=0.4, color=BEFORE, label="before")
    ax.bar([i + 0.2 for i in x], after, width=0.4, color=AFTER, label="after")
    for i, (_, b, a) in enumerate(pairs):
        if b and a is not None:
            ax.annotate(_ratio(name, b, a), (i + 0.2, a), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels([short(label, 22) for label, _, _ in pairs], rotation=20, ha="right")
    ax.set_title(name + (f" ({unit})" if unit else ""))
    if unit in ("bytes", "MACs per sample"):
        ax.yaxis.set_major_formatter(count_formatter())
    ax.legend(loc="best")


def _trade_axis(ax: Any, metric: Pair, size: Pair, latency: Pair | None) -> None:
    name, m_before, m_after = metric
    label, s_before, s_after = size
    ax.scatter([s_before], [m_before], s=60, color=BEFORE, zorder=3, label="before")
    ax.scatter([s_after], [m_after], s=60, color=AFTER, zorder=3, label="after")
    ax.annotate("", xy=(s_after, m_after), xytext=(s_before, m_before),
                arrowprops={"arrowstyle": "->", "color": TARGET, "linewidth": 0.8})
    if latency is not None:
        for s, m, ms in ((s_before, m_before, latency[1]), (s_after, m_after, latency[2])):
            ax.annotate(f"{ms:.3g} ms", (s, m), textcoords="offset points", xytext=(6, 6), fontsize=7)
    ax.set_xlabel(label + " (bytes)")
    ax.xaxis.set_major_formatter(count_formatter())
    ax.set_ylabel(name)
    ax.set_title(f"{name} against size")
    ax.margins(0.25)
    ax.legend(loc="best")


# -- tuning and sensitivity --------------------------------------------------------------------------


def tuning_plot(report: Any, mpl: Any) -> Plot | None:
    """The trials: metric against compression (best starred), and compression over the trials."""
    log = report.tuning
    if log is None:
        return None
    trials = [t for t in log.trials if t.error is None and t.metric is not None and finite(t.metric) is not None]
    if not trials:
        return None
    fig, (left, right) = figure(mpl, WIDE, 3.4, ncols=2)
    for ok, colour, marker, label in ((True, FEASIBLE, "o", "met the target"), (False, INFEASIBLE, "x", "missed")):
        chosen = [t for t in trials if t.feasible == ok]
        if chosen:
            left.scatter([t.compression for t in chosen], [t.metric for t in chosen], color=colour, marker=marker,
                         s=24, label=label, zorder=2)
            right.scatter([t.number for t in chosen], [t.compression for t in chosen], color=colour, marker=marker,
                          s=24, label=label, zorder=2)
    if finite(log.baseline) is not None:
        left.axhline(log.baseline, color=BEFORE, linestyle="--", linewidth=1, label="float model")
    best = next((t for t in trials if t.number == log.best), None)
    if best is not None:
        left.scatter([best.compression], [best.metric], marker="*", s=220, color=BEST, zorder=4,
                     label=f"best (trial {best.number})")
        right.scatter([best.number], [best.compression], marker="*", s=220, color=BEST, zorder=4)
    ordered = sorted(trials, key=lambda t: t.number)
    running, line = 0.0, []
    for t in ordered:  # the most compressed feasible trial so far: what the search climbs
        running = max(running, t.compression) if t.feasible else running
        line.append(running if running > 0 else math.nan)
    right.step([t.number for t in ordered], line, where="post", color=FEASIBLE, linewidth=1,
               label="best feasible so far")
    left.set_xlabel("compression (x smaller weights)")
    left.set_ylabel(log.metric or "metric")
    left.set_title("metric against compression")
    left.legend(loc="best")
    right.set_xlabel("trial")
    right.set_ylabel("compression (x)")
    right.set_title("trajectory")
    right.legend(loc="best")
    return finish("tuning", "Tuning trials",
                 f"{len(log.trials)} trial(s) of the {log.strategy} strategy against {log.target}; the star is "
                 f"the trial returned. {log.message}", fig, wide=True)


def sensitivity_plot(report: Any, mpl: Any) -> Plot | None:
    """Each layer's metric drop (or SQNR without a metric) when pruned alone, and when quantized alone."""
    sens = report.sensitivity
    if sens is None or not sens.rows:
        return None
    panels = [(action, rows) for action in ("prune", "quantize")
              if (rows := [r for r in sens.rows if r.action == action and _measure(r)[0] is not None])]
    if not panels:
        return None
    fig, axes = figure(mpl, WIDE if len(panels) == 2 else WIDTH, 3.4, ncols=len(panels), squeeze=False)
    dropped = []
    for ax, (action, rows) in zip(axes[0], panels):
        what = _measure(rows[0])[1]
        layers = list(dict.fromkeys(r.layer for r in rows))
        limit = CURVES if action == "prune" else BARS
        if len(layers) > limit:  # a deep network: its most sensitive layers, in model order
            worst = _most_sensitive(rows, limit)
            dropped.append(f"{action}: the {limit} most sensitive of {len(layers)} layers")
            layers = [n for n in layers if n in worst]
            rows = [r for r in rows if r.layer in worst]
        if action == "prune":
            for name in layers:
                points = sorted((r.setting, _measure(r)[0]) for r in rows if r.layer == name)
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                        label=short(name, 24))
            ax.set_xlabel("pruning ratio (this layer alone)")
        else:
            bits = sorted({int(r.setting) for r in rows}, reverse=True)
            width = 0.8 / len(bits)
            for j, b in enumerate(bits):
                values = {r.layer: _measure(r)[0] for r in rows if int(r.setting) == b}
                ax.bar([i + j * width - 0.4 + width / 2 for i in range(len(layers))],
                       [values.get(n, 0.0) for n in layers], width=width, label=f"int{b}")
            ax.set_xticks(list(range(len(layers))))
            ax.set_xticklabels([short(n, 22) for n in layers], rotation=30, ha="right")
        ax.set_ylabel(what)
        ax.set_title(f"{action}: {what}")
        ax.legend(loc="best")
    shown = f" Drawn: {'; '.join(dropped)}." if dropped else ""
    return finish("sensitivity", "Sensitivity per layer",
                  f"One layer changed at a time, the others left as they were (baseline {sens.metric_name or '-'} "
                  f"{'-' if sens.baseline is None else format(sens.baseline, '.4g')}); higher is worse for a drop, "
                  f"better for SQNR.{shown}", fig, wide=len(panels) == 2)


#: Most layers drawn as pruning curves (lines) and as quantization bars.
CURVES, BARS = 10, 30


def _most_sensitive(rows: list[Any], limit: int) -> set[str]:
    """The ``limit`` layers whose worst row is worst: the largest drop, or the lowest SQNR."""
    worst: dict[str, float] = {}
    for r in rows:
        value, what = _measure(r)
        badness = value if what == "metric drop" else -value
        worst[r.layer] = max(worst.get(r.layer, -math.inf), badness)
    return set(sorted(worst, key=lambda n: -worst[n])[:limit])


def _measure(row: Any) -> tuple[float | None, str]:
    """The metric's drop when measured, else the output's SQNR (an exact, infinite SQNR is not drawn)."""
    if row.drop is not None and finite(row.drop) is not None:
        return row.drop, "metric drop"
    return finite(row.sqnr_db), "SQNR (dB)"


def _best_trial(report: Any) -> Any:
    log = report.tuning
    return None if log is None else next((t for t in log.trials if t.number == log.best), None)


def _basename(path: str) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def _ratio(name: str, before: float, after: float) -> str:
    if name == "metrics":
        return f"{after - before:+.3g}"
    if name == "latency" and after:
        return f"{before / after:.2f}x faster"
    if name == "macs" and after:
        return f"{before / after:.2f}x fewer"
    return f"{before / after:.2f}x smaller" if after else ""
