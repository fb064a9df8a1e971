"""Test helper: read back a table printed by `synthmed.console_table` (rows whose cells wrap onto more lines)."""

from __future__ import annotations


def read_console_table(text: str) -> list[list[str]]:
    """The rows (header first) of the first `| a | b |` table in `text`; a wrapped cell's lines joined by spaces.

    A line whose first cell is empty continues the row above (rich wraps a long cell there); the
    `|---|` rule under the header is skipped.
    """
    rows: list[list[str]] = []
    started = False
    for line in text.splitlines():
        if not line.startswith("|"):
            if started:
                break
            continue
        started = True
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if set(line.replace("|", "").strip()) <= {"-"}:
            continue  # the rule under the header
        if rows and not cells[0] and len(cells) == len(rows[-1]):
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    return rows
