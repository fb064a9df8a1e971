"""Starting a real reader-study server in a subprocess (shared by the server and browser tests)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(study: Path, port: int) -> subprocess.Popen:
    """`synthmed.reader_study.cli serve` on 127.0.0.1:port, returned once /healthz answers."""
    proc = subprocess.Popen([sys.executable, "-m", "synthmed.reader_study.cli", "serve",
                             str(study), "--port", str(port)],
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
