"""A table of results as plain data, drawn by rich for the terminal or written as Markdown.

A :class:`Sheet` is a title, its columns (each marked as part of the run's identity or not, with the legend
of its abbreviation), its rows of cells (rich markup) and the notes printed once under it. ``show`` draws it
with :func:`to_rich`, ``export --format md`` writes it with :func:`to_markdown`: one table definition, two
renderings.

A sheet wider than the console folds (:func:`fold`) into parts that each repeat the identity columns, so no
identity cell is ever cut: identity columns never wrap and never shrink below their longest cell; the other
columns are spread over as many parts as the width needs, and the notes come once, under the last part. A
sheet of few runs and many figures reads better turned (:func:`transpose`: a row per figure, a column per
run); :func:`layout` takes whichever of the two needs fewer parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from rich.markup import escape
from rich.table import Table
from rich.text import Text

# What a column costs beyond its text in rich's default table: one space each side and one border.
COLUMN_OVERHEAD = 3
TABLE_OVERHEAD = 1  # the table's left edge
# A wrapping column (the status and its reason) is budgeted at most this wide when parts are laid out.
WRAP_BUDGET = 30


@dataclass(frozen=True)
class Column:
    """One column: its header, alignment, whether it identifies the run (never wrapped, never cut, repeated
    in every part of a folded sheet), whether its text may wrap (the status and its reason), and the
    explanation of its header printed under the table (empty when the header says it all)."""

    header: str
    justify: str = "right"
    identity: bool = False
    wrap: bool = False
    legend: str = ""


@dataclass(frozen=True)
class Sheet:
    """A titled table of rich-markup cells, with the notes (conventions, legend) printed once under it."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()
    part: Optional[tuple[int, int]] = field(default=None)  # (i, n) when it is part i of n of a folded sheet

    def legend(self) -> list[str]:
        """``header: explanation`` for every column with a legend, in column order, each once."""
        seen: dict[str, str] = {}
        for c in self.columns:
            if c.legend and c.header not in seen:
                seen[c.header] = c.legend
        return [f"{header}: {text}" for header, text in seen.items()]

    def caption(self) -> str:
        """The notes, then the legend of the abbreviations, one per line."""
        return "\n".join([*self.notes, *self.legend()])

    def full_title(self) -> str:
        return self.title + (f" (part {self.part[0]} of {self.part[1]})" if self.part else "")


def plain(markup: str) -> str:
    """The text of a rich-markup cell, without its styles."""
    return Text.from_markup(markup).plain


def _width(sheet: Sheet, index: int) -> int:
    """The width column ``index`` wants: its header or its longest cell (a wrapping one: its budget)."""
    column = sheet.columns[index]
    cells = [Text.from_markup(row[index]).cell_len for row in sheet.rows]
    header = max(len(line) for line in column.header.split("\n"))
    natural = max([header, *cells])
    return min(natural, max(WRAP_BUDGET, header)) if column.wrap else natural


def fold(sheet: Sheet, width: int) -> list[Sheet]:
    """The sheet as parts no wider than ``width`` (one part when it fits): every part holds the identity
    columns, then as many of the other columns, in order, as fit beside them (at least one); the notes go
    under the last part only."""
    widths = [_width(sheet, i) + COLUMN_OVERHEAD for i in range(len(sheet.columns))]
    identity = [i for i, c in enumerate(sheet.columns) if c.identity]
    others = [i for i, c in enumerate(sheet.columns) if not c.identity]
    if TABLE_OVERHEAD + sum(widths) <= width or not others:
        return [sheet]
    room = width - TABLE_OVERHEAD - sum(widths[i] for i in identity)
    groups: list[list[int]] = [[]]
    used = 0
    for i in others:
        if groups[-1] and used + widths[i] > room:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += widths[i]
    bare = tuple(replace(c, legend="") for c in sheet.columns)  # the legend moves into the last part's notes
    parts = []
    for n, group in enumerate(groups, start=1):
        keep = sorted(identity + group)
        parts.append(replace(
            sheet, columns=tuple(bare[i] for i in keep), rows=tuple(tuple(row[i] for i in keep) for row in sheet.rows),
            notes=(*sheet.notes, *sheet.legend()) if n == len(groups) else (), part=(n, len(groups))))
    return parts


def transpose(sheet: Sheet) -> Sheet:
    """The sheet turned a quarter: one row per figure (its header first), one column per run headed by the
    run's identity cells (one per line); for a few runs with many figures (a workload's ~20 metrics)."""
    identity = [i for i, c in enumerate(sheet.columns) if c.identity]
    figures = [i for i, c in enumerate(sheet.columns) if not c.identity]
    runs = tuple(Column("\n".join(plain(row[i]) for i in identity), justify="right", wrap=True)
                 for row in sheet.rows)
    header = "/".join(sheet.columns[i].header for i in identity)
    rows = tuple((escape(sheet.columns[i].header), *(row[i] for row in sheet.rows)) for i in figures)
    return Sheet(title=f"{sheet.title} · one column per run", columns=(Column(header, "left", identity=True), *runs),
                 rows=rows, notes=(*sheet.notes, *sheet.legend()))


def layout(sheet: Sheet, width: int) -> list[Sheet]:
    """The sheet as the fewest tables no wider than ``width``: :func:`fold` of the sheet, or of its
    :func:`transpose` when that takes fewer parts (the sheet as it is on a tie)."""
    folded = fold(sheet, width)
    if len(folded) == 1 or not sheet.rows:
        return folded
    turned = fold(transpose(sheet), width)
    return turned if len(turned) < len(folded) else folded


def to_rich(sheet: Sheet) -> Table:
    """The sheet as a rich table: identity columns never wrap and never shrink below their longest cell
    (and fold their text rather than cut it, should the console be narrower than they are); no cell is ever
    cut to an ellipsis."""
    table = Table(title=escape(sheet.full_title()), caption=escape(sheet.caption()) or None, header_style="bold",
                  caption_justify="left")
    for i, c in enumerate(sheet.columns):
        if c.identity:
            table.add_column(escape(c.header), justify=c.justify, no_wrap=True, overflow="fold",
                             min_width=_width(sheet, i))
        else:  # a part fits its width; on a console narrower still, a figure wraps rather than loses digits
            table.add_column(escape(c.header), justify=c.justify, overflow="fold")
    for row in sheet.rows:
        table.add_row(*row)
    return table


def _md_text(text: str) -> str:
    """Plain text (a title, a header, a note) as one Markdown table cell or line."""
    return text.replace("|", "\\|").replace("\n", " ")


def _md_cell(markup: str) -> str:
    return _md_text(plain(markup))


def to_markdown(sheet: Sheet) -> str:
    """The sheet as Markdown: a heading, the table (every column: Markdown has no width) and its notes and
    legend as a list under it."""
    lines = [f"### {_md_text(sheet.full_title())}", ""]
    lines.append("| " + " | ".join(_md_text(c.header) for c in sheet.columns) + " |")
    lines.append("|" + "".join("---:|" if c.justify == "right" else "---|" for c in sheet.columns))
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in sheet.rows]
    caption = sheet.caption()
    if caption:
        lines += [""] + [f"- {_md_text(line)}" for line in caption.splitlines()]
    return "\n".join(lines) + "\n"
