"""`progress(iterable, total, desc)`: a tqdm bar on a terminal, a plain line every ~30 s in a log.

tqdm writes to stderr; when stderr is not a terminal (a `reproduce` stage log, CI, a pipe) its
bar is turned off and a line such as `evaluate features: 120/400 (30 %), 45 s elapsed, about
2 min left` is written every `every_s` seconds instead, so a log shows progress without a wall of
carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from lightning_modules.durations import format_seconds

T = TypeVar("T")


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", every_s: float = 30.0,
             unit: str = "it") -> Iterator[T]:
    """Yield from `iterable`, showing progress on stderr (see the module docstring)."""
    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
        return
    start = last = time.monotonic()
    for done, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            print(progress_text(desc, done, total, now - start), file=sys.stderr, flush=True)


def progress_text(desc: str, done: int, total: int | None, elapsed: float) -> str:
    """'desc: 120/400 (30 %), 45 s elapsed, about 2 min left' (no total: no ETA)."""
    if not total:
        return f"{desc}: {done} done, {format_seconds(elapsed)} elapsed, no ETA"
    left = elapsed / done * max(0, total - done)
    return (f"{desc}: {done}/{total} ({100 * done / total:.0f} %), {format_seconds(elapsed)} elapsed, "
            f"about {format_seconds(left)} left")
