"""CURVE keys for publishing beyond loopback: create them once, load them by directory.

``create_keys(KEYDIR)`` writes two ZeroMQ certificate pairs (the format of ``zmq.auth``):

- ``server.key`` / ``server.key_secret`` — the publisher's pair. ``mer-live --zmq-curve KEYDIR`` reads the
  secret file; give **only** ``server.key`` (the public half) to subscribers.
- ``client.key`` / ``client.key_secret`` — a pair a subscriber may use (``mer-subscribe`` makes a throwaway
  one when none is given; the publisher accepts any client that knows the server's public key).

CURVE encrypts the stream and proves the server's identity to subscribers; it does not restrict which
subscribers may connect.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CurveError",
    "client_keypair",
    "create_keys",
    "load_public_key",
    "load_server_keys",
]

SERVER = "server"
CLIENT = "client"
_Z85_KEY_LEN = 40


class CurveError(RuntimeError):
    """Keys are missing or unreadable; the message says how to fix it."""


def create_keys(keydir: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path]:
    """Create server and client key pairs in ``keydir``; returns (server public, server secret) paths.

    Refuses to replace existing keys unless ``overwrite`` (new keys lock out every subscriber that has the
    old public key). Secret files are readable by the owner only.
    """
    import zmq.auth

    keydir = Path(keydir).expanduser()
    public, secret = keydir / f"{SERVER}.key", keydir / f"{SERVER}.key_secret"
    if not overwrite and (public.exists() or secret.exists()):
        raise CurveError(
            f"{keydir} already holds CURVE keys: keep them, or delete them first to make new ones"
        )
    try:
        keydir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in (SERVER, CLIENT):
            _, secret_file = zmq.auth.create_certificates(keydir, name)
            os.chmod(secret_file, 0o600)
    except OSError as exc:
        raise CurveError(f"cannot write CURVE keys to {keydir}: {exc.strerror or exc}") from None
    return public, secret


def load_server_keys(keydir: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys of the publisher, from ``KEYDIR/server.key_secret``."""
    path = Path(keydir).expanduser() / f"{SERVER}.key_secret"
    public, secret = _load(path, f"no CURVE server key at {path}: create keys with `mer-live keys {keydir}`")
    if secret is None:
        raise CurveError(f"{path} holds no secret key: create keys with `mer-live keys {keydir}`")
    return public, secret


def load_public_key(key: str | bytes | os.PathLike[str]) -> bytes:
    """The server's public key for a subscriber: a 40-character z85 key, a ``.key`` file, or a KEYDIR."""
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    text = os.fspath(key)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / f"{SERVER}.key"
    if path.is_file():
        public, _ = _load(path, f"cannot read CURVE key {path}")
        return public
    if len(text) == _Z85_KEY_LEN and _is_z85(text):
        return text.encode("ascii")
    raise CurveError(f"{text!r} is neither a CURVE public key (40 z85 characters) nor a key file or KEYDIR")


def client_keypair(keydir: str | os.PathLike[str] | None = None) -> tuple[bytes, bytes]:
    """(public, secret) for a subscriber: ``KEYDIR/client.key_secret`` if given, else a fresh pair."""
    import zmq

    if keydir is None:
        return zmq.curve_keypair()
    path = Path(keydir).expanduser() / f"{CLIENT}.key_secret"
    public, secret = _load(path, f"no CURVE client key at {path}: create keys with `mer-live keys {keydir}`")
    if secret is None:
        raise CurveError(f"{path} holds no secret key")
    return public, secret


def _is_z85(text: str) -> bool:
    from zmq.utils import z85

    try:
        return len(z85.decode(text.encode("ascii"))) == 32
    except (ValueError, KeyError, UnicodeEncodeError):
        return False


def _load(path: Path, missing: str) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise CurveError(missing)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read CURVE key {path}: {exc}") from None
    return public, secret
