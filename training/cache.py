"""On-disk cache of network-input DIs, so frames are read, aligned and pooled once per setting.

One ``.npy`` per (sample, stream): ``(C, input_size, input_size)`` float32, exactly what
``mer_core.dynamic_image.build_streams`` returns for that stream. The file name is the SHA-256 of every
setting that changes it: the sample's identity and annotation, each frame file's path, size and mtime, the
stream, crop and input sizes, channels, frame-rate resampling, alignment mode (and face model file), a code
version constant and a digest of the source of the modules that make DIs — so a stale DI is never reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mer_core.dynamic_image import STREAMS, build_streams
from mer_core.paths import user_cache_dir
from training.datasets.base import Sample
from training.datasets.frames import FrameError, FrameOptions, load_clip

__all__ = ["CACHE_VERSION", "DIBatch", "DICache", "DIOptions", "default_cache_dir"]

log = logging.getLogger(__name__)

CACHE_VERSION = "mer-di-cache/1"
# Modules whose source decides a DI: a change to any of them invalidates the cache.
_CODE_MODULES = (
    "mer_core.dynamic_image",
    "mer_core.alignment",
    "mer_analysis.motion",
    "realtime.landmarks",
    "training.still_faces",
    "training.datasets.frames",
)

ProgressFn = Callable[[int, int], None]


def default_cache_dir() -> Path:
    """``di/`` in the user cache folder (``$MER_CACHE_DIR``, ``$XDG_CACHE_HOME/mer-live`` or ``~/.cache/mer-live``)."""
    return user_cache_dir() / "di"


@lru_cache(maxsize=1)
def _code_digest() -> str:
    digest = hashlib.sha256(CACHE_VERSION.encode())
    for name in _CODE_MODULES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
        digest.update(name.encode())
        if origin and Path(origin).is_file():
            digest.update(Path(origin).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class DIOptions:
    """What DIs are built: which streams, at which sizes, from frames prepared how."""

    streams: tuple[str, ...]
    input_size: int = 64
    frames: FrameOptions = field(default_factory=FrameOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "streams", tuple(self.streams))
        unknown = [s for s in self.streams if s not in STREAMS]
        if unknown:
            raise ValueError(f"unknown DI stream(s) {unknown}; known: {sorted(STREAMS)}")
        if not self.streams:
            raise ValueError("DIOptions.streams is empty")


@dataclass(frozen=True)
class DIBatch:
    """All DIs of a dataset in memory: ``x`` (N, S, C, H, W) for ``samples`` (those that could be built)."""

    x: np.ndarray
    samples: tuple[Sample, ...]
    streams: tuple[str, ...]
    failed: tuple[tuple[Sample, str], ...] = ()
    computed: int = 0  # samples whose DIs were computed now (the rest came from the cache)
    apex_estimated: int = 0


class DICache:
    """Build-or-load DIs; ``directory=None`` keeps nothing on disk."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def key(self, sample: Sample, stream: str, settings: DIOptions) -> str:
        """SHA-256 over everything that changes this sample's ``stream`` DI."""
        files = []
        for path in sample.frames:
            try:
                st = path.stat()
                files.append([str(path), st.st_size, st.st_mtime_ns])
            except OSError:
                files.append([str(path), None, None])
        frames = asdict(settings.frames)
        face_model = frames.get("face_model")
        if face_model and settings.frames.alignment != "none" and not sample.aligned:
            try:
                st = Path(face_model).stat()
                frames["face_model_file"] = [st.st_size, st.st_mtime_ns]
            except OSError:
                frames["face_model_file"] = None
        else:
            frames["face_model"] = None
        identity: dict[str, Any] = {
            "version": CACHE_VERSION,
            "code": _code_digest(),
            "sample": [sample.dataset, sample.subject, sample.clip, sample.onset, sample.apex, sample.offset,
                       sample.fps, sample.aligned],
            "files": files,
            "stream": stream,
            "input_size": settings.input_size,
            "frames": frames,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.npy"

    def _load(self, key: str) -> np.ndarray | None:
        if self.directory is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cached DI %s (%s)", path, exc)
            return None

    def _store(self, key: str, di: np.ndarray) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, np.ascontiguousarray(di, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, path)

    def get(self, sample: Sample, settings: DIOptions) -> tuple[np.ndarray, bool, bool]:
        """(S, C, H, W) for ``sample``; also whether anything was computed and whether apex was estimated.

        Raises :class:`~training.datasets.frames.FrameError` when the frames cannot be made into crops.
        """
        keys = [self.key(sample, s, settings) for s in settings.streams]
        found = [self._load(k) for k in keys]
        missing = [i for i, di in enumerate(found) if di is None]
        estimated = False
        if missing:
            clip = load_clip(sample, settings.frames)
            estimated = clip.apex_estimated
            names = [settings.streams[i] for i in missing]
            built = build_streams(clip.frames, clip.onset, clip.apex, clip.offset, names,
                                  intensity=clip.intensity, size=settings.input_size)
            for j, i in enumerate(missing):
                found[i] = built[j]
                self._store(keys[i], built[j])
        return np.stack([np.asarray(di, dtype=np.float32) for di in found]), bool(missing), estimated

    def build(
        self, samples: Sequence[Sample], settings: DIOptions, *, progress: ProgressFn | None = None
    ) -> DIBatch:
        """DIs for every sample (cache first); samples whose frames fail are left out and listed."""
        arrays: list[np.ndarray] = []
        kept: list[Sample] = []
        failed: list[tuple[Sample, str]] = []
        computed = estimated = 0
        for i, sample in enumerate(samples):
            try:
                di, fresh, est = self.get(sample, settings)
            except FrameError as exc:
                log.warning("skipping %s: %s", sample.clip, exc)
                failed.append((sample, str(exc)))
            else:
                arrays.append(di)
                kept.append(sample)
                computed += int(fresh)
                estimated += int(est)
            if progress is not None:
                progress(i + 1, len(samples))
        channels = settings.frames.channels
        empty = np.zeros((0, len(settings.streams), channels, settings.input_size, settings.input_size), np.float32)
        x = np.stack(arrays) if arrays else empty
        if computed:
            log.info("DIs: %d sample(s) computed, %d from cache", computed, len(kept) - computed)
        return DIBatch(x=x, samples=tuple(kept), streams=settings.streams, failed=tuple(failed),
                       computed=computed, apex_estimated=estimated)
