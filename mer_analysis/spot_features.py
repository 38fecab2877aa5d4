"""The learned spotter's input: per-region motion features on a fixed time grid.

:class:`mer_analysis.motion.MotionMeter` measures, per frame, how far each face region's skin moved over the last
``lag_s`` (relative to the skull), the change no movement explains, the head's residual motion, the eye
opening and how far the region's mesh landmarks moved. :class:`SpotFeatures` turns that into one row per region
and per step of a fixed grid (``rate_hz``, 30 steps a second), so a 25 fps webcam and a 200 fps lab camera
feed the model the same time scale: frames are interpolated linearly onto the grid as they arrive.

A row holds the region's own channels (its displacement, its size absolute and relative to the region's
usual level, its unexplained change, its landmarks' movement) and the face's (head motion, eye opening against
its usual, how much the whole face and the jaw move). Sizes are in units of :data:`SCALE` IOD, so a rendered
or real movement of 0.02-0.06 IOD reads 1-3. Training (:mod:`training.spotter_data`) and live use
(:class:`mer_analysis.learned_spotting.LearnedSpotter`) both build rows here, so the model sees live what it
saw in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mer_analysis.motion import REGION_NAMES, MotionSample

__all__ = ["FEATURES", "FEATURE_VERSION", "GridRow", "SpotFeatureOptions", "SpotFeatures"]

SCALE = 0.02  # IOD: feature unit of sizes
# Channels of a row, per region; the face's channels are the same for every region.
REGION_CHANNELS = ("dx", "dy", "size", "relative", "change", "mesh_dx", "mesh_dy")
FACE_CHANNELS = ("head", "eyes", "face", "jaw", "largest")
FEATURES = REGION_CHANNELS + FACE_CHANNELS
FEATURE_VERSION = 1  # bumped when a channel changes meaning; a spotting model's card names the one it read
_JAW = tuple(REGION_NAMES.index(n) for n in ("lip_upper", "lip_lower", "chin"))


@dataclass(frozen=True)
class SpotFeatureOptions:
    """Grid and running levels. Times in seconds."""

    rate_hz: float = 30.0  # grid steps a second
    level_s: float = 10.0  # memory of a region's usual movement and of the usual eye opening
    level_floor: float = 0.002  # IOD: a region's usual movement is never taken as below this

    def __post_init__(self) -> None:
        if not 5.0 <= self.rate_hz <= 240.0:
            raise ValueError(f"rate_hz must be within 5..240, got {self.rate_hz}")
        if self.level_s <= 0 or self.level_floor <= 0:
            raise ValueError("level_s and level_floor must be > 0")


@dataclass(frozen=True, slots=True)
class GridRow:
    """One grid step: ``step`` (time = step / rate_hz), the native frame nearest it, and its features
    (R, len(FEATURES)) float32."""

    step: int
    frame: int
    frame_t: float
    values: np.ndarray


class SpotFeatures:
    """Streaming: ``update(sample)`` per frame with a face (None: face lost, everything restarts); returns the
    grid rows that frame completed (none, one, or several at a high grid rate over a slow camera)."""

    def __init__(self, options: SpotFeatureOptions | None = None) -> None:
        self.options = options or SpotFeatureOptions()
        regions, channels = len(REGION_NAMES), len(FEATURES)
        self._native = np.zeros((regions, channels), np.float32)
        self._prev = np.zeros((regions, channels), np.float32)
        self.reset()
        self._shape = (regions, channels)

    def reset(self) -> None:
        self._prev_t: float | None = None
        self._prev_frame = -1
        self._level_sum = np.zeros(len(REGION_NAMES))  # decayed sums: squared size, and weight
        self._level_weight = 0.0
        self._eye_sum = 0.0
        self._last_t: float | None = None

    def update(self, sample: MotionSample | None) -> list[GridRow]:
        if sample is None or sample.displacement is None:
            if sample is None:
                self.reset()
            return []
        t = float(sample.t)
        if self._prev_t is not None and t <= self._prev_t:
            self.reset()
        row = self._row(sample)
        out: list[GridRow] = []
        rate = self.options.rate_hz
        if self._prev_t is not None:
            first = math.floor(self._prev_t * rate) + 1
            last = math.floor(t * rate + 1e-9)
            span = t - self._prev_t
            for step in range(first, last + 1):
                w = (step / rate - self._prev_t) / span
                values = (self._prev + np.float32(w) * (row - self._prev)).astype(np.float32)
                near = sample.index if w >= 0.5 else self._prev_frame
                out.append(GridRow(step, near, t if w >= 0.5 else self._prev_t, values))
        np.copyto(self._prev, row)
        self._prev_t, self._prev_frame = t, int(sample.index)
        return out

    def _row(self, sample: MotionSample) -> np.ndarray:
        """The frame's features (R, C), and the running levels updated with it."""
        assert sample.displacement is not None
        opts = self.options
        d = sample.displacement.astype(np.float64)
        size = np.sqrt((d * d).sum(axis=1))
        t = float(sample.t)
        decay = 1.0 if self._last_t is None else math.exp(-max(t - self._last_t, 0.0) / opts.level_s)
        self._last_t = t
        self._level_sum = self._level_sum * decay + size * size
        eye = float(sample.eye_opening)
        self._eye_sum = self._eye_sum * decay + eye
        self._level_weight = self._level_weight * decay + 1.0
        level = np.maximum(np.sqrt(self._level_sum / self._level_weight), opts.level_floor)
        usual_eye = self._eye_sum / self._level_weight
        out = self._native
        out[:, 0:2] = d / SCALE
        out[:, 2] = size / SCALE
        out[:, 3] = size / level
        out[:, 4] = 0.0 if sample.change is None else sample.change / 10.0
        if sample.geometry is not None:
            out[:, 5:7] = sample.geometry / SCALE
        else:
            out[:, 5:7] = 0.0
        out[:, 7] = sample.head / 0.05
        out[:, 8] = eye / usual_eye - 1.0 if usual_eye > 1e-6 else 0.0
        out[:, 9] = size.mean() / SCALE
        out[:, 10] = size[list(_JAW)].mean() / SCALE
        out[:, 11] = size.max() / SCALE
        return out
