"""The user cache folder: the one place mer-live writes outside the paths a user names."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$MER_CACHE_DIR``, else ``$XDG_CACHE_HOME/mer-live``, else ``~/.cache/mer-live``."""
    env = os.environ.get("MER_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mer-live"


def atomic_write(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; artefacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def content_key(path: Path, *, sample: int = 1 << 20) -> str:
    """What a cache is keyed by for a (large) file: its size and the sha256 of its first and last ``sample``
    bytes. Unlike a path and mtime it survives a copy or a move, so a folder copied to another disk keeps its
    cached renders and tracks; unlike a full hash it costs two reads."""
    import hashlib

    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(sample))
        if size > sample:
            fh.seek(max(sample, size - sample))
            digest.update(fh.read(sample))
    return digest.hexdigest()


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """The sha256 of a whole file (model weights and ONNX files: small enough to read through)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_key(path: Path, extra: object, version: int) -> str:
    """A short key for a cache entry made from ``path``: its :func:`content_key`, what else decides the entry
    (``extra``, as JSON) and the cache's format ``version``."""
    import hashlib
    import json

    key = json.dumps([content_key(path), extra, version], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]
