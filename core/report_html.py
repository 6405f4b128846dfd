"""``report.html``: one self-contained page of a compression run, plots first, then every table.

The page holds everything it shows: CSS inline, plots as PNG data URIs (:mod:`slimkit.report_plots`),
no script, font, stylesheet or image fetched from anywhere, so it opens offline, from a mail attachment
or a CI artifact alike. Its tables are :meth:`Report.to_markdown`'s, converted, so ``report.md`` and the
page never disagree.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Any

from slimkit.staging import check_target, staged

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1f21;
       margin: 0 auto; max-width: 1180px; padding: 16px 20px 48px; background: #fff; }
h1 { font-size: 22px; margin: 4px 0 2px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.summary { color: #444; margin: 0 0 8px; }
.summary b { color: #1d1f21; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 14px; }
figure { margin: 0; border: 1px solid #ddd; border-radius: 4px; padding: 8px; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 12px; color: #555; margin-top: 4px; }
figcaption b { color: #1d1f21; font-size: 13px; display: block; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 12px; }
th, td { border: 1px solid #d4d4d4; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
ul { padding-left: 20px; } li { margin: 2px 0; }
.none { color: #777; font-style: italic; }
"""


def write_html(report: Any, path: str | os.PathLike[str]) -> Path:
    """Writes ``report`` as one self-contained HTML page, atomically.

    Args:
        report: a :class:`slimkit.Report` (``result.report``).
        path: the file to write (replaced in one step: a reader sees the old page or the new one).

    Returns:
        ``path`` as a Path.

    Raises:
        ExportError: ``path`` cannot be written (checked before any plot is drawn), or matplotlib is
            not installed; the message names the file or the package.
    """
    path = Path(path)
    target = check_target(path, "report.html")
    text = render_html(report)
    with staged(target, "report.html") as out:
        out.path.write_text(text, encoding="utf-8")
        out.commit()
    return path


def render_html(report: Any) -> str:
    """The page's HTML text (what :func:`write_html` writes).

    Raises:
        ExportError: matplotlib is not installed.
    """
    from slimkit.report_plots import plots

    figures = plots(report)
    title = f"slimkit report ({report.framework})"
    body = [f"<h1>{_esc(title)}</h1>", f'<p class="summary">{_summary(report)}</p>']
    body.append("<h2>Plots</h2>")
    if figures:
        body.append('<div class="plots">')
        for plot in figures:
            data = base64.b64encode(plot.png).decode("ascii")
            wide = ' class="wide"' if plot.wide else ""
            body.append(f'<figure id="plot-{plot.key}"{wide}>'
                        f'<img alt="{_esc(plot.title)}" src="data:image/png;base64,{data}">'
                        f"<figcaption><b>{_esc(plot.title)}</b>{_esc(plot.caption)}</figcaption></figure>")
        body.append("</div>")
    else:
        body.append('<p class="none">Nothing to plot: the report holds no layers, metrics or measurements.</p>')
    body.append("<h2>Tables</h2>")
    markdown = report.to_markdown()
    # the markdown's own title is the page's <h1> already
    body.append(markdown_html(markdown.split("\n", 1)[1] if markdown.startswith("## ") else markdown))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            # forbids the page any fetch: whatever a future edit adds, it stays offline
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">\n"
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _summary(report: Any) -> str:
    parts = [f"<b>{report.params:,}</b> weights, <b>{report.nonzeros:,}</b> nonzero "
             f"({1 - report.nonzeros / max(1, report.params):.1%} zero)"]
    for key in report.metrics_after:
        before, after = report.metrics_before.get(key), report.metrics_after[key]
        change = "" if before is None else f" (before {_fmt(before)})"
        parts.append(f"{_esc(key)} <b>{_fmt(after)}</b>{_esc(change)}")
    if report.stages:
        parts.append(f"{len(report.stages)} stage(s): " + _esc(", ".join(s.name for s in report.stages)))
    if report.tuning is not None:
        parts.append(f"tuned: {_esc(report.tuning.message)}")
    return "; ".join(parts)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- the markdown slimkit writes, as HTML ------------------------------------------------------------

_SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+\s*$")


def markdown_html(markdown: str) -> str:
    """The subset of markdown :meth:`Report.to_markdown` writes (headings, pipe tables, ``-`` lists,
    paragraphs, ``**bold**``) as HTML, every text escaped."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i].rstrip())
                i += 1
            out.append(_table(block))
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading:
            level = max(2, len(heading.group(1)))  # the page's only <h1> is the report's title
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line:
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _table(block: list[str]) -> str:
    rows = [_cells(line) for line in block if not _SEPARATOR.match(line)]
    separator = next((line for line in block if _SEPARATOR.match(line)), None)
    numeric = [c.strip().endswith(":") for c in _cells(separator)] if separator else []
    head, body = (rows[0], rows[1:]) if separator and rows else ([], rows)

    def cell(tag: str, index: int, text: str) -> str:
        klass = ' class="num"' if index < len(numeric) and numeric[index] else ""
        return f"<{tag}{klass}>{_inline(text)}</{tag}>"

    html_rows = []
    if head:
        html_rows.append("<thead><tr>" + "".join(cell("th", j, c) for j, c in enumerate(head)) + "</tr></thead>")
    html_rows.append("<tbody>" + "".join("<tr>" + "".join(cell("td", j, c) for j, c in enumerate(row)) + "</tr>"
                                         for row in body) + "</tbody>")
    return "<table>" + "".join(html_rows) + "</table>"


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    return [c.strip() for c in inner.split("|")]


def _inline(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", _esc(text))


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)
