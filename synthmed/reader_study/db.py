"""The study file: one SQLite database holding the blinded images, the readers and their votes.

Tables
------
meta          key/value: schema version, seed, image size/mode, the two source roots.
images        one row per blinded image: ``public_id`` (random, the only id a reader ever
              sees), ``is_synthetic``, ``class_name`` (modality/class, '' for flat folders),
              ``source_path`` (relative to its root; never served) and ``png`` (re-encoded).
readers       reader id + salted PBKDF2 hash of the passcode chosen on the first visit.
sessions      sha256 of each browser's random session token -> reader id.
votes         the current vote of each reader on each image (primary key reader, image).
vote_history  every vote that a later vote replaced, with the time it was replaced.

The server opens a fresh connection per request, in WAL mode with ``synchronous=FULL`` and
commits after every vote, so killing the process loses no vote the browser saw accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

SCHEMA_VERSION = "1"
VOTES = ("real", "fake", "unclear")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    is_synthetic INTEGER NOT NULL CHECK (is_synthetic IN (0, 1)),
    class_name TEXT NOT NULL,
    source_path TEXT NOT NULL,
    png BLOB NOT NULL
);
CREATE TABLE readers (
    reader_id TEXT PRIMARY KEY,
    pass_salt BLOB NOT NULL,
    pass_hash BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    reader_id TEXT NOT NULL REFERENCES readers(reader_id),
    created_at TEXT NOT NULL
);
CREATE TABLE votes (
    reader_id TEXT NOT NULL REFERENCES readers(reader_id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    vote TEXT NOT NULL CHECK (vote IN ('real', 'fake', 'unclear')),
    note TEXT NOT NULL DEFAULT '',
    voted_at TEXT NOT NULL,
    PRIMARY KEY (reader_id, image_id)
);
CREATE TABLE vote_history (
    id INTEGER PRIMARY KEY,
    reader_id TEXT NOT NULL,
    image_id INTEGER NOT NULL,
    vote TEXT NOT NULL,
    note TEXT NOT NULL,
    voted_at TEXT NOT NULL,
    replaced_at TEXT NOT NULL
);
"""

# PBKDF2 work factor: ~50 ms per login on one slow core; readers log in rarely.
_PBKDF2_ROUNDS = 100_000


class StudyFileError(ValueError):
    """The given path is missing or is not a reader-study file."""


def now() -> str:
    """UTC timestamp with milliseconds, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _configure(conn: sqlite3.Connection) -> sqlite3.Connection:
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    # FULL: each commit is fsynced before the HTTP answer leaves, so a crash loses nothing.
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def open_study(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """Open an existing study file (never creates one); raises StudyFileError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise StudyFileError(
            f"study file {path} does not exist; make one with "
            "`synthmed reader-study create --real DIR --fake DIR --out STUDY.sqlite`")
    mode = "ro" if readonly else "rw"
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True)
    try:
        _configure(conn)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as err:
        conn.close()
        raise StudyFileError(f"{path} is not a reader-study file ({err})") from err
    if row is None or row["value"] != SCHEMA_VERSION:
        conn.close()
        raise StudyFileError(
            f"{path} has reader-study schema {row['value'] if row else 'none'}, "
            f"expected {SCHEMA_VERSION}; recreate it with `synthmed reader-study create`")
    return conn


@contextmanager
def connection(path: str | Path, readonly: bool = False) -> Iterator[sqlite3.Connection]:
    """``open_study`` as a context manager that always closes the connection."""
    conn = open_study(path, readonly=readonly)
    try:
        yield conn
    finally:
        conn.close()


