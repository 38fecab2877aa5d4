"""The live analysis chain, run offline over a video's tracked faces: how benchmarks and training see a video.

MediaPipe is most of a frame's cost, and a benchmark runs the spotter over the same rendered video many times
(each fold's model, each setting). So a video is tracked once, exactly as ``mer-live --video X --fast`` tracks
it (:func:`realtime.face_workers.track_frames`: the live tracker with the live options, the same landmark
workers, frame ``k`` at ``k / fps`` s), and every tracked face's aligned crop and crop landmarks are kept
(:class:`FaceTrack`, cached as plain arrays). :func:`replay` then feeds them, frame by frame, to a
:class:`mer_analysis.chain.Analyzer` — the object the live pipeline drives — so motion, spotting and the
learned spotter's features are computed by the one implementation. ``tests/test_replay.py`` checks that a
replay's windows equal ``mer-live --video X --fast``'s events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mer_analysis.chain import Analyzer, AnalyzerOptions
from mer_analysis.learned_spotting import SpotModel
from mer_analysis.motion import MotionSample
from mer_analysis.spot_features import GridRow
from mer_analysis.spotting import SpottedWindow
from mer_core.paths import cache_key
from realtime.face import FaceTracker, FaceTrackerOptions, TrackedFace
from realtime.face_workers import track_frames
from realtime.sources import open_source

__all__ = ["FaceTrack", "Replay", "cached_track", "live_tracker_options", "replay", "track_faces"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, advance, total)
_CACHE_VERSION = 1


def live_tracker_options(face_model: str | Path | None, *, crop_size: int = 128) -> FaceTrackerOptions:
    """The face tracker's settings as ``mer-live`` uses them by default (``--landmark-every 1``)."""
    return FaceTrackerOptions(model_path=face_model, crop_size=crop_size, landmark_every=1)


@dataclass
class FaceTrack:
    """Every frame's tracked face of one video: aligned crop and crop landmarks (zeros where none)."""

    name: str
    fps: float
    present: np.ndarray  # (n,) bool
    crops: np.ndarray  # (n, S, S) uint8
    landmarks: np.ndarray  # (n, 478, 2) float32, crop pixels

    @property
    def frames(self) -> int:
        return len(self.present)

    @property
    def minutes(self) -> float:
        return self.frames / self.fps / 60.0

    def faces(self) -> Iterator[TrackedFace | None]:
        """The tracked faces again, as the analysis chain takes them."""
        none2 = np.zeros((2, 3))
        for k in range(self.frames):
            if not self.present[k]:
                yield None
                continue
            yield TrackedFace(landmarks=self.landmarks[k], anchors=none2, bbox=(0.0, 0.0, 0.0, 0.0),
                              crop=self.crops[k], crop_bgr=None, crop_landmarks=self.landmarks[k], matrix=none2)

    def save(self, file: Path) -> None:
        """Plain arrays (no pickle), written through a temporary file."""
        tmp = file.with_name(file.name + ".tmp.npz")
        np.savez(tmp, name=np.array(self.name), fps=np.array(self.fps), present=self.present, crops=self.crops,
                 landmarks=self.landmarks)
        tmp.replace(file)

    @classmethod
    def load(cls, file: Path) -> FaceTrack:
        with np.load(file, allow_pickle=False) as z:
            return cls(str(z["name"]), float(z["fps"]), z["present"], z["crops"], z["landmarks"])


def track_faces(video: Path, tracker: FaceTrackerOptions, *, name: str | None = None, fps: float | None = None,
                progress: Progress | None = None) -> FaceTrack:
    """Track every frame of ``video`` (a file, or a folder of numbered frames at ``fps``) as ``mer-live --video X
    --fast`` does."""
    source = open_source(video, fps=fps)
    total = source.frame_count or 0
    label = f"track {name or video.name}"
    if progress:
        progress(label, 0, total)
    size = tracker.crop_size
    present: list[bool] = []
    crops: list[np.ndarray] = []
    marks: list[np.ndarray] = []
    blank, no_marks = np.zeros((size, size), np.uint8), np.zeros((478, 2), np.float32)
    with source, FaceTracker(tracker) as face_tracker:
        fps = float(source.fps)
        for face in track_frames(face_tracker, source.frames(), fps):
            present.append(face is not None)
            crops.append(blank if face is None else face.crop)
            marks.append(no_marks if face is None else face.crop_landmarks.astype(np.float32))
            if progress and len(present) % 25 == 0:
                progress(label, 25, total)
        error = source.error
    if not present:
        raise RuntimeError(f"{video}: no frames could be read" + (f" ({error})" if error else ""))
    return FaceTrack(name or video.stem, fps, np.array(present), np.stack(crops), np.stack(marks))


def cached_track(video: Path, tracker: FaceTrackerOptions, work: Path, *, name: str | None = None,
                 fps: float | None = None, progress: Progress | None = None) -> FaceTrack:
    """:func:`track_faces`, cached in ``work`` by the video (its content), the crop size and ``fps``."""
    extra: dict[str, Any] = {"crop": tracker.crop_size}
    if fps is not None:
        extra["fps"] = fps
    file = work / f"faces-{cache_key(video, extra, _CACHE_VERSION)}.npz"
    if file.is_file():
        try:
            return FaceTrack.load(file)
        except (OSError, ValueError, KeyError):
            log.info("face cache %s unreadable; tracking again", file)
    track = track_faces(video, tracker, name=name, fps=fps, progress=progress)
    work.mkdir(parents=True, exist_ok=True)
    track.save(file)
    return track


@dataclass
class Replay:
    """What the chain gave over one video: its windows (micro and macro) and, in ``features`` mode, the grid rows."""

    windows: list[SpottedWindow]
    rows: list[GridRow]
    face_frames: int
    samples: list[MotionSample | None] = field(default_factory=list)  # per frame, in ``features`` mode


def replay(track: FaceTrack, options: AnalyzerOptions, *, spot_model: SpotModel | None = None) -> Replay:
    """Run the analysis chain (motion, spotter, DIs) over ``track``'s faces, frame ``k`` at ``k / fps`` s."""
    analyzer = Analyzer(_NoTracker(), options, spot_model=spot_model)
    windows: list[SpottedWindow] = []
    fps = track.fps
    for k, face in enumerate(track.faces()):
        result = analyzer.analyze(face, k, k / fps)
        windows += [job.window for job in result.jobs]
    windows += [job.window for job in analyzer.flush()]
    recorder = analyzer.recorder
    return Replay(windows, recorder.rows if recorder else [], analyzer.face_frames,
                  recorder.samples if recorder else [])


class _NoTracker:
    """The face stage of a replay: faces come from the track, never from frames."""

    def process(self, frame_bgr: np.ndarray, t: float) -> TrackedFace | None:
        raise RuntimeError("a replay is fed tracked faces, not frames")
