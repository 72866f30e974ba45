"""ZeroMQ CURVE for the stream: the publisher encrypts every frame and serves only subscribers whose key it allows.

Nothing here is cryptography of our own: libzmq does CURVE, pyzmq's ``zmq.auth`` reads the certificate files and
runs the ZAP authenticator thread that accepts or refuses each subscriber's key. The files are exactly those
``zmq.auth.create_certificates`` writes (``python -m stream_fusion.keys`` makes them):

* the publisher's folder ``DIR``: ``server.key_secret`` (its key pair: keep it there), ``server.key`` (its public
  key: every subscriber needs a copy) and ``clients/*.key``, the public keys of the subscribers it serves;
* a subscriber: its own ``NAME.key_secret`` and the publisher's ``server.key``.

A refused subscriber gets no frame. ZeroMQ does not tell the publishing code about it, so :class:`Refusals` reads
the socket's monitor events and counts the failed handshakes for the summary.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from stream_fusion.errors import StreamFusionError, first_line

log = logging.getLogger(__name__)

SERVER_SECRET, SERVER_PUBLIC, CLIENTS = "server.key_secret", "server.key", "clients"
KEYS_COMMAND = "python -m stream_fusion.keys"
# Handshake failures, by what a user has to fix: the subscriber's key is not allowed, or it does not speak CURVE
# with this publisher's key (a plain subscriber, an imagezmq hub, a wrong server key).
NOT_ALLOWED = "key not allowed"
NO_CURVE = "no CURVE or wrong server key"
FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: NOT_ALLOWED,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: NO_CURVE,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: NO_CURVE,
}


def _key(text: bytes | None, what: str, path: Path) -> bytes:
    """A Z85 key of 40 characters (32 bytes), as libzmq takes it."""
    try:
        if text is not None and len(text) == 40 and len(z85.decode(text)) == 32:
            return text
    except (ValueError, KeyError, TypeError):
        pass
    raise StreamFusionError(f"{path} holds no valid {what} (a 40-character Z85 key); recreate it with {KEYS_COMMAND}")


def _read(path: str | Path, kind: str) -> tuple[Path, bytes | None, bytes | None]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise StreamFusionError(f"CURVE {kind} not found: {path} (create certificates with {KEYS_COMMAND})")
    try:
        return (path, *zmq.auth.load_certificate(path))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise StreamFusionError(f"cannot read CURVE certificate {path}: {first_line(error)}") from None


def load_public(path: str | Path) -> bytes:
    """The public key of a certificate file (``NAME.key``; a ``.key_secret`` file holds it too)."""
    path, public, _ = _read(path, "public certificate (NAME.key)")
    return _key(public, "public key", path)


def load_pair(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) keys of a secret certificate file (``NAME.key_secret``)."""
    path, public, secret = _read(path, "secret certificate (NAME.key_secret)")
    return _key(public, "public key", path), _key(secret, "secret key", path)


@dataclass(frozen=True)
class ServerKeys:
    """A publisher's certificate folder, read and checked: its key pair and the subscribers' public keys."""

    folder: Path
    public: bytes
    secret: bytes
    clients: dict[bytes, Path]  # allowed public key -> its file

    @classmethod
    def load(cls, folder: str | Path) -> ServerKeys:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise StreamFusionError(f"CURVE key folder {folder} does not exist (create it with {KEYS_COMMAND} {folder})")
        public, secret = load_pair(folder / SERVER_SECRET)
        clients_dir = folder / CLIENTS
        files = sorted(clients_dir.glob("*.key")) if clients_dir.is_dir() else []
        if not files:
            raise StreamFusionError(f"no subscriber keys in {clients_dir}: nobody could subscribe; add one with "
                                    f"{KEYS_COMMAND} {folder} --client NAME")
        clients = {load_public(path): path for path in files}
        return cls(folder, public, secret, clients)


@dataclass
class Refusals:
    """Counts the handshakes a CURVE publisher refused, from its socket's monitor events; warns once per kind."""

    monitor: zmq.Socket
    folder: Path
    counts: dict[str, int] = field(default_factory=dict)

    def poll(self) -> None:
        """Read the pending monitor events (never waits)."""
        while self.monitor.poll(0, zmq.POLLIN):
            event = recv_monitor_message(self.monitor)["event"]
            kind = FAILURES.get(event)
            if kind is None:
                continue
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if self.counts[kind] == 1:
                if kind == NOT_ALLOWED:
                    log.warning("refused a subscriber: its key is not in %s (add its .key file there and restart)",
                                self.folder / CLIENTS)
                else:
                    log.warning("refused a subscriber that does not speak CURVE with this publisher's key (a plain "
                                "subscriber or imagezmq hub, or one given another server.key)")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class CurveServer:
    """CURVE on a publisher's socket: the ZAP authenticator thread (allowing only ``clients/*.key``), the socket's
    server keys, and a monitor that counts refused handshakes. Set up before ``bind``; ``close`` after the socket."""

    def __init__(self, context: zmq.Context, socket: zmq.Socket, keys: ServerKeys) -> None:
        self.keys = keys
        self._auth = ThreadAuthenticator(context, log=logging.getLogger("stream_fusion.zap"))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(keys.folder / CLIENTS))
        socket.curve_secretkey = keys.secret
        socket.curve_publickey = keys.public
        socket.curve_server = True
        events = 0
        for event in FAILURES:
            events |= event
        self.refusals = Refusals(socket.get_monitor_socket(events), keys.folder)
        self._socket = socket

    def close(self) -> None:
        """Read the last events, stop the monitor and the authenticator (call before closing the socket)."""
        self.refusals.poll()
        self._socket.disable_monitor()
        self.refusals.monitor.close(linger=0)
        self._auth.stop()


def use_client_keys(socket: zmq.Socket, secret_file: str | Path, server_public_file: str | Path) -> None:
    """Make ``socket`` a CURVE client with the subscriber's key pair and the publisher's public key (before
    ``connect``)."""
    socket.curve_publickey, socket.curve_secretkey = load_pair(secret_file)
    socket.curve_serverkey = load_public(server_public_file)
