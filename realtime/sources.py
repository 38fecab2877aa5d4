"""Frame sources: a camera (index or device path), a video file, a stream URL, a folder of numbered frames,
or frames in memory.

:func:`open_source` turns what the user typed (``0``, ``/dev/video0``, ``clip.mp4``, ``rtsp://…``, ``frames/``)
into a :class:`FrameSource`, or raises :class:`SourceError` with one line the user can act on. A source is opened
by the caller (so errors surface synchronously) and then handed to the capture thread, which alone reads
it and releases it.

``read()`` returns ``None`` at the end of the source *and* when it fails; ``error`` tells the two apart
(``None`` = a normal end). Live sources can try :meth:`FrameSource.reconnect` when a camera disappears.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

__all__ = [
    "DEFAULT_FPS",
    "IMAGE_EXTENSIONS",
    "ArraySource",
    "FrameFolderSource",
    "FrameSource",
    "SourceError",
    "VideoCaptureSource",
    "numbered_images",
    "open_source",
]

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # used when a camera or file reports no usable frame rate
MAX_FPS = 1000.0  # anything above is a container quirk (e.g. a 90 kHz timebase), not a frame rate
STREAM_TIMEOUT_MS = 5000  # open/read timeout for URLs
MAX_CONSECUTIVE_FAILURES = 5  # failed reads in a row before a file is declared truncated/corrupt

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # frame files a folder source reads

_URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "udp", "tcp", "srt")


class SourceError(RuntimeError):
    """A source cannot be opened; the message is one line a user can act on."""


class FrameSource:
    """Base class: ``name``, ``fps``, ``is_live``, ``frame_count``, ``read()``, ``close()``.

    ``error`` is ``None`` while all is well (and after a normal end); otherwise why reading failed.
    """

    name: str = "source"
    fps: float = DEFAULT_FPS
    is_live: bool = False
    frame_count: int | None = None  # known length (files), None for live sources

    def __init__(self) -> None:
        self.error: str | None = None
        self.frames_read = 0
        self.consecutive_failures = 0
        self._closed = False

    def read(self) -> np.ndarray | None:
        """The next frame (H, W, 3) uint8 BGR, or ``None`` at the end or on failure (see ``error``)."""
        raise NotImplementedError

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame :meth:`read` gives, until it gives ``None`` (a file read through, for offline work)."""
        while (frame := self.read()) is not None:
            yield frame

    def reconnect(self) -> bool:
        """Try once to reopen a live source after a failure; True when frames flow again."""
        return False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the device or file; safe to call twice."""
        self._closed = True

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, fps={self.fps:g}, live={self.is_live})"


class ArraySource(FrameSource):
    """Frames from a sequence or any iterable (a generator works): for tests, demos and synthetic input.

    ``is_live=True`` makes the capture thread stamp frames with its clock, like a camera.
    """

    def __init__(
        self,
        frames: Iterable[np.ndarray],
        fps: float = DEFAULT_FPS,
        name: str = "array",
        *,
        is_live: bool = False,
    ) -> None:
        super().__init__()
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.name = name
        self.fps = float(fps)
        self.is_live = is_live
        self.frame_count = len(frames) if isinstance(frames, Sequence) and not is_live else None
        self._frames: Iterator[np.ndarray] = iter(frames)

    def read(self) -> np.ndarray | None:
        if self._closed:
            return None
        frame = next(self._frames, None)
        if frame is not None:
            self.frames_read += 1
        return frame

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            close = getattr(self._frames, "close", None)  # a generator: run its finally now
            if callable(close):
                close()


class VideoCaptureSource(FrameSource):
    """A camera, a video file or a stream read through ``cv2.VideoCapture``.

    The first frame is read at open (and kept for the first ``read()``), so a file that is not a video or
    a camera that delivers nothing fails in :func:`open_source`, not later in the capture thread.
    """

    def __init__(self, target: int | str, *, name: str, is_live: bool | None, what: str) -> None:
        """``is_live=None`` (http URLs): decided after opening — live when no length is known."""
        super().__init__()
        self.name = name
        self.is_live = bool(is_live)
        self._target = target
        self._what = what  # "camera 0", "video file clip.mp4", ... for messages
        self._cap: Any = None
        self._peeked: np.ndarray | None = None
        self.width = 0
        self.height = 0
        if not self._open():
            raise SourceError(self._open_error())
        cap: Any = self._cap
        fps = float(cap.get(_cv2().CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0 < fps <= MAX_FPS else DEFAULT_FPS
        if not self.is_live:
            count = int(cap.get(_cv2().CAP_PROP_FRAME_COUNT) or 0)
            self.frame_count = count if count > 0 else None
            if is_live is None and self.frame_count is None:
                self.is_live = True
        assert self._peeked is not None
        self.height, self.width = self._peeked.shape[:2]

    def _open(self) -> bool:
        cv2 = _cv2()
        self._release()
        if isinstance(self._target, str) and "://" in self._target:
            # bounded waits for network streams, so a dead server fails in seconds, not minutes
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
            ]
            cap = cv2.VideoCapture(self._target, cv2.CAP_ANY, params)
        else:
            cap = cv2.VideoCapture(self._target)
        if not cap.isOpened():
            cap.release()
            return False
        self._cap = cap
        for _ in range(MAX_CONSECUTIVE_FAILURES if self.is_live else 1):
            ok, frame = cap.read()
            if ok and frame is not None and frame.size:
                self._peeked = frame
                return True
        self._release()
        return False

    def _open_error(self) -> str:
        if isinstance(self._target, int) or (
            isinstance(self._target, str) and self._target.startswith("/dev/")
        ):
            other = 1 if self._target in (0, "/dev/video0") else 0
            return (
                f"{self._what} could not be opened or delivers no frames (not connected, or in use by another "
                f"program?): list cameras with `ls /dev/video*` and pick another with --camera {other}"
            )
        if self.is_live or isinstance(self._target, str) and "://" in self._target:
            return (
                f"{self._what} could not be opened: check the URL, the network and that the stream is running"
            )
        return f"{self._what} cannot be read as a video (unsupported format, corrupt, or not a video)"

    def read(self) -> np.ndarray | None:
        if self._closed or self._cap is None:
            return None
        if self._peeked is not None:
            frame, self._peeked = self._peeked, None
            self.frames_read += 1
            return frame
        while True:
            ok, frame = self._cap.read()
            if ok and frame is not None and frame.size:
                self.consecutive_failures = 0
                self.frames_read += 1
                return frame
            self.consecutive_failures += 1
            if self.is_live:
                self.error = f"{self._what} stopped delivering frames"
                return None
            if not self._ended_early():
                return None  # a normal end of file
            if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                self.error = (
                    f"{self._what} ended early at frame {self.frames_read} of {self.frame_count} "
                    "(truncated or corrupt)"
                )
                return None
            # a damaged frame mid-file: try the next one

    def _ended_early(self) -> bool:
        """Did a file stop well before the length its container announced? (Counts are approximate.)"""
        if self.frame_count is None:
            return False
        tolerance = max(2, self.frame_count // 100)
        return self.frames_read < self.frame_count - tolerance

    def reconnect(self) -> bool:
        if self._closed or not self.is_live:
            return False
        if self._open():
            log.info("%s: reconnected", self.name)
            self.error = None
            self.consecutive_failures = 0
            return True
        return False

    def _release(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:
                self._cap = None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._peeked = None
            self._release()


class FrameFolderSource(FrameSource):
    """Numbered images in a folder (a dataset's frames: ``img1.jpg, img2.jpg, …``), read in number order.

    Datasets ship long videos as frame folders; reading them as a source lets the same pipeline run on them.
    The first image is read at open, so a folder of unreadable files fails in :func:`open_source`.
    """

    def __init__(self, folder: str | os.PathLike[str], *, fps: float = DEFAULT_FPS) -> None:
        super().__init__()
        self.folder = Path(folder)
        if not (math.isfinite(fps) and fps > 0):
            raise SourceError(f"frame rate for {self.folder} must be a positive number, got {fps}")
        self._files = numbered_images(self.folder)
        self.name = f"frames:{self.folder.name}"
        self.fps = float(fps)
        self.is_live = False
        self.frame_count = len(self._files)
        self._next = 0
        self.width = 0
        self.height = 0
        self._peeked: np.ndarray | None = self._read_next()
        if self._peeked is None:
            raise SourceError(f"{self.error} (not an image, or corrupt)")
        self.height, self.width = self._peeked.shape[:2]

    def _read_next(self) -> np.ndarray | None:
        """The next image, or None at the end or when it cannot be read (then ``error`` says which)."""
        if self._next >= len(self._files):
            return None
        path = self._files[self._next]
        self._next += 1
        frame = _cv2().imread(str(path), _cv2().IMREAD_COLOR)
        if frame is None or not frame.size:
            self.error = f"frame folder {self.folder}: cannot read {path.name}, frame {self._next} of {self.frame_count}"
            self._next = len(self._files)  # the source ends here
            return None
        if self.width and frame.shape[:2] != (self.height, self.width):
            self.error = (
                f"frame folder {self.folder}: {path.name} is {frame.shape[1]}x{frame.shape[0]}, the first frame "
                f"{self.width}x{self.height} (frame {self._next} of {self.frame_count})"
            )
            self._next = len(self._files)
            return None
        return frame

    def read(self) -> np.ndarray | None:
        if self._closed:
            return None
        if self._peeked is not None:
            frame: np.ndarray | None = self._peeked
            self._peeked = None
        else:
            frame = self._read_next()
        if frame is not None:
            self.frames_read += 1
        return frame

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._peeked = None


_TRAILING_NUMBER = re.compile(r"(\d+)$")


def numbered_images(folder: Path) -> list[Path]:
    """The images in ``folder`` whose name ends in a number, in number order (``img2`` before ``img10``).

    Raises :class:`SourceError` when the folder cannot be listed or holds no numbered image. When two files
    share a number (``img1.jpg`` and ``img1.png``) the first by name is kept.
    """
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise SourceError(f"cannot list frame folder {folder}: {exc.strerror or exc}") from None
    images = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    numbered: dict[int, Path] = {}
    for image in images:
        match = _TRAILING_NUMBER.search(image.stem)
        if match:
            numbered.setdefault(int(match.group(1)), image)
    if not numbered:
        what = "no files" if not entries else f"no numbered images among its {len(entries)} entries"
        raise SourceError(
            f"{folder} is a directory with {what}: pass a video file or a folder of numbered frames "
            f"({', '.join(IMAGE_EXTENSIONS)}, e.g. img1.jpg, img2.jpg, …)"
        )
    if len(numbered) < len(images):
        log.warning("%s: %d image(s) without a number or repeating one are left out", folder,
                    len(images) - len(numbered))
    return [numbered[n] for n in sorted(numbered)]


def _cv2() -> Any:
    import cv2  # imported lazily: `import realtime.sources` stays cheap

    return cv2


def _redact(url: str) -> str:
    """The URL without user:password, for names and messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def open_source(spec: int | str | os.PathLike[str], *, fps: float | None = None) -> FrameSource:
    """Open a camera index (``0``), a device (``/dev/video0``), a video file, a URL (``rtsp://…``) or a folder
    of numbered frames (played at ``fps``, default :data:`DEFAULT_FPS`; ``fps`` is used for folders only).

    Names follow the ``mer/1`` ``source`` field: ``camera:0``, ``camera:/dev/video0``, ``file:clip.mp4``
    (basename), ``url:rtsp://host/path`` (credentials removed), ``frames:<folder name>``. Raises
    :class:`SourceError`.
    """
    if isinstance(spec, bool):
        raise SourceError(f"not a source: {spec!r}")
    if isinstance(spec, int) or (isinstance(spec, str) and re.fullmatch(r"\s*\d+\s*", spec)):
        index = int(spec)
        return VideoCaptureSource(index, name=f"camera:{index}", is_live=True, what=f"camera {index}")
    text = os.fspath(spec)
    if not text.strip():
        raise SourceError("no source given: pass a camera index (0), a video file or a URL")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme:
        if scheme not in _URL_SCHEMES:
            raise SourceError(
                f"unsupported URL scheme {scheme!r} in {_redact(text)}: use one of {', '.join(_URL_SCHEMES)}"
            )
        shown = _redact(text)
        live = True if scheme in _LIVE_SCHEMES else None  # http(s): a file on a server, or a camera stream
        return VideoCaptureSource(text, name=f"url:{shown}", is_live=live, what=f"stream {shown}")
    if text.startswith("/dev/"):
        if not os.path.exists(text):
            raise SourceError(
                f"no camera at {text}: list cameras with `ls /dev/video*` and pick another with --camera 1"
            )
        return VideoCaptureSource(text, name=f"camera:{text}", is_live=True, what=f"camera {text}")
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceError(f"video file not found: {path}")
    if path.is_dir():
        return FrameFolderSource(path, fps=DEFAULT_FPS if fps is None else fps)
    if not os.access(path, os.R_OK):
        raise SourceError(f"video file {path} is not readable (check its permissions)")
    if path.stat().st_size == 0:
        raise SourceError(f"video file {path} is empty (0 bytes)")
    return VideoCaptureSource(str(path), name=f"file:{path.name}", is_live=False, what=f"video file {path}")
