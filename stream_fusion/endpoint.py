"""ZeroMQ addresses checked before use: libzmq takes a port modulo 65536 (``:99999`` binds 34463) and retries an
address without a port or an unknown host silently for ever, so each mistake is caught here with one line."""
from __future__ import annotations

import ipaddress
import socket as net

from stream_fusion.errors import StreamFusionError

EXAMPLE = "tcp://127.0.0.1:5555"


def _host_port(address: str) -> tuple[str, str]:
    """``tcp://[source;]HOST:PORT`` -> (HOST without IPv6 brackets, PORT text); PORT is "" when there is none."""
    rest = address[len("tcp://"):].rpartition(";")[2]
    if rest.endswith("]") or ":" not in rest:  # tcp://host, tcp://[::1]
        return rest.strip("[]"), ""
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), port


def _port_problem(port: str, wildcard: bool) -> str | None:
    """What is wrong with a port (None: nothing); ``wildcard``: ``*`` (any free port, for a bind) is allowed."""
    if not port:
        return f"no port: expected tcp://HOST:PORT, e.g. {EXAMPLE}"
    if wildcard and port == "*":
        return None
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        return f"port {port} is not a number from 1 to 65535" + (" (or * for any free port)" if wildcard else "")
    return None


def check_bind_address(address: str) -> None:
    """A ``tcp://`` bind address must carry a port from 1 to 65535 or ``*``; other transports are left to ZeroMQ."""
    problem = _port_problem(_host_port(address)[1], wildcard=True) if address.startswith("tcp://") else None
    if problem:
        raise StreamFusionError(f"cannot publish on {address!r}: {problem}")


def check_connect_address(address: str) -> None:
    """A ``tcp://`` address to connect to needs a host that resolves and a port from 1 to 65535."""
    if not address.startswith("tcp://"):
        return
    host, port = _host_port(address)
    problem = f"no host: expected tcp://HOST:PORT, e.g. {EXAMPLE}" if not host else _port_problem(port, wildcard=False)
    if problem:
        raise StreamFusionError(f"cannot connect to {address!r}: {problem}")
    try:
        net.getaddrinfo(host, None)
    except (net.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, net.gaierror) else str(error)
        raise StreamFusionError(f"cannot resolve host {host!r} of {address!r}: {reason}") from None


def is_loopback(endpoint: str) -> bool:
    """Whether a bound endpoint (ZeroMQ's ``LAST_ENDPOINT``: an IP, not a name or an interface) is reachable from
    this machine only: a loopback IP, or an ``ipc://`` / ``inproc://`` address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):  # ws://, udp://, pgm://...: network transports
        return False
    host = _host_port(endpoint)[0]
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"
