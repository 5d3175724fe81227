"""A self-contained HTML report: sections of text, tables and embedded PNG figures (no external files)."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kneeoa import __version__

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
color:#1d232b;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #d8dee6;padding-bottom:.2em;margin-top:2em}
.sub{color:#5b6672}.note{background:#fff7e0;border-left:4px solid #e0a800;padding:.5em .8em;margin:1em 0}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}th,td{padding:.28em .6em;border-bottom:1px solid #e3e7ec;
text-align:right}th{background:#f2f5f8;text-align:center}td:first-child,th:first-child{text-align:left}
tr.sig td{background:#eaf6ea}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e3e7ec}
figcaption{color:#5b6672;font-size:.9em}nav a{margin-right:1em}code{background:#f2f5f8;padding:0 .25em}
.legend{color:#5b6672;font-size:.86em;margin-top:-.4em;max-width:60em}
"""


@dataclass
class Table:
    rows: list[dict[str, Any]]
    columns: list[str] | None = None
    caption: str = ""
    highlight: str | None = None  # a boolean column whose true rows are shaded
    human: bool = False  # headers from contracts.report.COLUMN_LABELS (the CSV name stays as a tooltip)
    legend: str = ""  # one line under the table saying what the columns mean
    links: tuple[str, ...] = ()  # columns holding file paths relative to the report's folder: shown as links


@dataclass
class Figure:
    png: bytes
    caption: str = ""


@dataclass
class Section:
    title: str
    text: str = ""  # trusted HTML written by kneeoa (paragraphs)
    items: list[Table | Figure] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


def fmt(value: Any) -> str:
    """Numbers to 3 decimals (p and q values in scientific form when tiny), everything else as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.3f}"
    return html.escape(str(value))


def _link(path: Any) -> str:
    """A relative file path as a link (percent-encoded href; a path with a scheme or a leading / stays text)."""
    from urllib.parse import quote

    text = str(path)
    if ":" in text.split("/")[0] or text.startswith(("/", "\\")):
        return html.escape(text)  # never an absolute or scheme link (javascript:, file:) from a table cell
    return f'<a href="{html.escape(quote(text))}">{html.escape(text)}</a>'


def _table_html(table: Table) -> str:
    columns = table.columns or (list(table.rows[0]) if table.rows else [])
    if table.human:
        from kneeoa.contracts.report import column_label

        head = "".join(f'<th title="{html.escape(c)}">{html.escape(column_label(c))}</th>' for c in columns)
    else:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in table.rows:
        cls = ' class="sig"' if table.highlight and row.get(table.highlight) in (True, "True", "true", 1) else ""
        cells = "".join(f"<td>{_link(row.get(c)) if c in table.links and row.get(c) else fmt(row.get(c, ''))}</td>"
                        for c in columns)
        body.append(f"<tr{cls}>{cells}</tr>")
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    legend = f'<p class="legend">{html.escape(table.legend)}</p>' if table.legend else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{legend}"


def _figure_html(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (f'<figure><img alt="{html.escape(figure.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>")


def render_report(title: str, sections: list[Section], subtitle: str = "") -> str:
    """The whole page as one string."""
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
             f'<p class="sub">{html.escape(subtitle)} · kneeoa {__version__}</p><nav>{nav}</nav>']
    for section in sections:
        parts.append(f'<h2 id="{section.anchor}">{html.escape(section.title)}</h2>{section.text}')
        for item in section.items:
            parts.append(_table_html(item) if isinstance(item, Table) else _figure_html(item))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, title: str, sections: list[Section], subtitle: str = "") -> Path:
    from kneeoa.utils.atomic import atomic_write_text

    atomic_write_text(path, render_report(title, sections, subtitle))
    return Path(path)