def new_study(path: Path, meta: dict[str, str]) -> sqlite3.Connection:
    """Create the tables in a new (not yet existing) file and write ``meta``."""
    conn = _configure(sqlite3.connect(path))
    conn.executescript(SCHEMA)
    rows = {"schema_version": SCHEMA_VERSION, "created_at": now(), **meta}
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows.items())
    return conn


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    """All meta rows as a dict."""
    return {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta")}


# --------------------------------------------------------------------------- readers


def _hash_passcode(passcode: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", passcode.encode("utf-8"), salt, _PBKDF2_ROUNDS)


def sign_in(conn: sqlite3.Connection, reader_id: str, passcode: str) -> str | None:
    """Check (or, on the first visit, set) the reader's passcode; return a new session token.

    Returns None when the reader exists and the passcode does not match.
    """
    query = "SELECT pass_salt, pass_hash FROM readers WHERE reader_id = ?"
    row = conn.execute(query, (reader_id,)).fetchone()
    if row is None:  # first visit: this passcode becomes the reader's
        salt = secrets.token_bytes(16)
        # OR IGNORE + re-read: of two simultaneous first visits, the first one wins
        conn.execute("INSERT OR IGNORE INTO readers VALUES (?, ?, ?, ?)",
                     (reader_id, salt, _hash_passcode(passcode, salt), now()))
        row = conn.execute(query, (reader_id,)).fetchone()
    if not hmac.compare_digest(_hash_passcode(passcode, row["pass_salt"]), row["pass_hash"]):
        conn.commit()
        return None
    token = secrets.token_urlsafe(32)
    conn.execute("INSERT INTO sessions VALUES (?, ?, ?)", (_token_hash(token), reader_id, now()))
    conn.commit()
    return token


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def reader_for_token(conn: sqlite3.Connection, token: str | None) -> str | None:
    """The reader id owning this session token, or None."""
    if not token or len(token) > 128:
        return None
    row = conn.execute("SELECT reader_id FROM sessions WHERE token_hash = ?",
                       (_token_hash(token),)).fetchone()
    return row["reader_id"] if row else None


def sign_out(conn: sqlite3.Connection, token: str | None) -> None:
    """Forget one session token."""
    if token:
        conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))
        conn.commit()


# --------------------------------------------------------------------------- images, votes


def reader_order(conn: sqlite3.Connection, reader_id: str) -> list[sqlite3.Row]:
    """Images (id, public_id) in this reader's own fixed order.

    Each reader sees the images in a different order (less order effect), fixed by a keyed
    hash so that it is the same after every restart: that is what makes resuming work.
    """
    salt = read_meta(conn)["order_salt"]
    rows = conn.execute("SELECT id, public_id FROM images").fetchall()
    key = lambda r: hashlib.sha256(f"{salt}|{reader_id}|{r['public_id']}".encode()).digest()
    return sorted(rows, key=key)


def votes_of(conn: sqlite3.Connection, reader_id: str) -> dict[int, sqlite3.Row]:
    """This reader's current votes keyed by image id (never another reader's)."""
    rows = conn.execute("SELECT image_id, vote, note FROM votes WHERE reader_id = ?",
                        (reader_id,))
    return {r["image_id"]: r for r in rows}


def image_png(conn: sqlite3.Connection, public_id: str) -> bytes | None:
    """The blinded PNG bytes of one image, or None for an unknown id."""
    row = conn.execute("SELECT png FROM images WHERE public_id = ?", (public_id,)).fetchone()
    return bytes(row["png"]) if row else None


def image_id_for(conn: sqlite3.Connection, public_id: str) -> int | None:
    """Internal row id for a public id, or None."""
    row = conn.execute("SELECT id FROM images WHERE public_id = ?", (public_id,)).fetchone()
    return row["id"] if row else None


def cast_vote(conn: sqlite3.Connection, reader_id: str, image_id: int, vote: str,
              note: str) -> bool:
    """Store a vote and commit; a previous vote on the image goes to vote_history.

    Returns True when the vote replaced an earlier one.
    """
    if vote not in VOTES:
        raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")
    stamp = now()
    with conn:  # one transaction: history row + new vote, committed together
        old = conn.execute("SELECT vote, note, voted_at FROM votes WHERE reader_id = ? AND "
                           "image_id = ?", (reader_id, image_id)).fetchone()
        if old is not None:
            conn.execute("INSERT INTO vote_history (reader_id, image_id, vote, note, voted_at, "
                         "replaced_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (reader_id, image_id, old["vote"], old["note"], old["voted_at"], stamp))
        conn.execute("INSERT OR REPLACE INTO votes VALUES (?, ?, ?, ?, ?)",
                     (reader_id, image_id, vote, note, stamp))
    return old is not None
