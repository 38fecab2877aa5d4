"""The per-frame analysis chain: face → aligned crop → motion → spotter → window DIs.

A plain class with no threads, sockets or clocks of its own, so it runs the same in tests, in ``mer-live``,
``mer-analyze`` and ``mer-bench``. The live pipeline's analyser thread owns one :class:`Analyzer` and feeds it
frames in order; spotted windows come back with their network inputs already built by the shared DI code. The
face stage is handed in (:class:`FaceTracking`): the MediaPipe tracker lives with the live runtime
(:class:`realtime.face.FaceTracker`), above this package.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engines.card import ModelCard
from mer_analysis.learned_spotting import FeatureRecorder, LearnedSpotter, LearnedSpotterOptions, SpotModel
from mer_analysis.motion import NUM_LANDMARKS, REGION_NAMES, MotionMeter, MotionOptions, MotionSample
from mer_analysis.spot_features import SpotFeatureOptions
from mer_analysis.spotting import SpottedWindow, Spotter, SpotterOptions
from mer_core.dynamic_image import build_streams

log = logging.getLogger(__name__)

StageRecorder = Callable[[str, float], None]


class AlignedFace(Protocol):
    """What the chain reads of a tracked face (:class:`realtime.face.TrackedFace`): the aligned grey crop and
    the face-mesh landmarks in crop pixels. The face belongs to the chain once handed over: never reused."""

    @property
    def crop(self) -> np.ndarray: ...  # (crop_size, crop_size) uint8

    @property
    def crop_landmarks(self) -> np.ndarray: ...  # (478, 2) crop pixels


class FaceTracking(Protocol):
    """The face stage as the analysis chain calls it (:class:`realtime.face.FaceTracker`, mer-analyze's
    blendshape tap, fakes in tests): one BGR frame and its source time in, the aligned face or None out."""

    def process(self, frame_bgr: np.ndarray, t: float) -> AlignedFace | None: ...


def _ignore_stage(stage: str, ms: float) -> None:
    """Default stage recorder: timings are optional."""


class SpottingStage(Protocol):
    """A spotter as the chain drives it: the rule :class:`mer_analysis.spotting.Spotter`, the
    :class:`mer_analysis.learned_spotting.LearnedSpotter`, or the training :class:`FeatureRecorder`."""

    @property
    def state(self) -> str: ...

    @property
    def score(self) -> float: ...

    @property
    def threshold(self) -> float | None: ...

    def update(self, sample: MotionSample | None, *, index: int, t: float) -> list[SpottedWindow]: ...

    def flush(self) -> list[SpottedWindow]: ...


SPOTTERS = ("learned", "rules", "features")


@dataclass(frozen=True)
class AnalyzerOptions:
    """What the analysis chain needs beyond its stages' own settings."""

    crop_size: int = 128  # aligned crop side (pixels); the model card's crop_size
    input_size: int = 64  # DI side fed to the network (pixels); the model card's input_size
    streams: tuple[str, ...] = ("onset_apex", "apex_offset")  # the model card's streams
    history_s: float = 5.0  # crops kept for building DIs: context + longest window + look-ahead + margin
    max_fps: float = 240.0  # sizes the crop history (a 200 fps lab camera fits)
    history_frames: int = 0  # ... and at least this many crops are held (mer-live --windows: the longest window)
    motion: MotionOptions = field(default_factory=MotionOptions)
    # which spotter runs: "learned" (the spotting model handed to the Analyzer; the rule spotter when none is),
    # "rules" (mer_analysis.spotting.Spotter), or "features" (no spotting: the learned spotter's inputs are kept,
    # for training)
    spotting: str = "learned"
    spotter: SpotterOptions = field(default_factory=SpotterOptions)  # the rule spotter's settings
    learned: LearnedSpotterOptions = field(default_factory=LearnedSpotterOptions)
    features: SpotFeatureOptions = field(default_factory=SpotFeatureOptions)  # "features" mode's grid

    def __post_init__(self) -> None:
        if self.spotting not in SPOTTERS:
            raise ValueError(f"spotting must be one of {SPOTTERS}, got {self.spotting!r}")

    @classmethod
    def for_card(cls, card: ModelCard, *, spotter: SpotterOptions | None = None, spotting: str = "learned",
                 learned: LearnedSpotterOptions | None = None) -> AnalyzerOptions:
        """Options that build the inputs ``card``'s model was trained on (crop and input size, streams), with
        the spotting settings given (default: the defaults)."""
        return cls(crop_size=card.crop_size, input_size=card.input_size, streams=card.streams, spotting=spotting,
                   spotter=spotter if spotter is not None else SpotterOptions(),
                   learned=learned if learned is not None else LearnedSpotterOptions())


