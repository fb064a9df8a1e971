"""`format_seconds`: a duration as people read it in a progress line (no Lightning import)."""

from __future__ import annotations


def format_seconds(seconds: float) -> str:
    """'45 s', '3 min', '1 h 05 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
