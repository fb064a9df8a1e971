"""Which ``Host`` names and ``Origin`` values the reader-study server answers.

DNS rebinding: a web page on ``attacker.example`` can re-point its own name to 127.0.0.1 and
then talk to a server on the reader's machine; the browser then sends ``Host:
attacker.example:PORT`` and ``Origin: http://attacker.example:PORT``, both chosen by the
attacker. So the server must not trust either header by itself: it answers only the host names
it was bound to (Starlette's ``TrustedHostMiddleware`` with ``allowed_host_names``) and takes a
form post only from an origin built from those same names and the served port
(``origin_allowed``).

* bound to a loopback address or ``localhost``: ``127.0.0.1``, ``localhost``, ``[::1]`` (and
  the bound address itself, e.g. ``127.0.0.2``);
* bound to one other address: that address;
* bound to every address (``0.0.0.0``, ``::``): the loopback names, and the names readers will
  use must be given with ``--allowed-host`` (the server cannot know them);
* ``--allowed-host NAME`` or ``NAME:PORT`` adds a name, e.g. the machine's DNS name or a
  reverse proxy's public name; with a port, origins on that port are accepted too (a proxy
  serving https on 443).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    ip = _ip(host)
    return host.lower() == "localhost" or (ip is not None and ip.is_loopback)


def is_wildcard(host: str) -> bool:
    """True for the every-address binds ``0.0.0.0`` and ``::``."""
    ip = _ip(host)
    return ip is not None and ip.is_unspecified


def host_name(host: str) -> str:
    """The form a ``Host`` header uses: lower case, IPv6 addresses in brackets."""
    ip = _ip(host)
    if ip is not None and ip.version == 6:
        return f"[{ip}]"
    return str(ip) if ip is not None else host.lower()


def _split_entry(entry: str) -> tuple[str, int | None]:
    """``NAME``, ``NAME:PORT`` or ``[V6]:PORT`` -> (host name, port or None)."""
    entry = entry.strip()
    parts = urlsplit(f"//{entry}")
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError(f"--allowed-host {entry!r}: bad port ({err})") from None
    name = parts.hostname
    if not name or parts.path or parts.query or parts.username or "*" in entry:
        raise ValueError(f"--allowed-host {entry!r} is not a host name, an address or NAME:PORT")
    return host_name(name), port


def allowed_host_names(bind_host: str, extra: Sequence[str] = ()) -> list[str]:
    """Host names (no ports) the server answers when bound to ``bind_host``."""
    names: list[str] = []
    if is_loopback(bind_host) or is_wildcard(bind_host):
        names += LOOPBACK_NAMES
    if not is_wildcard(bind_host):
        names.append(host_name(bind_host))
    elif not extra:
        raise ValueError(
            f"--host {bind_host} listens on every address, so the server cannot tell which "
            "names readers will use: give each with --allowed-host NAME (e.g. the machine's "
            "DNS name or address); requests under any other name are refused")
    names += [_split_entry(e)[0] for e in extra]
    return list(dict.fromkeys(names))


def allowed_origins(bind_host: str, port: int, extra: Sequence[str] = ()) -> set[tuple[str, int]]:
    """(host name, port) pairs a form post's ``Origin`` may name."""
    pairs = {(name, port) for name in allowed_host_names(bind_host, extra)}
    for entry in extra:
        name, entry_port = _split_entry(entry)
        if entry_port is not None:
            pairs.add((name, entry_port))
    return pairs


def origin_allowed(origin: str, allowed: set[tuple[str, int]]) -> bool:
    """True when ``origin`` (an ``Origin`` header value) is http(s) on an allowed name and port.

    ``null`` (sandboxed or privacy-stripped origins) and anything unparsable are refused.
    """
    parts = urlsplit(origin)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return False
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return False
    return (host_name(parts.hostname), port) in allowed
