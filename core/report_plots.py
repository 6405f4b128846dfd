"""The report's plots, drawn with matplotlib (the ``report`` extra) and returned as PNG bytes: the
per-layer figures here (sparsity, kept channels, weight and MAC shares, quantization ranges and scales),
the measured ones in :mod:`slimkit.report_measures`, and the helpers both use.

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
    from slimkit.report_measures import outcome_plot, sensitivity_plot, tuning_plot

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
          "grid.alpha": 0.3}


def _matplotlib() -> Any:
    try:
        import matplotlib
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
    labels = [short(r.name) for r in rows]
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
    return finish("sparsity", "Sparsity per layer",
                 f"Share of each kernel that is zero after compression, {zeros / total:.1%} of all "
                 f"{total:,} kernel weights; ticks mark each layer's target.", fig)


def channels_plot(report: Any, mpl: Any) -> Plot | None:
    """Kept channels of each channel group structured pruning shrank."""
    groups = list(report.groups)
    if not groups:
        return None
    labels = [f"{short(', '.join(g.producers), LABEL_CHARS - 10)} ({g.kept}/{g.channels})" for g in groups]
    fig, ax = _layer_figure(WIDTH, labels)
    y = list(range(len(groups)))
    ax.barh(y, [100.0] * len(groups), color=BEFORE, height=0.7, label="channels before")
    ax.barh(y, [100 * g.kept / max(1, g.channels) for g in groups], color=AFTER, height=0.7, label="kept")
    # the counts go in the labels: one text per bar costs more to lay out than the bars themselves
    _layer_axis(ax, labels)
    ax.set_xlim(0, 100)
    ax.set_xlabel("channels kept (%)")
    ax.legend(loc="lower right")
    return finish("channels", "Kept channels per group",
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
    caption = (f"Each layer's share of the multiply-accumulates per sample before ({count(sum(before))}) and "
               f"after ({count(sum(after))}).")
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
    names = [short(n) for n in names]
    fig, ax = _layer_figure(WIDTH, names, per_row=0.28)
    y = list(range(len(names)))
    ax.barh([i - 0.2 for i in y], [100 * b / total_before for b in before], height=0.4, color=BEFORE, label="before")
    ax.barh([i + 0.2 for i in y], [100 * a / total_after for a in after], height=0.4, color=AFTER, label="after")
    _layer_axis(ax, names)
    ax.set_xlabel("share of the model (%)")
    ax.legend(loc="lower right")
    return finish(key, title, caption, fig)


def quant_plot(report: Any, mpl: Any) -> Plot | None:
    """Every quantized tensor's float range and its scale (a span for per-channel scales)."""
    rows = list(report.quant)
    if not rows:
        return None
    labels = [f"{short(q.site, LABEL_CHARS - 12)} (int{q.bits}{', %d ch' % q.channels if q.channels > 1 else ''})"
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
    return finish("quant", "Quantization ranges and scales",
                 f"The float range each quantized tensor covers and its scale ({quantized} layer(s) on integer "
                 f"kernels, {len(report.weight_only)} weight-only, {len(report.float_layers)} kept float).",
                 fig, wide=True)


# -- helpers ----------------------------------------------------------------------------------------


def figure(mpl: Any, width: float, height: float, **subplots: Any) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig, fig.subplots(**subplots)


def finish(key: str, title: str, caption: str, fig: Any, wide: bool = False) -> Plot:
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


def short(text: str, limit: int = LABEL_CHARS) -> str:
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return text[:keep] + "…" + text[-(limit - 1 - keep):]


def finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def count(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def count_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: count(value))
