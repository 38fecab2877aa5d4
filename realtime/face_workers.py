"""MediaPipe on several frames at once: one landmarker per worker thread, faces handed back in frame order.

One MediaPipe Face Landmarker works on one frame at a time and keeps about one core busy (its two graph
threads mostly run one after the other), so on a machine with two or more cores a second landmarker on the next
frame nearly doubles the face stage's throughput (measured on the real talking video, 2 cores: 87-93 frames/s
with one, 163-179 with two, 162-184 with three). The face stage is most of a frame's work, so this is what
lets the full pipeline keep up with the bare landmarker.

It is exact only for a tracker whose frames are independent (:attr:`realtime.face.FaceTracker.frames_independent`,
the default settings): each frame's landmarks then depend on that frame alone, and the picking and alignment
that do depend on the previous frames run afterwards, in frame order, on the caller's thread
(:meth:`realtime.face.FaceTracker.accept`).

Threads: each worker is a one-thread executor that creates, uses and closes its own landmarker; the first one
borrows the tracker's (the tracker does not run it meanwhile). The caller (the pipeline's face thread, or
:func:`track_frames`) owns the :class:`FaceWorkers` and is the only one to call it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

import numpy as np

from mer_analysis.chain import AlignedFace, FaceTracking
from realtime.face import FaceFinder, FaceTracker, FoundFaces, TrackedFace

__all__ = ["MAX_FACE_WORKERS", "FaceStage", "FaceWorkers", "FaceWorkersOptions", "default_face_workers",
           "track_frames"]

log = logging.getLogger(__name__)

MAX_FACE_WORKERS = 16  # more landmarkers than this only cost memory on any machine we know
Meta = TypeVar("Meta")  # what the caller carries with a frame (its index, time, capture time)


def default_face_workers(cores: int | None = None) -> int:
    """Two landmark workers on a machine with two or more cores (``None``: the cores this process may use),
    else one (then no worker threads at all)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 2 if (cores or 1) >= 2 else 1


def track_frames(tracker: FaceTracker, frames: Iterable[np.ndarray], fps: float, *,
                 workers: int | None = None) -> Iterator[TrackedFace | None]:
    """The tracked face of every frame of a recording (frame ``k`` at ``k / fps`` s), in order, through a
    :class:`FaceStage` (``workers`` landmarkers once the tracker's frames are independent; default
    :func:`default_face_workers`). For offline work that reads a file as fast as it can (the real-footage
    benchmark, rendering onto real video); the live pipeline drives its own :class:`FaceStage`."""
    with FaceStage[int](tracker, default_face_workers() if workers is None else workers) as stage:
        for k, frame in enumerate(frames):
            for _, face in stage.put(frame, k / fps, k):
                yield _tracked(face)
        for _, face in stage.finish():
            yield _tracked(face)


def _tracked(face: AlignedFace | None) -> TrackedFace | None:
    """A :class:`FaceTracker`'s face, as its type (the stage hands on what the analysis chain reads of it)."""
    assert face is None or isinstance(face, TrackedFace), type(face)
    return face


@dataclass(frozen=True)
class FaceWorkersOptions:
    workers: int = 2  # landmarkers finding faces at once (each on its own thread, ~1 core; extra ones ~30 MB)

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= MAX_FACE_WORKERS:
            raise ValueError(f"workers must be 1..{MAX_FACE_WORKERS}, got {self.workers}")


@dataclass
class _Pending(Generic[Meta]):
    meta: Meta
    t: float
    frame: np.ndarray  # this frame's own copy (the caller's buffer is overwritten by its next frame)
    worker: int
    found: Future[tuple[FoundFaces, float]]


