"""Tables printed on the console: at most `CONSOLE_WIDTH` (120) characters wide.

The files (report.md, evaluation.md, cv_summary.md, sweep_summary.md) keep every column; what a
command prints is a chosen subset of them (`TextTable.select`), laid out by rich's `Table`, which
shrinks the widest columns and wraps their cells onto more lines until the table fits. With
`box.MARKDOWN` a row that needs no wrapping is still a Markdown table row (`| a | b |`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Sequence

CONSOLE_WIDTH = 120


@dataclass
class TextTable:
    """A header and rows of text cells: rendered whole as Markdown (files) or, fitted, for a terminal."""

    head: list[str]
    rows: list[list[str]] = field(default_factory=list)
    wrap: tuple[str, ...] | None = None  # the columns whose cells may wrap on the console (None: any)

    def add(self, cells: Sequence[object]) -> None:
        self.rows.append([str(c) for c in cells])

    def select(self, columns: Sequence[str]) -> "TextTable":
        """The same rows with only `columns` (headers of this table; absent ones are left out), in that order."""
        index = [self.head.index(c) for c in columns if c in self.head]
        return TextTable([self.head[i] for i in index], [[row[i] for i in index] for row in self.rows], self.wrap)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.head) + " |", "|" + "---|" * len(self.head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def console(self, width: int = CONSOLE_WIDTH) -> str:
        return console_table(self.head, self.rows, width, self.wrap)


def console_table(head: Sequence[str], rows: Sequence[Sequence[str]], width: int = CONSOLE_WIDTH,
                  wrap: Sequence[str] | None = None) -> str:
    """`head` + `rows` as a Markdown-style table no line of which is wider than `width`.

    Cells of the `wrap` columns (None: of any column, the widest first) wrap onto more lines; the
    others are kept whole, and cut with "…" only when they alone are wider than `width`."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # Text, not str: "[0.1, 0.2]" must not be read as rich markup

    table = Table(box=box.MARKDOWN, show_edge=True, pad_edge=True)
    for title in head:
        whole = wrap is not None and title not in wrap
        table.add_column(Text(str(title)), overflow="ellipsis" if whole else "fold", no_wrap=whole)
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False, no_color=True, emoji=False,
            highlight=False, legacy_windows=False).print(table)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines()]
    return "\n".join(lines).strip("\n")
