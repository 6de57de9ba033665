"""The report as data: sections of text, tables and figures, rendered by :mod:`.html`, :mod:`.markdown` and
:mod:`.wandb_report` alike, so the three outputs always say the same thing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Union

import pandas as pd


@dataclass
class Text:
    """A paragraph; `code` spans and **bold** are the only markup (both renderers understand them)."""

    text: str


@dataclass
class Table:
    """A table; ``best`` marks the minimum (or maximum) of each row (or column) in bold; ``best_for`` overrides
    it for named rows (columns), e.g. an "average rank" row whose best is its minimum in an accuracy table."""

    frame: pd.DataFrame
    caption: str = ""
    best: Literal["min", "max"] | None = None
    best_along: Literal["row", "column"] = "row"
    index: bool = True
    best_for: dict[str, Literal["min", "max"]] = field(default_factory=dict)

    def cells(self) -> tuple[list[str], list[list[tuple[str, bool]]]]:
        """Header and rows of (formatted text, is_best) pairs; the index, when kept, is the first column."""
        frame = self.frame
        bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
        if self.best is not None:
            numeric = frame.apply(pd.to_numeric, errors="coerce")
            axis = 1 if self.best_along == "row" else 0
            names = numeric.index if axis == 1 else numeric.columns
            wanted = pd.Series([self.best_for.get(str(n), self.best) for n in names], index=names)
            extreme = numeric.min(axis=axis).where(wanted == "min", numeric.max(axis=axis))
            bold = numeric.eq(extreme, axis=0 if axis == 1 else 1) & numeric.notna()
        header = ([str(frame.index.name or "")] if self.index else []) + [str(c) for c in frame.columns]
        rows = []
        marks = bold.to_numpy(dtype=bool)
        for i, (label, values) in enumerate(zip(frame.index, frame.itertuples(index=False))):
            cells = [(format_value(v), bool(marks[i, j])) for j, v in enumerate(values)]
            rows.append(([(str(label), False)] if self.index else []) + cells)
        return header, rows


@dataclass
class Figure:
    """A PNG image; ``name`` is its file name (without extension) when written next to the Markdown."""

    name: str
    png: bytes
    caption: str = ""


Block = Union[Text, Table, Figure]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def format_value(value: object) -> str:
    """Numbers with 4 significant digits (inf as ∞, NaN as –); everything else as str."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            return "–"
        if isinstance(value, float) and math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    try:
        if pd.isna(value):  # type: ignore[arg-type]
            return "–"
    except (TypeError, ValueError):
        pass
    return str(value)