class FaceWorkers(Generic[Meta]):
    """Finds the faces of up to ``workers`` frames at once for ``tracker``; :meth:`put` one frame at a time and
    get back, in order, the frames whose faces are ready. ``record_stage("face", ms)`` gets each frame's time
    (its landmarker call plus alignment; on a busy machine more than the frame's share of the wall clock)."""

    def __init__(self, tracker: FaceTracker, options: FaceWorkersOptions | None = None, *,
                 record_stage: Callable[[str, float], None] | None = None) -> None:
        self.options = options or FaceWorkersOptions()
        if not tracker.frames_independent:
            raise ValueError("FaceWorkers needs a tracker whose frames are independent (see "
                             "FaceTracker.frames_independent)")
        self._tracker = tracker
        self._record = record_stage
        n = self.options.workers
        self._executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mer-landmarks-{i}")
                           for i in range(n)]
        # the first worker uses the tracker's own landmarker (the tracker must not run it meanwhile); the others
        # create theirs on the thread that uses and closes it
        self._finders: list[FaceFinder] = [tracker.finder]
        try:
            for future in [ex.submit(tracker.new_finder) for ex in self._executors[1:]]:
                self._finders.append(future.result())
        except BaseException:
            self.close()
            raise
        self._pending: deque[_Pending[Meta]] = deque()
        self._spare: list[np.ndarray] = []  # frame copies not in use

    def put(self, frame: np.ndarray, t: float, meta: Meta) -> list[tuple[Meta, TrackedFace | None]]:
        """Hand one frame (any buffer: it is copied) to an idle worker; the frames now ready, oldest first.
        Frames must come in time order. A worker's failure is raised here, for the frame it failed on."""
        if not self._executors:
            raise RuntimeError("FaceWorkers is closed")
        ms = self._tracker.timestamp_ms(t)
        copy = self._copy(frame)
        # the first idle worker: with frames one at a time (a camera the face stage keeps up with) it is always
        # the first, whose landmarker stays warm; any order keeps each landmarker's timestamps increasing
        busy = {p.worker for p in self._pending}
        worker = next(i for i in range(len(self._executors)) if i not in busy)
        found = self._executors[worker].submit(_find, self._finders[worker], copy, ms)
        self._pending.append(_Pending(meta, t, copy, worker, found))
        ready = []
        while len(self._pending) >= len(self._executors):  # every worker busy: wait for the oldest frame
            ready.append(self._accept_oldest())
        return ready

    def finish(self) -> list[tuple[Meta, TrackedFace | None]]:
        """The frames still in the workers' hands, in order (end of stream)."""
        return [self._accept_oldest() for _ in range(len(self._pending))]

    def _accept_oldest(self) -> tuple[Meta, TrackedFace | None]:
        pending = self._pending.popleft()
        try:
            found, find_ms = pending.found.result()
            t0 = time.perf_counter()
            face = self._tracker.accept(pending.frame, pending.t, found)
            if self._record is not None:
                self._record("face", find_ms + (time.perf_counter() - t0) * 1e3)
        finally:
            self._spare.append(pending.frame)
        return pending.meta, face

    def _copy(self, frame: np.ndarray) -> np.ndarray:
        spare = self._spare.pop() if self._spare else None
        if spare is None or spare.shape != frame.shape or spare.dtype != frame.dtype:
            spare = np.empty_like(frame)
        np.copyto(spare, frame)
        return spare

    def close(self) -> None:
        """Wait for the frames in hand, close every landmarker on its own thread, stop the threads; safe twice."""
        executors, self._executors = self._executors, []
        for executor, finder in list(zip(executors, self._finders, strict=False))[1:]:  # not the tracker's own
            executor.submit(finder.close)
        for executor in executors:
            executor.shutdown(wait=True)
        self._finders = []
        self._pending.clear()

    def __enter__(self) -> FaceWorkers[Meta]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FaceStage(Generic[Meta]):
    """The face stage over a stream of frames, in order: ``track(frame, t)`` one frame after the other (default
    ``tracker.process``) until the tracker's frames are independent (at once with the default settings, or
    once ``landmark_every="auto"`` settled on every frame), then :class:`FaceWorkers` with ``workers``
    landmarkers, when ``workers`` > 1 and ``tracker`` is a :class:`~realtime.face.FaceTracker`. Same faces
    either way; :meth:`put` and :meth:`finish` as for :class:`FaceWorkers`."""

    def __init__(self, tracker: FaceTracking, workers: int, *,
                 track: Callable[[np.ndarray, float], AlignedFace | None] | None = None,
                 record_stage: Callable[[str, float], None] | None = None) -> None:
        self._tracker = tracker
        self._track = track if track is not None else tracker.process
        self._workers = workers
        self._record = record_stage
        self._pool: FaceWorkers[Meta] | None = None

    def put(self, frame: np.ndarray, t: float, meta: Meta) -> list[tuple[Meta, AlignedFace | None]]:
        tracker = self._tracker
        if (self._pool is None and self._workers > 1 and isinstance(tracker, FaceTracker)
                and tracker.frames_independent):
            self._pool = FaceWorkers(tracker, FaceWorkersOptions(workers=self._workers), record_stage=self._record)
            log.info("face landmarks: %d MediaPipe landmarkers on consecutive frames", self._workers)
        if self._pool is not None:
            return list(self._pool.put(frame, t, meta))
        return [(meta, self._track(frame, t))]

    def finish(self) -> list[tuple[Meta, AlignedFace | None]]:
        return list(self._pool.finish()) if self._pool is not None else []

    def close(self) -> None:
        """Stop the workers, if they started; safe to call twice. The tracker stays open (the caller's)."""
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> FaceStage[Meta]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _find(finder: FaceFinder, frame: np.ndarray, ms: int) -> tuple[FoundFaces, float]:
    """A worker's job: the faces in one frame and the milliseconds it took."""
    t0 = time.perf_counter()
    found = finder.find_bgr(frame, ms)
    return found, (time.perf_counter() - t0) * 1e3
