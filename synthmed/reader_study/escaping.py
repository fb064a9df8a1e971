"""Make reader-supplied text (notes, and folder or file names) inert in the report files.

Two readers of the report files could be attacked through a note:

* ``reader_study_report.md`` is rendered as Markdown, which passes raw HTML through: a note
  ``<script>...`` or ``![x](http://tracker/...)`` would run or load when the report is viewed.
  ``md_text`` escapes HTML (``html.escape``) and backslash-escapes the Markdown punctuation
  that starts links, images, emphasis, code, headings or table cells, so a note renders as the
  text the reader typed. Hand-written because neither Markdown nor markdown-it-py offers an
  escape function for Markdown source.
* ``notes.csv`` / ``votes.csv`` open in spreadsheets, which run a cell starting with ``=``,
  ``+``, ``-`` or ``@`` (and, in some, a leading tab or carriage return) as a formula, e.g.
  ``=HYPERLINK(...)``. ``csv_safe`` prefixes such cells with a single quote, as OWASP's
  "CSV Injection" page advises; the spreadsheet then shows the text. Three lines, so no
  dependency (defusedcsv wraps the csv module, not pandas' ``to_csv``).
"""

from __future__ import annotations

import html
import re

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that start
# or end inline syntax (links, images, emphasis, code, strike-through, table cells). The text
# is always inside a line that starts with fixed text, so line-start syntax (#, -, 1.) cannot
# arise, and < > & are entities already.
_MD_ACTIVE = re.compile(r"([\\`*_\[\]!|~])")


def md_text(value: object) -> str:
    """``value`` as Markdown source that renders as exactly this text, on one line."""
    text = " ".join(str(value).split())  # no line breaks: one table cell, one paragraph
    text = html.escape(text, quote=True)  # <, >, &, ", ' -> entities (no raw HTML)
    return _MD_ACTIVE.sub(r"\\\1", text)


def csv_cell(value: object) -> object:
    """A text cell a spreadsheet will not evaluate as a formula; other values unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell passed through ``csv_cell``.

    Only text (object / string) columns change: numbers such as a negative kappa stay numbers.
    """
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(csv_cell)
    return out
