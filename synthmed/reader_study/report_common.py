"""What both reader-study reports share: the report file name, the output-folder rule (never
replace a user's files) and Markdown tables with escaped cells."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .escaping import md_text

REPORT_NAME = "reader_study_report.md"


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return md_text(value)


def md_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (no tabulate dependency)."""
    if not len(frame):
        return "_none_\n"
    head = "| " + " | ".join(map(md_text, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([head, rule, *body]) + "\n"


def _prepare_out(study: Path, out: Path | None) -> Path:
    out = out or study.with_name(f"{study.stem}_report")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the report")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_NAME).exists():
        raise ValueError(f"--out {out} is a non-empty folder that holds no earlier reader-study "
                         "report; give a new or empty folder so no file of yours is replaced")
    out.mkdir(parents=True, exist_ok=True)
    return out