@dataclass(frozen=True, slots=True)
class WindowJob:
    """A spotted window and, when its crops are all still held, the model input (S, C, H, W). The capture
    clock values of the frame that closed it and of its offset frame travel with it (None when unknown), so
    the classifier measures ``latency_ms`` and ``delay_ms`` without asking the capture thread."""

    window: SpottedWindow
    inputs: np.ndarray | None
    closed_at: float | None = None  # capture clock at the grab of window.decided_at's frame
    offset_at: float | None = None  # capture clock at the grab of window.offset's frame


@dataclass(frozen=True, slots=True)
class FrameResult:
    index: int
    t: float
    face: bool
    score: float | None  # the spotter's score (see Spotter.score; the records' intensity); None without a face
    regions: dict[str, float]  # each region's displacement over the motion lag, IOD units
    jobs: tuple[WindowJob, ...]
    captured_at: float | None = None  # capture clock at this frame's grab (None: not from a capture thread)


class CropHistory:
    """Fixed ring of the last aligned crops with their frame indices and crop landmarks (no per-frame
    allocation)."""

    def __init__(self, capacity: int, crop_size: int) -> None:
        self.capacity = capacity
        self._crops = np.zeros((capacity, crop_size, crop_size), dtype=np.uint8)
        self._landmarks = np.zeros((capacity, NUM_LANDMARKS, 2), dtype=np.float32)
        self._index = np.full(capacity, -1, dtype=np.int64)

    def push(self, index: int, crop: np.ndarray, landmarks: np.ndarray) -> None:
        slot = index % self.capacity
        np.copyto(self._crops[slot], crop)
        np.copyto(self._landmarks[slot], landmarks)
        self._index[slot] = index

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Crop and crop landmarks of frame ``index``, or None when it is no longer (or never was) held."""
        slot = index % self.capacity
        if self._index[slot] != index:
            return None
        return self._crops[slot], self._landmarks[slot]

    def window(self, first: int, last: int) -> np.ndarray | None:
        """Crops of frames first..last (inclusive), or None if any is missing."""
        if last < first or last - first + 1 > self.capacity:
            return None
        wanted = np.arange(first, last + 1)
        slots = wanted % self.capacity
        if not np.array_equal(self._index[slots], wanted):
            return None
        return self._crops[slots]

    def clear(self) -> None:
        self._index.fill(-1)


class CaptureTimes:
    """The capture clock value of each of the last ``capacity`` frames analysed, by frame index: how a window
    finds when its offset frame was grabbed. Written and read by the analysing thread only."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._index = np.full(capacity, -1, dtype=np.int64)
        self._time = np.zeros(capacity, dtype=np.float64)

    def put(self, index: int, captured_at: float | None) -> None:
        slot = index % self.capacity
        self._index[slot] = index if captured_at is not None else -1
        self._time[slot] = captured_at if captured_at is not None else 0.0

    def get(self, index: int) -> float | None:
        """When frame ``index`` was grabbed, or None (unknown, not analysed, or too old)."""
        slot = index % self.capacity
        return float(self._time[slot]) if index >= 0 and self._index[slot] == index else None


