"""Shared by the reader-study tests: a real server in a subprocess, an in-process client on the
address the server is bound to, and readers made the study owner's way."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from synthmed.reader_study import db
from synthmed.reader_study.app import make_app

# TestClient requests carry this Host, as a browser's would for a server on 127.0.0.1:8765
BASE_URL = "http://127.0.0.1:8765"
PASSCODE = "pass1234"


def client_for(study: Path, **app_options) -> TestClient:
    """A TestClient talking to make_app(study) under the default bind address and port."""
    return TestClient(make_app(study, **app_options), base_url=BASE_URL)


def add_readers(study: Path, *reader_ids: str, passcode: str = PASSCODE) -> None:
    """Create readers as the study owner does (all with one known passcode, for tests)."""
    with db.connection(study) as conn:
        for reader_id in reader_ids:
            db.add_reader(conn, reader_id, passcode)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(study: Path, port: int, *extra: str) -> subprocess.Popen:
    """`synthmed.reader_study.cli serve` on 127.0.0.1:port (plus ``extra`` options), returned
    once /healthz answers."""
    proc = subprocess.Popen([sys.executable, "-m", "synthmed.reader_study.cli", "serve",
                             str(study), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).text == "ok":
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"reader-study server did not start: {proc.stdout.read().decode()}")
