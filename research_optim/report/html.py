"""Render a :class:`~research_optim.report.document.Document` as one self-contained HTML file (PNGs inlined)."""

from __future__ import annotations

import base64
import html
import re

from research_optim.report.document import Document, Figure, Table, Text

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
caption{caption-side:bottom;font-style:italic;text-align:left;color:#555;padding-top:3px}
figure{margin:1em 0}figcaption{font-style:italic;color:#555;font-size:.9em}img{max-width:100%}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.8em}code{background:#f3f3f3;padding:0 2px}
nav a{margin-right:1em}
"""


def inline(text: str) -> str:
    """Escape, then turn ```blocks```, `code` and **bold** into HTML."""
    out = []
    for i, part in enumerate(re.split(r"```[a-z]*\n?(.*?)```", text, flags=re.S)):
        if i % 2:
            out.append(f"<pre>{html.escape(part)}</pre>")
            continue
        escaped = html.escape(part)
        escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
        escaped = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)
        out.append(escaped.replace("\n\n", "<br><br>"))
    return "".join(out)


def table_html(table: Table) -> str:
    header, rows = table.cells()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td><b>{html.escape(t)}</b></td>" if b else f"<td>{html.escape(t)}</td>" for t, b in row)
        + "</tr>" for row in rows)
    caption = f"<caption>{inline(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    caption = f"<figcaption>{inline(figure.caption)}</figcaption>" if figure.caption else ""
    return f'<figure><img alt="{html.escape(figure.name)}" src="data:image/png;base64,{data}">{caption}</figure>'


def render_html(document: Document) -> str:
    nav = " ".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(document.sections))
    body = []
    for i, section in enumerate(document.sections):
        body.append(f'<h2 id="s{i}">{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Text):
                body.append(f"<p>{inline(block.text)}</p>")
            elif isinstance(block, Table):
                body.append(table_html(block))
            elif isinstance(block, Figure):
                body.append(figure_html(block))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(document.title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(document.title)}</h1><nav>{nav}</nav>"
            + "\n".join(body) + "</body></html>\n")
