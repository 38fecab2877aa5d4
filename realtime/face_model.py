"""The MediaPipe face landmark model file: found, checked against its SHA-256, downloaded when missing.

:func:`resolve_face_model` looks in this order: an explicit path → ``$MER_FACE_MODEL`` → the user cache →
a download from the official URL, checked against its SHA-256 (see ``shared/models/README.md``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from mer_core.paths import user_cache_dir

logger = logging.getLogger(__name__)


FACE_MODEL_URL = "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
FACE_MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
FACE_MODEL_SIZE = 3_758_596  # bytes of the official file; only said in messages (the SHA-256 decides)
FACE_MODEL_ENV = "MER_FACE_MODEL"
FACE_MODEL_FILENAME = "face_landmarker.task"
DOWNLOAD_TIMEOUT_S = 30.0


# (resolved path, size, mtime_ns, expected hash) of files already checked: hashing 3.7 MB per call of
# detect_faces would be wasted work.
_VERIFIED: set[tuple[str, int, int, str]] = set()


class FaceModelError(RuntimeError):
    """The face landmark model file is missing, unreadable, not the expected file, or cannot be downloaded."""


def default_cache_path() -> Path:
    """Where the model is cached: the user cache folder (``mer_core.paths.user_cache_dir``)."""
    return user_cache_dir() / FACE_MODEL_FILENAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_ok(path: Path) -> bool:
    expected = FACE_MODEL_SHA256
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
    if key in _VERIFIED:
        return True
    if _sha256(path) != expected:
        return False
    _VERIFIED.add(key)
    return True


def _where_to_put_it(cache: Path) -> str:
    return (
        f"set {FACE_MODEL_ENV}=/path/to/{FACE_MODEL_FILENAME} or put the file at {cache} "
        f"(official download: {FACE_MODEL_URL}, SHA-256 {FACE_MODEL_SHA256})"
    )


def _not_it(path: Path) -> str:
    """What is wrong with a file whose SHA-256 is not the model's: its size against the real file's."""
    try:
        size = path.stat().st_size
    except OSError:
        return "SHA-256 mismatch"
    return f"{size:,} bytes, not the {FACE_MODEL_SIZE:,}-byte model file: SHA-256 mismatch"


def _checked(path: Path, what: str, cache: Path) -> Path:
    if not path.is_file():
        raise FaceModelError(f"face model from {what} not found: {path}; {_where_to_put_it(cache)}")
    try:
        ok = _hash_ok(path)
    except OSError as exc:
        raise FaceModelError(f"cannot read face model {path} ({what}): {exc}") from exc
    if not ok:
        raise FaceModelError(
            f"face model {path} ({what}) is not the expected file ({_not_it(path)}); {_where_to_put_it(cache)}"
        )
    return path


def _download(url: str, dest: Path, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch ``url`` into ``dest`` atomically (temporary file + rename), checking the SHA-256 on the way."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != FACE_MODEL_SHA256:
            raise FaceModelError(
                f"downloaded face model from {url} has SHA-256 {digest.hexdigest()}, expected "
                f"{FACE_MODEL_SHA256}; {_where_to_put_it(dest)}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def face_model_from_env() -> Path | None:
    """``$MER_FACE_MODEL`` as an absolute path (None when unset or blank).

    Made absolute when read, relative to the current folder, so a relative setting such as
    ``../shared/models/face_landmarker.task`` still names the same file in a process started elsewhere.
    """
    env = os.environ.get(FACE_MODEL_ENV, "").strip()
    return Path(os.path.abspath(Path(env).expanduser())) if env else None


def resolve_face_model(explicit: str | Path | None = None, *, download: bool = True) -> Path:
    """Find the face landmark model: explicit path → ``$MER_FACE_MODEL`` → user cache → download.

    An explicit or environment path that is missing or has the wrong SHA-256 is refused rather than
    skipped, so a typo never silently falls through to another file. A cached file with the wrong hash
    (e.g. an interrupted copy) is replaced by a fresh download when ``download`` is allowed.
    """
    cache = default_cache_path()
    if explicit is not None and str(explicit) != "":
        return _checked(Path(explicit).expanduser(), "explicit path", cache)
    env = face_model_from_env()
    if env is not None:
        return _checked(env, f"${FACE_MODEL_ENV}", cache)
    corrupt = ""  # why the cached file cannot be used, when there is one
    if cache.is_file():
        try:
            if _hash_ok(cache):
                return cache
        except OSError as exc:
            raise FaceModelError(f"cannot read cached face model {cache}: {exc}") from exc
        corrupt = f"cached face model {cache} is corrupt ({_not_it(cache)})"
        if not download:
            raise FaceModelError(f"{corrupt}; replace it or delete it: {_where_to_put_it(cache)}")
        logger.info("%s; downloading it again", corrupt)
    if not download:
        raise FaceModelError(f"face model not found and downloading is off; {_where_to_put_it(cache)}")
    logger.info("downloading face model %s -> %s", FACE_MODEL_URL, cache)
    try:
        _download(FACE_MODEL_URL, cache)
    except FaceModelError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:  # offline, timeout, HTTP error, disk
        if corrupt:  # not "not found": the file is there, and it is the wrong one
            raise FaceModelError(
                f"{corrupt} and a fresh copy could not be downloaded ({exc}); replace it or delete it: "
                f"{_where_to_put_it(cache)}"
            ) from exc
        raise FaceModelError(
            f"face model not found and the download failed ({exc}); {_where_to_put_it(cache)}"
        ) from exc
    _hash_ok(cache)
    return cache
