"""The report's plots, drawn with matplotlib (the ``report`` extra) and returned as PNG bytes.

One function per figure; each returns None when the report holds nothing it could show, so a page has
plots only for what the run did. matplotlib is imported here only, lazily, and through its object API
(``Figure``, no ``pyplot``): drawing a report never changes the caller's backend or global figures.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Callable

from slimkit.errors import ExportError

#: Colours: "before" grey, "after" blue, as in every figure; feasible green, best red (tuning).
BEFORE, AFTER, TARGET = "#9aa3ad", "#1f77b4", "#222222"
FEASIBLE, INFEASIBLE, BEST = "#2ca02c", "#8c8c8c", "#d62728"
KIND_COLOURS = {"activation": "#ff7f0e", "kernel": "#1f77b4", "bias": "#9467bd"}

#: Figure width in inches at :data:`DPI`: a plot spans half the page (``wide`` plots the whole of it).
WIDTH, WIDE, DPI = 5.6, 11.4, 100
#: Longest layer label before its middle is elided (ResNet paths are long).
LABEL_CHARS = 38
#: Most bars of a share plot (the largest layers; the caption sums the others).
SHARE_ROWS = 40


@dataclass(frozen=True)
class Plot:
    """One figure of the page.

    Attributes:
        key: a short identifier (the HTML element's id): ``sparsity``, ``channels``, ``params``, ``macs``,
            ``quant``, ``outcome``, ``tuning``, ``sensitivity``.
        title: the figure's heading.
        caption: what it shows, in a sentence or two.
        png: the image.
        wide: it spans the page's width.
    """

    key: str
    title: str
    caption: str
    png: bytes
    wide: bool = False


def plots(report: Any) -> list[Plot]:
    """Every figure the report holds data for, in page order.

    Raises:
        ExportError: matplotlib is not installed (``pip install "slimkit[report]"``).
    """
    mpl = _matplotlib()
    out = []
    builders: list[Callable[[Any, Any], Plot | None]] = [
        sparsity_plot, channels_plot, params_plot, macs_plot, quant_plot, outcome_plot, tuning_plot,
        sensitivity_plot]
    with mpl.rc_context(_STYLE):
        for build in builders:
            plot = build(report, mpl)
            if plot is not None:
                out.append(plot)
    return out


_STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
          "legend.fontsize": 7, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
          "grid.alpha": 0.3, "svg.fonttype": "path"}


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401 - the API every builder uses
    except ImportError as exc:
        raise ExportError("report.html: drawing its plots needs matplotlib, which is not installed; "
                          "pip install \"slimkit[report]\"") from exc
    return matplotlib


# -- per-layer figures -------------------------------------------------------------------------------


def sparsity_plot(report: Any, mpl: Any) -> Plot | None:
    """Kernel sparsity per layer (bars) and each layer's target (ticks), for layers with a kernel."""
    rows = [r for r in report.layers if r.kernel_params]
    if not rows or not any(r.sparsity > 0 or r.target is not None for r in rows):
        return None
    labels = [_short(r.name) for r in rows]
    fig, ax = _layer_figure(WIDTH, labels)
    y = list(range(len(rows)))
    ax.barh(y, [100 * r.sparsity for r in rows], color=AFTER, height=0.7, label="achieved")
    targeted = [(i, r.target) for i, r in enumerate(rows) if r.target is not None]
    if targeted:
        ax.scatter([100 * t for _, t in targeted], [i for i, _ in targeted], marker="|", s=160, linewidths=2,
                   color=TARGET, zorder=3, label="target")
    _layer_axis(ax, labels)
    ax.set_xlim(0, 100)
    ax.set_xlabel("kernel sparsity (%)")
    ax.legend(loc="lower right")
    total = sum(r.kernel_params for r in rows)
    zeros = total - sum(r.kernel_nonzeros for r in rows)
    return _plot("sparsity", "Sparsity per layer",
                 f"Share of each kernel that is zero after compression, {zeros / total:.1%} of all "
                 f"{total:,} kernel weights; ticks mark each layer's target.", fig)


def channels_plot(report: Any, mpl: Any) -> Plot | None:
    """Kept channels of each channel group structured pruning shrank."""
    groups = list(report.groups)
    if not groups:
        return None
    labels = [f"{_short(', '.join(g.producers), LABEL_CHARS - 10)} ({g.kept}/{g.channels})" for g in groups]
    fig, ax = _layer_figure(WIDTH, labels)
    y = list(range(len(groups)))
    ax.barh(y, [100.0] * len(groups), color=BEFORE, height=0.7, label="channels before")
    ax.barh(y, [100 * g.kept / max(1, g.channels) for g in groups], color=AFTER, height=0.7, label="kept")
    # the counts go in the labels: one text per bar costs more to lay out than the bars themselves
    _layer_axis(ax, labels)
    ax.set_xlim(0, 100)
    ax.set_xlabel("channels kept (%)")
    ax.legend(loc="lower right")
    return _plot("channels", "Kept channels per group",
                 "Each channel group (the layers whose outputs share channels) with the share of its channels "
                 "structured pruning kept.", fig)


def params_plot(report: Any, mpl: Any) -> Plot | None:
    """Each layer's share of the model's weights before and of its nonzero weights after."""
    rows = [r for r in report.layers if r.params]
    if not rows:
        return None
    before = [r.params if r.params_before is None else r.params_before for r in rows]
    after = [r.nonzeros for r in rows]
    caption = (f"Each layer's share of all weights before ({sum(before):,}) and of the nonzero weights after "
               f"({sum(after):,}, {sum(after) / max(1, sum(before)):.1%} of before).")
    if report.groups and any(r.params_before is None for r in rows):
        caption += " The layers' sizes before channel pruning were not recorded: 'before' uses the pruned shapes."
    return _shares_plot(mpl, "params", "Parameters per layer", caption, [r.name for r in rows], before, after)


def macs_plot(report: Any, mpl: Any) -> Plot | None:
    """Each layer's share of the multiply-accumulates before and after, when the report has them."""
    rows = [r for r in report.layers if r.macs is not None]
    if not rows:
        return None
    before = [r.macs if r.macs_before is None else r.macs_before for r in rows]
    after = [r.macs for r in rows]
    caption = (f"Each layer's share of the multiply-accumulates per sample before ({_count(sum(before))}) and "
               f"after ({_count(sum(after))}).")
    return _shares_plot(mpl, "macs", "MACs per layer", caption, [r.name for r in rows], before, after)


def _shares_plot(mpl: Any, key: str, title: str, caption: str, names: list[str], before: list[int],
                 after: list[int]) -> Plot:
    total_before, total_after = max(1, sum(before)), max(1, sum(after))
    if len(names) > SHARE_ROWS:
        # a deep network's hundreds of layers would be unreadable: the largest are drawn, the rest summed
        # in words (a bar for them would dwarf every other)
        order = sorted(range(len(names)), key=lambda i: -max(before[i], after[i]))
        keep, rest = sorted(order[:SHARE_ROWS]), order[SHARE_ROWS:]
        caption += (f" The {SHARE_ROWS} largest of {len(names)} layers are drawn; the other {len(rest)} hold "
                    f"{sum(before[i] for i in rest) / total_before:.1%} before and "
                    f"{sum(after[i] for i in rest) / total_after:.1%} after.")
        names, before, after = [names[i] for i in keep], [before[i] for i in keep], [after[i] for i in keep]
    names = [_short(n) for n in names]
    fig, ax = _layer_figure(WIDTH, names, per_row=0.28)
    y = list(range(len(names)))
    ax.barh([i - 0.2 for i in y], [100 * b / total_before for b in before], height=0.4, color=BEFORE, label="before")
    ax.barh([i + 0.2 for i in y], [100 * a / total_after for a in after], height=0.4, color=AFTER, label="after")
    _layer_axis(ax, names)
    ax.set_xlabel("share of the model (%)")
    ax.legend(loc="lower right")
    return _plot(key, title, caption, fig)


def quant_plot(report: Any, mpl: Any) -> Plot | None:
    """Every quantized tensor's float range and its scale (a span for per-channel scales)."""
    rows = list(report.quant)
    if not rows:
        return None
    labels = [f"{_short(q.site, LABEL_CHARS - 12)} (int{q.bits}{', %d ch' % q.channels if q.channels > 1 else ''})"
              for q in rows]
    fig, (left, right) = _layer_figure(WIDE, labels, ncols=2, sharey=True)
    y = list(range(len(rows)))
    colours = [KIND_COLOURS.get(q.kind, AFTER) for q in rows]
    # one collection per axis (not a line per tensor): a ResNet has hundreds of sites
    left.hlines(y, [q.range_min for q in rows], [q.range_max for q in rows], colors=colours, linewidth=4)
    scaled = [i for i, q in enumerate(rows) if q.scale_min > 0 and q.scale_max > 0]
    if scaled:
        lo, hi = [rows[i].scale_min for i in scaled], [rows[i].scale_max for i in scaled]
        right.hlines(scaled, lo, hi, colors=[colours[i] for i in scaled], linewidth=2)
        right.scatter(lo + hi, scaled + scaled, c=[colours[i] for i in scaled] * 2, s=9, zorder=3)
    left.axvline(0, color=TARGET, linewidth=0.6)
    _layer_axis(left, labels)
    left.set_xlabel("calibrated float range")
    right.set_xscale("log")
    right.set_xlabel("scale (log; a span: per-channel minimum to maximum)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, linewidth=4, label=k) for k, c in KIND_COLOURS.items()
               if any(q.kind == k for q in rows)]
    left.legend(handles=handles, loc="lower right")
    quantized = len(report.quantized)
    return _plot("quant", "Quantization ranges and scales",
                 f"The float range each quantized tensor covers and its scale ({quantized} layer(s) on integer "
                 f"kernels, {len(report.weight_only)} weight-only, {len(report.float_layers)} kept float).",
                 fig, wide=True)


# -- the outcome: metrics, size, latency -------------------------------------------------------------


def outcome_plot(report: Any, mpl: Any) -> Plot | None:
    """Metrics, sizes, latency and MACs before and after, with the metric against the size."""
    panels = outcome_panels(report)
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = _figure(mpl, WIDE, 3.0 * nrows, nrows=nrows, ncols=cols, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, (name, data) in zip(flat, panels):
        if name == "trade":
            _trade_axis(ax, *data)
        else:
            unit = {"metrics": "", "size": "bytes", "latency": "ms", "macs": "MACs per sample"}[name]
            _pairs_axis(ax, name, unit, data)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    return _plot("outcome", "Metrics, size and latency",
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
    return [(k, _finite(report.metrics_before.get(k)), _finite(report.metrics_after.get(k))) for k in keys
            if _finite(report.metrics_before.get(k)) is not None or _finite(report.metrics_after.get(k)) is not None]


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
    ax.set_xticklabels([_short(label, 22) for label, _, _ in pairs], rotation=20, ha="right")
    ax.set_title(name + (f" ({unit})" if unit else ""))
    if unit == "bytes":
        ax.yaxis.set_major_formatter(_count_formatter())
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
    ax.xaxis.set_major_formatter(_count_formatter())
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
    trials = [t for t in log.trials if t.error is None and t.metric is not None and _finite(t.metric) is not None]
    if not trials:
        return None
    fig, (left, right) = _figure(mpl, WIDE, 3.4, ncols=2)
    for ok, colour, marker, label in ((True, FEASIBLE, "o", "met the target"), (False, INFEASIBLE, "x", "missed")):
        chosen = [t for t in trials if t.feasible == ok]
        if chosen:
            left.scatter([t.compression for t in chosen], [t.metric for t in chosen], color=colour, marker=marker,
                         s=24, label=label, zorder=2)
            right.scatter([t.number for t in chosen], [t.compression for t in chosen], color=colour, marker=marker,
                          s=24, label=label, zorder=2)
    if _finite(log.baseline) is not None:
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
    return _plot("tuning", "Tuning trials",
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
    fig, axes = _figure(mpl, WIDE if len(panels) == 2 else WIDTH, 3.4, ncols=len(panels), squeeze=False)
    for ax, (action, rows) in zip(axes[0], panels):
        what = _measure(rows[0])[1]
        layers = list(dict.fromkeys(r.layer for r in rows))
        if action == "prune":
            for name in layers:
                points = sorted((r.setting, _measure(r)[0]) for r in rows if r.layer == name)
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                        label=_short(name, 24))
            ax.set_xlabel("pruning ratio (this layer alone)")
        else:
            bits = sorted({int(r.setting) for r in rows}, reverse=True)
            width = 0.8 / len(bits)
            for j, b in enumerate(bits):
                values = {r.layer: _measure(r)[0] for r in rows if int(r.setting) == b}
                ax.bar([i + j * width - 0.4 + width / 2 for i in range(len(layers))],
                       [values.get(n, 0.0) for n in layers], width=width, label=f"int{b}")
            ax.set_xticks(list(range(len(layers))))
            ax.set_xticklabels([_short(n, 22) for n in layers], rotation=30, ha="right")
        ax.set_ylabel(what)
        ax.set_title(f"{action}: {what}")
        if len(layers) <= 12 or action == "quantize":
            ax.legend(loc="best")
    return _plot("sensitivity", "Sensitivity per layer",
                 f"One layer changed at a time, the others left as they were (baseline {sens.metric_name or '-'} "
                 f"{'-' if sens.baseline is None else format(sens.baseline, '.4g')}); higher is worse for a drop, "
                 "better for SQNR.", fig, wide=len(panels) == 2)


def _measure(row: Any) -> tuple[float | None, str]:
    """The metric's drop when measured, else the output's SQNR (an exact, infinite SQNR is not drawn)."""
    if row.drop is not None and _finite(row.drop) is not None:
        return row.drop, "metric drop"
    return _finite(row.sqnr_db), "SQNR (dB)"


# -- helpers ----------------------------------------------------------------------------------------


def _figure(mpl: Any, width: float, height: float, **subplots: Any) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig, fig.subplots(**subplots)


def _plot(key: str, title: str, caption: str, fig: Any, wide: bool = False) -> Plot:
    buffer = io.BytesIO()
    # No Software tag (it holds matplotlib's URL): the page is to name no address at all.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return Plot(key, title, caption, buffer.getvalue(), wide)


def _rows_height(n: int, per_row: float = 0.22) -> float:
    if n > 40:  # deep networks: denser rows (labels are 7 pt)
        per_row = min(per_row, 0.16)
    return max(2.2, 0.9 + per_row * n)


def _layer_figure(width: float, labels: list[str], per_row: float = 0.22, **subplots: Any) -> tuple[Any, Any]:
    """A figure with a row per layer. Its margins are set from the longest label rather than by
    constrained layout, which measures every tick label and doubles the drawing time of a deep network."""
    from matplotlib.figure import Figure

    height = _rows_height(len(labels), per_row)
    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(**subplots)
    label_inches = 0.2 + 0.056 * max((len(label) for label in labels), default=4)  # 7 pt: ~0.055 in a character
    fig.subplots_adjust(left=min(0.6, label_inches / width), right=1 - 0.2 / width, top=1 - 0.15 / height,
                        bottom=0.5 / height, wspace=0.04)
    return fig, axes


def _layer_axis(ax: Any, labels: list[str]) -> None:
    ax.set_yticks(list(range(len(labels))))
    ax.set_yticklabels(labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first layer on top, as in the tables
    ax.grid(axis="y", visible=False)


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return text[:keep] + "…" + text[-(limit - 1 - keep):]


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


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


def _count(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _count_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: _count(value))
