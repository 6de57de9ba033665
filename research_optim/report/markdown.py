"""Render a :class:`~research_optim.report.document.Document` as Markdown (figures as files next to it)."""

from __future__ import annotations

from research_optim.report.document import Document, Figure, Table, Text

FIGURE_DIR = "figures"


def table_markdown(table: Table) -> str:
    header, rows = table.cells()
    def cell(text: str, bold: bool) -> str:
        text = text.replace("|", "\\|").replace("\n", " ")
        return f"**{text}**" if bold else text

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(t, b) for t, b in row) + " |" for row in rows]
    caption = f"\n\n*{table.caption}*" if table.caption else ""
    return "\n".join(lines) + caption


def render_markdown(document: Document, figure_dir: str = FIGURE_DIR) -> str:
    """The Markdown text; figure ``f`` is referenced as ``{figure_dir}/{f.name}.png``."""
    parts = [f"# {document.title}"]
    for section in document.sections:
        parts.append(f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(block.text)
            elif isinstance(block, Table):
                parts.append(table_markdown(block))
            elif isinstance(block, Figure):
                parts.append(f"![{block.caption or block.name}]({figure_dir}/{block.name}.png)"
                             + (f"\n\n*{block.caption}*" if block.caption else ""))
    return "\n\n".join(parts) + "\n"
