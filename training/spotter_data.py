"""The learned spotter's training data: grid features of tracked videos, with per-step labels.

A video's features come from the live chain itself (:func:`training.replay.replay` in ``features`` mode: the
motion meter and :class:`realtime.spot_features.SpotFeatures` as ``mer-live`` runs them), cached beside the
tracked faces. A step is labelled 1 when it lies inside an annotated micro-expression (its onset frame to its
offset frame, both inclusive: half a frame either side) and 0 everywhere else — the face's own talking,
blinks, head turns and expressions, and any macro-expression, are what the model learns to ignore.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime.analysis import AnalyzerOptions
from realtime.spot_features import FEATURE_VERSION, FEATURES, GridRow, SpotFeatureOptions
from training.replay import FaceTrack, replay

__all__ = ["SpotSequence", "features_of", "label_steps", "rows_of", "segments"]

log = logging.getLogger(__name__)


@dataclass
class SpotSequence:
    """One video's grid features and labels. ``steps`` are grid step numbers (time = step / rate_hz); steps
    missing between two rows mean the face was lost there."""

    name: str
    person: str
    tag: str  # "original" or the rendering's tag
    fps: float
    rate_hz: float
    frames_total: int
    steps: np.ndarray  # (T,) int64
    frames: np.ndarray  # (T,) int64, the native frame nearest each step
    times: np.ndarray  # (T,) float64, that frame's time
    values: np.ndarray  # (T, R, C) float32
    labels: np.ndarray  # (T,) float32
    truth: list[dict[str, Any]] = field(default_factory=list)
    family: str = ""

    @property
    def minutes(self) -> float:
        return self.frames_total / self.fps / 60.0

    @property
    def rendered(self) -> bool:
        return self.tag != "original"

    def rows(self) -> list[GridRow]:
        return [GridRow(int(s), int(f), float(t), self.values[k])
                for k, (s, f, t) in enumerate(zip(self.steps, self.frames, self.times, strict=True))]


def label_steps(steps: np.ndarray, rate_hz: float, fps: float, truth: Iterable[dict[str, Any]]) -> np.ndarray:
    """1.0 for steps inside an annotated micro-expression (onset..offset frames, inclusive), else 0.0."""
    t = steps.astype(np.float64) / rate_hz
    out = np.zeros(len(steps), np.float32)
    half = 0.5 / fps
    for row in truth:
        if row.get("kind", "micro") != "micro":
            continue
        lo, hi = int(row["onset"]) / fps - half, int(row["offset"]) / fps + half
        out[(t >= lo) & (t < hi)] = 1.0
    return out


def rows_of(track: FaceTrack, options: SpotFeatureOptions | None = None) -> list[GridRow]:
    """The grid rows the live chain computes over ``track`` (``features`` mode of the Analyzer)."""
    analyzer = AnalyzerOptions(spotting="features", features=options or SpotFeatureOptions())
    return replay(track, analyzer).rows


def features_of(track: FaceTrack, *, person: str, tag: str, truth: Sequence[dict[str, Any]] = (),
                family: str = "", options: SpotFeatureOptions | None = None, cache: Path | None = None
                ) -> SpotSequence:
    """``track``'s :class:`SpotSequence` (cached in ``cache``, keyed by the faces and the feature settings)."""
    opts = options or SpotFeatureOptions()
    file = None
    if cache is not None:
        digest = hashlib.sha256()
        digest.update(track.name.encode())
        digest.update(np.ascontiguousarray(track.landmarks[:: max(1, track.frames // 64)]).tobytes())
        digest.update(f"{track.frames}|{track.fps}|{opts}|{FEATURE_VERSION}|{FEATURES}".encode())
        file = cache / f"features-{digest.hexdigest()[:16]}.npz"
        if file.is_file():
            with np.load(file, allow_pickle=False) as z:
                steps, frames, times, values = z["steps"], z["frames"], z["times"], z["values"]
            return SpotSequence(track.name, person, tag, track.fps, opts.rate_hz, track.frames, steps, frames, times,
                                values, label_steps(steps, opts.rate_hz, track.fps, truth), list(truth), family)
    rows = rows_of(track, opts)
    steps = np.array([r.step for r in rows], np.int64)
    frames = np.array([r.frame for r in rows], np.int64)
    times = np.array([r.frame_t for r in rows], np.float64)
    values = (np.stack([r.values for r in rows]) if rows
              else np.zeros((0, 1, len(FEATURES)), np.float32)).astype(np.float32)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(file.name + ".tmp.npz")
        np.savez(tmp, steps=steps, frames=frames, times=times, values=values)
        tmp.replace(file)
    return SpotSequence(track.name, person, tag, track.fps, opts.rate_hz, track.frames, steps, frames, times, values,
                        label_steps(steps, opts.rate_hz, track.fps, truth), list(truth), family)


def segments(steps: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index ranges of consecutive grid steps."""
    if len(steps) == 0:
        return []
    breaks = np.nonzero(np.diff(steps) != 1)[0] + 1
    bounds = np.r_[0, breaks, len(steps)]
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
