"""A reader's background: specialty, years of experience, familiarity with generative AI.

Seed 001 describes its two readers by exactly these traits: "two impartial specialists MRI and
CT modalities" and "One of the two specialists was already familiar with generative models and
artificial intelligence, whereas the other was unfamiliar with deep generative models." The
study stores them per reader (table ``backgrounds``) so the report can print them beside each
reader's counts. The owner gives them with ``--background ID:SPECIALTY:YEARS:yes|no``
(``create`` / ``add-readers``); otherwise a reader of a synthetic-only study is asked once,
at the first sign-in, before the first image.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from . import db

SPECIALTY_MAX = 100
YEARS_MAX = 70
GENAI_ANSWERS = ("yes", "no")


@dataclass(frozen=True)
class ReaderBackground:
    """What the report says about one reader (``given_by``: 'owner' or 'reader')."""

    specialty: str
    years_experience: int
    knows_generative_ai: str
    given_by: str = "owner"

    def describe(self) -> str:
        """One line for the report, e.g. 'neuroradiology, 12 years, knows generative AI'."""
        genai = ("knows generative AI" if self.knows_generative_ai == "yes"
                 else "unfamiliar with generative AI")
        return f"{self.specialty}, {self.years_experience} years, {genai}"


def make_background(specialty: str, years: str | int, genai: str,
                    given_by: str = "owner") -> ReaderBackground:
    """Validated background; raises ValueError with a message fit for a form or the CLI."""
    specialty = " ".join(str(specialty).split())
    if not 1 <= len(specialty) <= SPECIALTY_MAX:
        raise ValueError(f"the specialty needs 1 to {SPECIALTY_MAX} characters")
    try:
        years = int(str(years).strip())
    except ValueError:
        raise ValueError(f"years of experience must be a whole number, got {years!r}") from None
    if not 0 <= years <= YEARS_MAX:
        raise ValueError(f"years of experience must be 0..{YEARS_MAX}, got {years}")
    genai = str(genai).strip().lower()
    if genai not in GENAI_ANSWERS:
        raise ValueError(f"familiar with generative AI must be yes or no, got {genai!r}")
    return ReaderBackground(specialty, years, genai, given_by)


def parse_owner_background(text: str) -> tuple[str, ReaderBackground]:
    """``ID:SPECIALTY:YEARS:yes|no`` (the ``--background`` option) -> (reader id, background).

    The specialty may itself contain colons: the id is split off the front, years and the
    yes/no answer off the back.
    """
    reader_id, sep, rest = text.partition(":")
    parts = rest.rsplit(":", 2)
    if not sep or len(parts) != 3:
        raise ValueError(f"--background {text!r}: use ID:SPECIALTY:YEARS:yes|no, e.g. "
                         "dr.a:neuroradiology:12:yes")
    db.check_reader_id(reader_id.strip())
    try:
        return reader_id.strip(), make_background(*parts)
    except ValueError as err:
        raise ValueError(f"--background {text!r}: {err}") from None


def save_background(conn: sqlite3.Connection, reader_id: str,
                    background: ReaderBackground) -> None:
    """Store (or replace) a reader's background and commit."""
    if not db.has_backgrounds_table(conn):
        raise db.StudyFileError("this study file predates reader backgrounds; recreate it "
                                "with `synthmed reader-study create` to record them")
    if not db.reader_exists(conn, reader_id):
        raise ValueError(f"--background names reader {reader_id!r}, who is not in this study")
    with conn:
        conn.execute("INSERT OR REPLACE INTO backgrounds VALUES (?, ?, ?, ?, ?, ?)",
                     (reader_id, background.specialty, background.years_experience,
                      background.knows_generative_ai, background.given_by, db.now()))


def background_of(conn: sqlite3.Connection, reader_id: str) -> ReaderBackground | None:
    """The stored background of one reader, or None."""
    if not db.has_backgrounds_table(conn):
        return None
    row = conn.execute("SELECT specialty, years_experience, knows_generative_ai, given_by "
                       "FROM backgrounds WHERE reader_id = ?", (reader_id,)).fetchone()
    return ReaderBackground(*row) if row else None


def all_backgrounds(conn: sqlite3.Connection) -> dict[str, ReaderBackground]:
    """Every stored background keyed by reader id."""
    if not db.has_backgrounds_table(conn):
        return {}
    rows = conn.execute("SELECT reader_id, specialty, years_experience, knows_generative_ai, "
                        "given_by FROM backgrounds ORDER BY reader_id")
    return {r[0]: ReaderBackground(*r[1:]) for r in rows}
