"""SHA-256 of a file, read in chunks (checkpoints can be gigabytes): the one file-hash helper.

It lives here because `datamodules` may not import `synthmed`; `lightning_modules` and `synthmed`
(`synthmed.runs.file_sha256`) use this one instead of keeping their own copies.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(Path(path), "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
