"""Create the CURVE certificates of a secured stream (``run_stream.py --zmq-keys DIR``).

``python -m stream_fusion.keys DIR [--client NAME ...]``

* ``DIR/server.key_secret`` and ``DIR/server.key``: the publisher's key pair and its public half (made once, kept if
  they exist: replacing them would lock out every subscriber);
* ``--client NAME``: a subscriber's key pair. Its public half ``DIR/clients/NAME.key`` lets it in; its secret
  certificate ``DIR/NAME.key_secret`` goes to that subscriber, with a copy of ``server.key``.

The files are pyzmq's (``zmq.auth.create_certificates``); secret files are made readable by their owner only.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import zmq.auth

from stream_fusion.curve import CLIENTS, SERVER_PUBLIC, SERVER_SECRET, load_pair
from stream_fusion.errors import StreamFusionError, run_cli

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _private(path: Path) -> None:
    """Secret certificates are for their owner's eyes only."""
    os.chmod(path, 0o600)


def create_server(folder: Path) -> bool:
    """The publisher's certificates in ``folder`` (and its ``clients/``); False when they exist already (checked)."""
    (folder / CLIENTS).mkdir(parents=True, exist_ok=True)
    if (folder / SERVER_SECRET).exists():
        load_pair(folder / SERVER_SECRET)  # an unreadable one is an error, not silently kept
        return False
    zmq.auth.create_certificates(folder, "server")
    _private(folder / SERVER_SECRET)
    return True


def create_client(folder: Path, name: str) -> Path:
    """A subscriber's key pair: the public half into ``folder/clients/`` (allowed), the secret certificate
    ``folder/NAME.key_secret`` returned (to be handed to the subscriber)."""
    if not NAME.fullmatch(name) or name == "server":
        raise StreamFusionError(f"client name {name!r}: use letters, digits, '.', '_' or '-' (up to 64), not 'server'")
    public, secret = folder / CLIENTS / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise StreamFusionError(f"{path} exists: client {name!r} has keys already (remove them to replace them)")
    zmq.auth.create_certificates(folder / CLIENTS, name)
    os.replace(folder / CLIENTS / f"{name}.key_secret", secret)  # clients/ holds public keys only
    _private(secret)
    return secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.keys", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, metavar="DIR", help="the publisher's key folder (run_stream.py --zmq-keys DIR)")
    parser.add_argument("--client", action="append", default=[], metavar="NAME",
                        help="also create keys for a subscriber called NAME (repeatable)")
    args = parser.parse_args(argv)
    folder = args.folder.expanduser()
    try:
        created = create_server(folder)
        secrets = [create_client(folder, name) for name in args.client]
    except OSError as error:
        raise StreamFusionError(f"cannot write keys into {folder}: {error.strerror or error}") from None
    if created:
        print(f"created {folder / SERVER_SECRET} (the publisher's key pair: keep it on the publisher) and "
              f"{folder / SERVER_PUBLIC} (its public key: every subscriber needs a copy)")
    else:
        print(f"kept the existing publisher keys in {folder}")
    for secret in secrets:
        name = secret.name.removesuffix(".key_secret")
        print(f"created subscriber {name!r}: {folder / CLIENTS / (name + '.key')} lets it in; give it {secret} and "
              f"{folder / SERVER_PUBLIC}, then delete {secret.name} here. It subscribes with:\n"
              f"  python -m stream_fusion.subscribe tcp://HOST:5555 --keys {secret.name} --server-key {SERVER_PUBLIC}")
    allowed = sorted(p.stem for p in (folder / CLIENTS).glob("*.key"))
    print(f"publish with: python run_stream.py --zmq tcp://0.0.0.0:5555 --zmq-keys {folder}  "
          f"(allowed subscribers: {', '.join(allowed) or 'none yet: add one with --client NAME'})")
    return 0


if __name__ == "__main__":
    run_cli(main)
