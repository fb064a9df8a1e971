"""Growing lock-outs after failed sign-ins, per reader id and per client address.

Hand-written because the rate limiters available (``limits``, ``slowapi``) count every request
in a time window; guessing passcodes needs something else: count only *failures*, allow a few
typing mistakes, then refuse every attempt (right or wrong, without checking the passcode)
for a delay that doubles with each further failure. State is in memory: a restart forgets it,
which an attacker who can restart the server does not need anyway.

With the defaults, the 5th wrong passcode for a reader locks that reader for 15 s, the 6th for
30 s, ..., at most 15 min; a client address gets 10 failures (over all reader ids it tries)
before the same. Failures are forgotten after ``forget_after`` seconds without one, and a
reader's count is cleared by a successful sign-in (a client's is not, so one valid account
cannot be used to reset the counter while guessing another's passcode).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Failed sign-in counter with doubling lock-outs; thread-safe (FastAPI runs sync routes in
    a thread pool)."""

    def __init__(self, reader_failures: int = 5, client_failures: int = 10,
                 first_delay: float = 15.0, max_delay: float = 900.0,
                 forget_after: float = 3600.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000):
        if reader_failures < 1 or client_failures < 1:
            raise ValueError("failures allowed before a lock-out must be >= 1")
        self.allowed = {"reader": reader_failures, "client": client_failures}
        self.first_delay, self.max_delay, self.forget_after = first_delay, max_delay, forget_after
        self.clock, self.max_keys = clock, max_keys
        self._records: dict[tuple[str, str], _Record] = {}
        self._lock = threading.Lock()

    def retry_after(self, reader_id: str, client: str) -> int:
        """Seconds until this reader id and client may try again (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [self._record(key, now).locked_until - now
                     for key in (("reader", reader_id), ("client", client))]
        return max(0, math.ceil(max(waits)))

    def failed(self, reader_id: str, client: str) -> int:
        """Count one failure for both keys; returns the resulting wait in seconds (0: none)."""
        now = self.clock()
        with self._lock:
            if len(self._records) >= self.max_keys:
                self._forget_old(now)
            for key in (("reader", reader_id), ("client", client)):
                record = self._records.setdefault(key, self._record(key, now))
                record.failures += 1
                record.last_failure = now
                over = record.failures - self.allowed[key[0]]
                if over >= 0:
                    delay = min(self.max_delay, self.first_delay * 2 ** min(over, 30))
                    record.locked_until = max(record.locked_until, now + delay)
        return self.retry_after(reader_id, client)

    def succeeded(self, reader_id: str) -> None:
        """A correct passcode: the reader's failures are forgiven (the client's are not)."""
        with self._lock:
            self._records.pop(("reader", reader_id), None)

    def _record(self, key: tuple[str, str], now: float) -> _Record:
        record = self._records.get(key)
        if record is None:
            return _Record()
        if now >= record.locked_until and now - record.last_failure > self.forget_after:
            del self._records[key]
            return _Record()
        return record

    def _forget_old(self, now: float) -> None:
        for key in [k for k, r in self._records.items()
                    if now >= r.locked_until and now - r.last_failure > self.forget_after]:
            del self._records[key]