class Analyzer:
    """Face tracking, motion, spotting and DI building for one stream of frames: the one place that builds
    the motion meter and the spotter. ``spot_model`` is the learned spotter's model (None: the rule spotter)."""

    def __init__(
        self,
        tracker: FaceTracking,
        options: AnalyzerOptions | None = None,
        *,
        spot_model: SpotModel | None = None,
        record_stage: StageRecorder = _ignore_stage,
    ) -> None:
        self.options = options or AnalyzerOptions()
        self.tracker = tracker
        self.motion = MotionMeter(self.options.motion, max_fps=self.options.max_fps)
        self.spotter: SpottingStage
        self.recorder: FeatureRecorder | None = None
        mode = self.options.spotting
        if mode == "features":
            self.spotter = self.recorder = FeatureRecorder(self.options.features)
        elif mode == "learned" and spot_model is not None:
            if abs(spot_model.card.motion_lag_s - self.options.motion.lag_s) > 1e-6:
                raise ValueError(f"spotting model '{spot_model.card.name}' was trained on motion over "
                                 f"{spot_model.card.motion_lag_s} s, the meter measures {self.options.motion.lag_s} s")
            self.spotter = LearnedSpotter(spot_model, self.options.learned)
        else:
            self.spotter = Spotter(self.options.spotter, displacement=self._displacement)
        self.spotting = "rules" if isinstance(self.spotter, Spotter) else mode
        capacity = max(8, int(self.options.history_s * self.options.max_fps), self.options.history_frames)
        self.history = CropHistory(capacity, self.options.crop_size)
        self.capture_times = CaptureTimes(capacity)
        self._record = record_stage
        self.frames = 0
        self.face_frames = 0
        self.face_now = False

    def process(self, frame: np.ndarray, index: int, t: float, *, captured_at: float | None = None) -> FrameResult:
        """Analyse one frame; frames must come in increasing index order. ``captured_at``: the capture clock
        at its grab (:attr:`realtime.ringbuffer.FramePacket.captured_at`), carried on to its windows."""
        return self.analyze(self.track(frame, t), index, t, captured_at=captured_at)

    def track(self, frame: np.ndarray, t: float) -> AlignedFace | None:
        """The face stage alone. It may run on another thread than :meth:`analyze`, a few frames ahead (the
        pipeline overlaps MediaPipe with motion and spotting that way): the result owns its arrays."""
        t0 = time.perf_counter()
        face = self.tracker.process(frame, t)
        self._record("face", (time.perf_counter() - t0) * 1e3)
        return face

    def analyze(self, face: AlignedFace | None, index: int, t: float, *,
                captured_at: float | None = None) -> FrameResult:
        """Everything after the face stage, for the face :meth:`track` found in frame ``index``."""
        perf = time.perf_counter
        t1 = perf()
        self.frames += 1
        self.capture_times.put(index, captured_at)
        score: float | None = None
        regions: dict[str, float] = {}
        sample: MotionSample | None = None
        if face is None:
            if self.face_now:
                self.motion.reset()
                self.history.clear()
            self.face_now = False
        else:
            self.face_now = True
            self.face_frames += 1
            self.history.push(index, face.crop, face.crop_landmarks)
            sample = self.motion.update(face.crop, face.crop_landmarks, index, t)
            if sample.displacement is not None:
                size = np.sqrt((sample.displacement**2).sum(axis=1))
                regions = {name: float(v) for name, v in zip(REGION_NAMES, size, strict=True)}
        t2 = perf()
        self._record("motion", (t2 - t1) * 1e3)
        windows = self.spotter.update(sample, index=index, t=t)
        if sample is not None:
            score = self.spotter.score
        t3 = perf()
        self._record("spotting", (t3 - t2) * 1e3)
        jobs = self._jobs(windows)
        if jobs:
            self._record("di", (perf() - t3) * 1e3)
        return FrameResult(index, t, face is not None, score, regions, jobs, captured_at)

    def flush(self) -> tuple[WindowJob, ...]:
        """End of stream: windows still open or awaiting look-ahead are decided now."""
        return self._jobs(self.spotter.flush())

    def _jobs(self, windows: Sequence[SpottedWindow]) -> tuple[WindowJob, ...]:
        if not windows:
            return ()
        return tuple(self.job(w, self.build_inputs(w)) for w in windows)

    def job(self, window: SpottedWindow, inputs: np.ndarray | None) -> WindowJob:
        """``window`` with its inputs and the capture times of its closing and offset frames."""
        times = self.capture_times
        return WindowJob(window, inputs, closed_at=times.get(window.decided_at.frame),
                         offset_at=times.get(window.offset.frame))

    def build_inputs(self, window: SpottedWindow) -> np.ndarray | None:
        """The model input for a window, from the held crops, via the one shared DI builder."""
        crops = self.history.window(window.onset.frame, window.offset.frame)
        if crops is None:
            log.debug("window %s..%s: crops no longer held", window.onset.frame, window.offset.frame)
            return None
        onset = 0
        apex = window.apex.frame - window.onset.frame
        offset = window.offset.frame - window.onset.frame
        return build_streams(crops, onset, apex, offset, self.options.streams, size=self.options.input_size)

    def _displacement(self, first: int, second: int) -> np.ndarray | None:
        """Region displacement between two held frames (the spotter's rise-and-return check)."""
        a, b = self.history.get(first), self.history.get(second)
        if a is None or b is None:
            return None
        return self.motion.displacement(a[0], a[1], b[0], b[1])
