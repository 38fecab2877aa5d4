"""Face tracking: MediaPipe Face Landmarker (VIDEO mode) behind our own small API.

``FaceTracker`` follows one face through a video and returns it aligned by :func:`mer_core.alignment.align_face`,
the one alignment used everywhere. The model file comes from :mod:`realtime.face_model`, the face mesh's
indices and MediaPipe image plumbing from :mod:`realtime.landmarks`; every face in a still image is
:mod:`training.still_faces`.

MediaPipe is imported lazily, so ``import realtime.face`` stays cheap. Its native code writes a few
lines to stderr when a landmarker is created; mediapipe 1.2.2 offers no switch for them
(``GLOG_minloglevel`` has no effect) and we do not redirect the process's stderr behind the user's back.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import cv2
import numpy as np

from mer_core.alignment import DEFAULT_CROP_SIZE, align_face, transform_points
from realtime.face_model import resolve_face_model
from realtime.landmarks import (
    PAD_VALUE,
    Box,
    anchors_from_landmarks,
    area,
    bbox,
    check_image,
    landmarks_px,
    mediapipe_module,
    to_rgb,
)

logger = logging.getLogger(__name__)

_Chosen = tuple[np.ndarray, Box, dict[str, float]]  # the tracked face's landmarks, box and blendshapes


# ------------------------------------------------------------------- MediaPipe's VIDEO result, read raw


@dataclass(frozen=True)
class _RawVideoApi:
    """What reading a VIDEO-mode result straight from MediaPipe's C struct needs (see :func:`_raw_video_api`)."""

    result_type: Any  # ctypes struct of one result
    floats: int  # a landmark struct's size in floats
    x: int  # offsets of x and y in floats
    y: int


def _raw_video_api() -> _RawVideoApi | None:
    """MediaPipe's ctypes layer (mediapipe >= 1.2), when it looks as this code expects; None otherwise.

    ``FaceLandmarker.detect_for_video`` turns each landmark of the C result into a Python object (478 per
    face, ~0.7 ms a frame on this machine, more than a tenth of the pipeline's own work), which we then turned
    back into an array. :func:`_detect_for_video_raw` reads x and y into numpy instead, same values to the bit.
    """
    import ctypes

    try:
        from mediapipe.tasks.python.vision import face_landmarker as fl

        result_type = fl.MpFaceLandmarkerResultC
        landmark = result_type._fields_[0][1]._type_._fields_[0][1]._type_  # → MpNormalizedLandmarkC
        size, x, y = ctypes.sizeof(landmark), landmark.x, landmark.y
        ok = (
            result_type._fields_[0][0] == "face_landmarks"
            and size % 4 == 0 and x.size == y.size == 4 and x.offset % 4 == 0 and y.offset % 4 == 0
            and callable(getattr(fl.FaceLandmarker, "detect_for_video", None))
        )
    except (ImportError, AttributeError, IndexError, TypeError) as exc:
        logger.debug("reading MediaPipe results through its public API (%s)", exc)
        return None
    return _RawVideoApi(result_type, size // 4, x.offset // 4, y.offset // 4) if ok else None


def _detect_for_video_raw(
    api: _RawVideoApi, landmarker: Any, image: Any, ms: int, size: tuple[int, int]
) -> list[np.ndarray] | None:
    """Landmarks (pixels) of every face, as ``FaceLandmarker.detect_for_video`` finds them; None (nothing run)
    when this landmarker or image lacks the internals, so the caller can use the public call instead."""
    import ctypes

    lib, handle, image_ptr = (getattr(landmarker, "_lib", None), getattr(landmarker, "_handle", None),
                              getattr(image, "_image_ptr", None))
    detect = getattr(lib, "MpFaceLandmarkerDetectForVideo", None)
    close = getattr(lib, "MpFaceLandmarkerCloseResult", None)
    if handle is None or image_ptr is None or detect is None or close is None:
        return None
    result = api.result_type()
    detect(handle, image_ptr, None, ms, ctypes.byref(result))
    try:
        scale = np.array(size, np.float32)
        faces = []
        for i in range(result.face_landmarks_count):
            face = result.face_landmarks[i]
            floats = ctypes.cast(face.landmarks, ctypes.POINTER(ctypes.c_float))
            values = np.ctypeslib.as_array(floats, shape=(face.landmarks_count, api.floats))
            pts = values[:, [api.x, api.y]]  # a copy: the C memory is freed below
            pts *= scale
            faces.append(pts)
    finally:
        close(ctypes.byref(result))
    return faces


# ------------------------------------------------------------------------------------- finding faces


@dataclass(frozen=True)
class FoundFaces:
    """Every face one landmarker call found in one frame: landmarks in image pixels and, when asked for,
    blendshapes (one dict per face, else empty dicts). Owned arrays, so it may cross threads."""

    landmarks: tuple[np.ndarray, ...]
    blendshapes: tuple[dict[str, float], ...]
    size: tuple[int, int]  # width, height of the frame


class FaceFinder:
    """One MediaPipe Face Landmarker (VIDEO mode) for up to ``num_faces`` faces: frame → :class:`FoundFaces`.

    It keeps no track of its own beyond MediaPipe's; :class:`FaceTracker` picks and aligns the face it follows.
    Not thread-safe: one thread uses a finder (the pipeline's landmark workers each own one).
    """

    def __init__(self, options: FaceTrackerOptions, num_faces: int, *, model: Path | None = None) -> None:
        self.options = options
        self._mp = mp = mediapipe_module()
        vision = mp.tasks.vision
        mp_options = vision.FaceLandmarkerOptions(
            base_options=mp.tasks.BaseOptions(
                model_asset_path=str(model if model is not None else resolve_face_model(options.model_path))),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=num_faces,
            min_face_detection_confidence=options.min_detection_confidence,
            min_face_presence_confidence=options.min_presence_confidence,
            min_tracking_confidence=options.min_tracking_confidence,
            output_face_blendshapes=options.blendshapes,
        )
        self._landmarker: Any = vision.FaceLandmarker.create_from_options(mp_options)
        # landmarks read straight from MediaPipe's C result (blendshapes come through the public call)
        self._raw = None if options.blendshapes else _raw_video_api()
        self._rgb: np.ndarray | None = None  # reused colour-conversion buffer of find_bgr

    def find(self, rgb: np.ndarray, ms: int) -> FoundFaces:
        """The faces in one RGB frame with timestamp ``ms`` (strictly increasing from call to call)."""
        if self._landmarker is None:
            raise RuntimeError("FaceFinder is closed")
        size = (rgb.shape[1], rgb.shape[0])
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        faces = None if self._raw is None else _detect_for_video_raw(self._raw, self._landmarker, image, ms, size)
        if faces is not None:
            return FoundFaces(tuple(faces), ({},) * len(faces), size)
        result = self._landmarker.detect_for_video(image, ms)
        landmarks = tuple(landmarks_px(f, size[0], size[1]) for f in result.face_landmarks)
        blendshapes: tuple[dict[str, float], ...] = ({},) * len(landmarks)
        if self.options.blendshapes:
            blendshapes = tuple({c.category_name: float(c.score) for c in result.face_blendshapes[i]}
                                if i < len(result.face_blendshapes) else {} for i in range(len(landmarks)))
        return FoundFaces(landmarks, blendshapes, size)

    def find_bgr(self, frame_bgr: np.ndarray, ms: int) -> FoundFaces:
        """:meth:`find` on a BGR / BGRA / gray frame, converted into this finder's own buffer."""
        self._rgb = rgb = to_rgb(frame_bgr, self._rgb)
        return self.find(rgb, ms)

    def close(self) -> None:
        """Release the MediaPipe landmarker; safe to call twice."""
        landmarker, self._landmarker = self._landmarker, None
        if landmarker is not None:
            landmarker.close()

    def __enter__(self) -> FaceFinder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- tracking


# landmark_every > 1: interior points that move with the skull, not with expressions (eye corners, nose,
# forehead, cheekbones), followed by pyramidal Lucas-Kanade between landmark frames.
RIGID_POINTS = (
    33,
    133,
    362,
    263,
    1,
    4,
    5,
    6,
    168,
    197,
    195,
    98,
    327,
    10,
    151,
    9,
    8,
    107,
    336,
    50,
    280,
    116,
    345,
)
_LK_PARAMS: dict[str, Any] = {
    "winSize": (21, 21),
    "maxLevel": 3,
    "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03),
}
_LK_MAX_ERROR = 25.0  # mean absolute grey difference in the window: higher = the point was lost
_FOLLOW_MIN_POINTS = 0.6  # fraction of RIGID_POINTS that must agree, else run the landmarker
_FOLLOW_RANSAC_PX = 2.0
# Handing a face over to the one-face landmarker: the frame is grey beyond this many face widths around it,
# so the landmarker's own detector finds that face and no other. Its landmark crop (about 1.5 face boxes)
# stays inside the visible part.
_HANDOVER_MARGIN = 0.6
_HANDOVER_MAX_WAIT = 32  # a failed handover is tried again after 1, 2, 4, ... landmark frames, at most this many
# landmark_every="auto": landmark frames timed (after the warm-up calls) before N is chosen
_AUTO_WARMUP = 3
_AUTO_PROVISIONAL = 3  # N set for the first time after this many; final after _AUTO_SAMPLES
_AUTO_SAMPLES = 12


def choose_landmark_every(
    landmark_ms: float, fps: float, *, follow_ms: float = 0.0, headroom: float = 0.5, max_every: int = 10
) -> int:
    """N for ``landmark_every="auto"``: the smallest N for which one MediaPipe frame and N − 1 followed
    frames fit, on average, in ``headroom`` of the frame interval, i.e.
    ``(landmark_ms + (N − 1) · follow_ms) / N <= headroom · 1000 / fps``; at most ``max_every`` (also when
    even the followed frames alone do not fit). ``landmark_ms`` and ``follow_ms`` are the face stage's
    cost of a frame with and without MediaPipe."""
    if not (math.isfinite(fps) and fps > 0) or max_every < 1:
        raise ValueError(f"need fps > 0 and max_every >= 1, got fps={fps}, max_every={max_every}")
    budget = headroom * 1000.0 / fps
    if landmark_ms <= budget:
        return 1
    if follow_ms >= budget:
        return max_every
    return max(1, min(max_every, math.ceil((landmark_ms - follow_ms) / (budget - follow_ms))))


@dataclass(frozen=True)
class FaceTrackerOptions:
    """Settings of a :class:`FaceTracker`. Distances are fractions of the face width; times are seconds."""

    model_path: str | Path | None = None
    crop_size: int = DEFAULT_CROP_SIZE
    color: bool = False  # also produce the BGR crop
    blendshapes: bool = False
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    max_faces: int = 3  # faces MediaPipe looks for when acquiring a face; the tracker keeps one
    # follow the acquired face with a one-face landmarker (faster; see FaceTracker: off until the spotter is
    # measured with its landmarks)
    follow_one_face: bool = False
    max_shift: float = 0.5  # largest move of the face centre between two sightings, × face width
    reacquire_after: float = 0.5  # tracked face gone this long → take the largest face again
    # run MediaPipe on every Nth frame and follow the head by optical flow between; "auto": N chosen from
    # the measured cost of both kinds of frame and the frame rate of the timestamps (choose_landmark_every)
    landmark_every: int | Literal["auto"] = 1
    auto_headroom: float = 0.5  # "auto": the face stage may use this fraction of the frame interval ...
    auto_max_every: int = 10  # ... with N at most this

    def __post_init__(self) -> None:
        if self.crop_size < 8:
            raise ValueError(f"crop_size must be at least 8 pixels, got {self.crop_size}")
        if not 1 <= self.max_faces <= 20:
            raise ValueError(f"max_faces must be 1..20, got {self.max_faces}")
        for name in ("min_detection_confidence", "min_tracking_confidence", "min_presence_confidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.landmark_every != "auto" and (
            isinstance(self.landmark_every, bool) or not isinstance(self.landmark_every, int) or self.landmark_every < 1
        ):
            raise ValueError(f"landmark_every must be 'auto' or an integer >= 1, got {self.landmark_every!r}")
        if not 0 < self.auto_headroom <= 1 or self.auto_max_every < 1:
            raise ValueError("auto_headroom must be in (0, 1] and auto_max_every >= 1")
        if self.max_shift <= 0 or self.reacquire_after < 0:
            raise ValueError("max_shift must be > 0 and reacquire_after >= 0")


@dataclass(frozen=True)
class TrackedFace:
    """One tracked face in one frame. Arrays are owned by this object (never reused by the tracker),
    so it may be handed to another thread while the tracker goes on with the next frame."""

    landmarks: np.ndarray  # (478, 2) float32, image pixels
    anchors: np.ndarray  # (3, 2) image pixels: image-left eye, image-right eye, nose tip
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 of the landmarks, image pixels
    crop: np.ndarray  # (crop_size, crop_size) uint8 gray, aligned
    crop_bgr: np.ndarray | None  # (crop_size, crop_size, 3) uint8 when options.color
    crop_landmarks: np.ndarray  # (478, 2) crop pixels
    matrix: np.ndarray  # 2×3 image → crop
    blendshapes: dict[str, float] = field(default_factory=dict)
    landmarked: bool = True  # False: landmarks carried from the last MediaPipe frame by optical flow


class FaceTracker:
    """Follows one face through a video (MediaPipe VIDEO mode, synchronous) and aligns it per frame.

    With several faces in view it keeps the one it is tracking: the largest at the start, then the one
    whose centre is nearest the previous one (within ``max_shift`` face widths). When that face is gone
    ``process`` returns None; after ``reacquire_after`` seconds the largest visible face is taken again.
    Frames may change size at any time: the landmarker works in normalised coordinates and needs no
    re-creation (checked with mediapipe 1.2.2); the tracker rescales its last box. One thread at a time uses a
    tracker: the analyser's, or, in the live pipeline, the first landmark worker, to which the tracker's own
    landmarker is lent while the workers run (nothing else calls it meanwhile). With the default settings each
    frame's landmarks depend on that frame alone (:attr:`frames_independent`), so the pipeline finds the faces
    of consecutive frames with several landmarkers at once and hands them to :meth:`accept` in order
    (:mod:`realtime.face_workers`). MediaPipe is almost all of a frame's cost (``mer-bench`` measures it).

    One MediaPipe landmarker looks for ``max_faces`` faces on every frame. In VIDEO mode MediaPipe runs its
    face detector on every frame while it tracks fewer faces than it was asked for, so with ``num_faces=3``
    it runs the detector on every frame of a one-face video (``num_faces`` is fixed when a landmarker is
    created, mediapipe 1.2.3). ``follow_one_face`` adds a one-face landmarker
    that follows the face once acquired: it takes over on a frame greyed out beyond the acquired face, so its
    own detector can pick no other face; if it loses the face or finds another one, the acquiring landmarker
    looks at the same frame. It is faster, but its landmarks come from MediaPipe's own tracking rather than a
    fresh detection, which moves them differently from frame to frame: on the talking real video the spotter
    (tuned with per-frame detection) then reported 4 false micro events instead of 2. Off by default until
    the spotter is measured with it (``mer-bench real``).

    ``landmark_every`` N > 1 runs MediaPipe on every Nth frame only and, in between, moves the last
    landmarks by the head's similarity motion (Lucas-Kanade on rigid points, far cheaper): alignment stays
    within ~0.2 px of per-frame landmarks, but eyelid/mouth landmarks and blendshapes are those of the
    last MediaPipe frame (``TrackedFace.landmarked`` says which). Untrustworthy flow → MediaPipe at once.
    ``landmark_every="auto"`` times the frames of each kind as they come (MediaPipe on every frame at first,
    on every Nth with a provisional N after a few) and settles N with :func:`choose_landmark_every` for the
    frame rate of the timestamps it is given (the source's); :attr:`landmark_every` says which, once settled.
    """

    def __init__(self, options: FaceTrackerOptions | None = None) -> None:
        self.options = options if options is not None else FaceTrackerOptions()
        self._model = model = resolve_face_model(self.options.model_path)
        # acquisition: up to max_faces; tracking: one face (the same landmarker when max_faces is 1)
        self._landmarker: FaceFinder | None = FaceFinder(self.options, self.options.max_faces, model=model)
        self._tracking: FaceFinder | None = self._landmarker
        if self.options.max_faces > 1 and self.options.follow_one_face:
            try:
                self._tracking = FaceFinder(self.options, 1, model=model)
            except BaseException:
                self._landmarker.close()
                raise
        every = self.options.landmark_every
        self._every = 1 if every == "auto" else every  # N in use
        self._auto = every == "auto"  # still timing frames to choose N
        self._auto_landmark_ms: list[float] = []
        self._auto_follow_ms: list[float] = []
        self._auto_dt: list[float] = []
        self._auto_last_t: float | None = None
        self._auto_seen = 0  # frames with a face seen while timing (the first few warm up)
        self.auto_figures: dict[str, float] = {}  # "auto": what N was chosen from (ms, fps)
        self._rgb: np.ndarray | None = None  # reused colour-conversion buffer
        self._handover_rgb: np.ndarray | None = None  # reused buffer for the greyed-out handover frame
        self._warp: np.ndarray | None = None  # reused BGR crop buffer
        self._gray_prev: np.ndarray | None = None  # landmark_every > 1: this and the previous gray frame
        self._gray_spare: np.ndarray | None = None
        self._last_ms: int | None = None
        self._offset_ms = 0
        self.reset()

    @classmethod
    def create_from_options(cls, options: FaceTrackerOptions) -> FaceTracker:
        return cls(options)

    @property
    def landmark_every(self) -> int | None:
        """N in use: MediaPipe on every Nth frame; None while ``landmark_every="auto"`` is still timing."""
        return None if self._auto else self._every

    @property
    def frames_independent(self) -> bool:
        """Whether each frame's landmarks depend on that frame alone, so that several :class:`FaceFinder` s
        may find the faces of different frames at once (:class:`realtime.face_workers.FaceWorkers`) and
        :meth:`accept` give what :meth:`process` would. True with landmarks on every frame from the
        several-face landmarker (the default): MediaPipe then runs its detector on every frame and keeps the
        detector's box over its own tracked one. The landmarks come out bit-identical (checked on both real
        videos). With one face asked for, MediaPipe tracks the face from frame to frame and smooths it.
        ``landmark_every="auto"`` becomes independent once it has settled on every frame."""
        return (self.options.max_faces > 1 and not self.options.follow_one_face
                and not self._auto and self._every == 1)

    @property
    def finder(self) -> FaceFinder:
        """The several-face landmarker this tracker runs (lent to a landmark worker while :meth:`accept` is used)."""
        if self._landmarker is None:
            raise RuntimeError("FaceTracker is closed")
        return self._landmarker

    def new_finder(self) -> FaceFinder:
        """Another landmarker like the one this tracker uses (for a landmark worker; the caller closes it)."""
        return FaceFinder(self.options, self.options.max_faces, model=self._model)

    def accept(self, frame_bgr: np.ndarray, t: float, found: FoundFaces) -> TrackedFace | None:
        """The tracked face in ``frame_bgr``, from the faces another finder found in it (:meth:`new_finder`,
        timestamps from :meth:`timestamp_ms`), picked and aligned as :meth:`process` would; frames in order.
        Only when :attr:`frames_independent`."""
        if self._landmarker is None:
            raise RuntimeError("FaceTracker is closed")
        if not self.frames_independent:
            raise RuntimeError("accept() needs a tracker whose frames are independent (see frames_independent)")
        frame = np.ascontiguousarray(frame_bgr)
        chosen = self._choose(found, t)
        self._seen_last = chosen is not None
        if chosen is None:
            return None
        landmarks, box, blendshapes = chosen
        return self._align(frame, landmarks, box, blendshapes, landmarked=True)

    def reset(self) -> None:
        """Forget the tracked face (e.g. a new source or a seek); the next face seen is taken afresh.

        The MediaPipe landmarker is kept: timestamps keep increasing even if ``t`` restarts.
        """
        self._box: tuple[float, float, float, float] | None = None
        self._box_size: tuple[int, int] | None = None
        self._last_seen: float | None = None
        self._prev_landmarks: np.ndarray | None = None  # last tracked landmarks, for landmark_every > 1
        self._prev_blendshapes: dict[str, float] = {}
        self._since_landmarks = 0
        self._seen_last = False  # the last landmark frame found the tracked face
        self._handed_over = False  # the one-face landmarker follows the tracked face
        self._handover_wait = 0  # landmark frames to skip before the next handover attempt ...
        self._handover_backoff = 1  # ... after a failed one (doubles up to _HANDOVER_MAX_WAIT)

    def timestamp_ms(self, t: float) -> int:
        """MediaPipe's timestamp for the frame at ``t`` seconds, strictly increasing from call to call (what
        :meth:`process` uses; :class:`realtime.face_workers.FaceWorkers` takes it for the frames it hands out)."""
        if not math.isfinite(t):
            raise ValueError(f"frame time must be finite, got {t}")
        ms = int(round(t * 1000.0)) + self._offset_ms
        if self._last_ms is not None and ms <= self._last_ms:
            # t repeated or went back (two frames within a millisecond, a restarted file): MediaPipe
            # demands strictly increasing timestamps, so shift this and later frames just past the last.
            self._offset_ms += self._last_ms + 1 - ms
            ms = self._last_ms + 1
        self._last_ms = ms
        return ms

    def _pick(
        self, boxes: list[tuple[float, float, float, float]], t: float, size: tuple[int, int]
    ) -> int | None:
        """Index of the tracked face among ``boxes``, or None when it is not there."""
        prev = self._box
        if prev is not None and self._box_size is not None and self._box_size != size:
            sx, sy = size[0] / self._box_size[0], size[1] / self._box_size[1]
            prev = (prev[0] * sx, prev[1] * sy, prev[2] * sx, prev[3] * sy)
        if (
            prev is not None
            and self._last_seen is not None
            and t - self._last_seen > self.options.reacquire_after
        ):
            prev = None  # gone too long: start again from the largest face
        if prev is None:
            return max(range(len(boxes)), key=lambda i: area(boxes[i])) if boxes else None
        pcx, pcy = (prev[0] + prev[2]) / 2, (prev[1] + prev[3]) / 2
        width = max(prev[2] - prev[0], 1.0)
        best, best_d = None, self.options.max_shift * width
        for i, b in enumerate(boxes):
            d = math.hypot((b[0] + b[2]) / 2 - pcx, (b[1] + b[3]) / 2 - pcy)
            if d <= best_d:
                best, best_d = i, d
        return best

    def process(self, frame_bgr: np.ndarray, t: float) -> TrackedFace | None:
        """Landmarks and aligned crop of the tracked face in this frame (``t`` in seconds), or None."""
        if self._landmarker is None:
            raise RuntimeError("FaceTracker is closed")
        frame = np.ascontiguousarray(frame_bgr)
        check_image(frame)
        ms = self.timestamp_ms(t)
        if self._auto:
            return self._process_timed(frame, t, ms)
        return self._process(frame, t, ms)

    def _process(self, frame: np.ndarray, t: float, ms: int) -> TrackedFace | None:
        height, width = frame.shape[:2]
        every = self._every
        if every > 1:
            gray = self._gray_into(frame)
            previous = self._gray_prev
            self._gray_prev, self._gray_spare = gray, previous  # rotate: next frame writes over the old one
            if self._prev_landmarks is not None and self._since_landmarks < every:
                followed = self._follow(previous, gray)
                if followed is not None:
                    self._since_landmarks += 1
                    box = bbox(followed)
                    self._box, self._box_size, self._last_seen = box, (width, height), t
                    self._prev_landmarks = followed
                    return self._align(frame, followed, box, self._prev_blendshapes, landmarked=False)
        found = self._landmarks(frame, t, ms)
        if found is None:
            self._prev_landmarks = None
            return None
        landmarks, box, blendshapes = found
        if every > 1:
            self._prev_landmarks, self._prev_blendshapes, self._since_landmarks = landmarks, blendshapes, 1
        return self._align(frame, landmarks, box, blendshapes, landmarked=True)

    def _landmarks(self, frame: np.ndarray, t: float, ms: int) -> _Chosen | None:
        """The tracked face by MediaPipe: the one-face landmarker while it follows the face (handed over on a
        frame greyed out around it), else the acquiring landmarker, on the same frame when the other failed."""
        size = (frame.shape[1], frame.shape[0])
        self._rgb = rgb = to_rgb(frame, self._rgb)
        found = None
        if (
            self._tracking is not None
            and self._tracking is not self._landmarker
            and self._seen_last
            and self._box_size == size
            and self._last_seen is not None
            and t - self._last_seen <= self.options.reacquire_after
        ):
            if self._handed_over:
                found = self._detect(self._tracking, rgb, ms, t)
                self._handed_over = found is not None
            elif self._handover_wait > 0:
                self._handover_wait -= 1
            else:
                found = self._detect(self._tracking, self._greyed_around_face(rgb), ms, t)
                self._handed_over = found is not None
                if found is None:  # e.g. another face inside the margin: try again later, less often
                    self._handover_wait = self._handover_backoff
                    self._handover_backoff = min(2 * self._handover_backoff, _HANDOVER_MAX_WAIT)
                else:
                    self._handover_backoff = 1
        if found is None:
            assert self._landmarker is not None
            found = self._detect(self._landmarker, rgb, ms, t)
        self._seen_last = found is not None
        return found

    def _detect(self, finder: FaceFinder, rgb: np.ndarray, ms: int, t: float) -> _Chosen | None:
        """Run one landmarker on one frame; the tracked face among its faces (see :meth:`_choose`), or None."""
        return self._choose(finder.find(rgb, ms), t)

    def _choose(self, found: FoundFaces, t: float) -> _Chosen | None:
        """The tracked face among ``found`` (see :meth:`_pick`), remembered as the one last seen; or None."""
        boxes = [bbox(f) for f in found.landmarks]
        index = self._pick(boxes, t, found.size)
        if index is None:
            return None
        self._box, self._box_size, self._last_seen = boxes[index], found.size, t
        return found.landmarks[index], boxes[index], found.blendshapes[index]

    def _greyed_around_face(self, rgb: np.ndarray) -> np.ndarray:
        """This frame, grey beyond ``_HANDOVER_MARGIN`` face widths around the tracked face's last box."""
        assert self._box is not None
        x0, y0, x1, y1 = self._box
        margin = _HANDOVER_MARGIN * max(x1 - x0, y1 - y0)
        height, width = rgb.shape[:2]
        left, right = max(0, int(x0 - margin)), min(width, math.ceil(x1 + margin))
        top, bottom = max(0, int(y0 - margin)), min(height, math.ceil(y1 + margin))
        out = self._handover_rgb
        if out is None or out.shape != rgb.shape:
            out = self._handover_rgb = np.empty_like(rgb)
        out.fill(PAD_VALUE)
        out[top:bottom, left:right] = rgb[top:bottom, left:right]
        return out

    def _process_timed(self, frame: np.ndarray, t: float, ms: int) -> TrackedFace | None:
        """``landmark_every="auto"`` before N is final: every frame is timed by kind (MediaPipe or followed).
        N starts at 1 and is set after a few MediaPipe frames (so a fast camera is not left behind while
        timing), then again, for good, after ``_AUTO_SAMPLES`` of them."""
        t0 = time.perf_counter()
        face = self._process(frame, t, ms)
        spent = (time.perf_counter() - t0) * 1e3
        if self._auto_last_t is not None and t > self._auto_last_t:
            self._auto_dt.append(t - self._auto_last_t)
        self._auto_last_t = t
        if face is None:
            return None
        if not face.landmarked:
            self._auto_follow_ms.append(spent)
            return face
        self._auto_seen += 1
        if self._auto_seen <= _AUTO_WARMUP:  # first calls of each landmarker, the acquisition: slower
            return face
        self._auto_landmark_ms.append(spent)
        n = len(self._auto_landmark_ms)
        final = n >= _AUTO_SAMPLES and (self._every == 1 or len(self._auto_follow_ms) >= _AUTO_SAMPLES // 2)
        if n >= _AUTO_PROVISIONAL or final:
            self._choose_every(final=final)
        return face

    def _choose_every(self, *, final: bool) -> None:
        landmark_ms = float(np.median(self._auto_landmark_ms))
        # no followed frame yet: a tenth of a MediaPipe frame (0.9 against 8.5 ms on the development machine)
        follow_ms = float(np.median(self._auto_follow_ms)) if self._auto_follow_ms else 0.1 * landmark_ms
        # a low percentile of the frame intervals: frames dropped while timing do not lower the rate
        fps = 1.0 / float(np.percentile(self._auto_dt, 20)) if self._auto_dt else 30.0
        opts = self.options
        self._every = choose_landmark_every(landmark_ms, fps, follow_ms=follow_ms, headroom=opts.auto_headroom,
                                            max_every=opts.auto_max_every)
        if not final:
            return
        self._auto = False
        self.auto_figures = {"landmark_ms": round(landmark_ms, 3), "follow_ms": round(follow_ms, 3),
                             "fps": round(fps, 3)}
        logger.info("landmark_every auto: N = %d (MediaPipe frame %.1f ms, followed frame %.1f ms, %.0f fps, "
                    "headroom %.0f %%)", self._every, landmark_ms, follow_ms, fps, 100 * opts.auto_headroom)

    def _gray_into(self, frame: np.ndarray) -> np.ndarray:
        """This frame in gray, written into the spare buffer (the other buffer holds the previous frame)."""
        spare = self._gray_spare
        if spare is None or spare.shape != frame.shape[:2]:
            spare = np.empty(frame.shape[:2], np.uint8)
        if frame.ndim == 2:
            np.copyto(spare, frame)
        else:
            code = cv2.COLOR_BGR2GRAY if frame.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
            cv2.cvtColor(frame, code, dst=spare)
        return spare

    def _follow(self, previous: np.ndarray | None, gray: np.ndarray) -> np.ndarray | None:
        """Carry the last landmarks to this frame by the head's similarity motion (sparse optical flow on
        rigid points, RANSAC fit); None when the flow is not trustworthy (face gone, cut, size change)."""
        landmarks = self._prev_landmarks
        if previous is None or landmarks is None or previous.shape != gray.shape:
            return None
        p0 = landmarks[list(RIGID_POINTS)].reshape(-1, 1, 2).astype(np.float32)
        p1, status, err = cv2.calcOpticalFlowPyrLK(previous, gray, p0, None, **_LK_PARAMS)
        if p1 is None:
            return None
        good = (status.ravel() == 1) & (err.ravel() < _LK_MAX_ERROR)
        if good.sum() < _FOLLOW_MIN_POINTS * len(RIGID_POINTS):
            return None
        matrix, inliers = cv2.estimateAffinePartial2D(
            p0[good], p1[good], method=cv2.RANSAC, ransacReprojThreshold=_FOLLOW_RANSAC_PX
        )
        if matrix is None or inliers is None or inliers.sum() < _FOLLOW_MIN_POINTS * len(RIGID_POINTS):
            return None
        scale = math.hypot(matrix[0, 0], matrix[1, 0])
        if not 0.8 < scale < 1.25:
            return None
        return transform_points(matrix, landmarks).astype(np.float32)

    def _align(
        self,
        frame: np.ndarray,
        landmarks: np.ndarray,
        box: tuple[float, float, float, float],
        blendshapes: dict[str, float],
        *,
        landmarked: bool,
    ) -> TrackedFace:
        cs = self.options.crop_size
        anchors = anchors_from_landmarks(landmarks)
        shape = (cs, cs) if frame.ndim == 2 else (cs, cs, frame.shape[2])
        if self._warp is None or self._warp.shape != shape:
            self._warp = np.empty(shape, np.uint8)
        aligned = align_face(frame, anchors, crop_size=cs, landmarks=landmarks, out=self._warp)
        warped = aligned.crop
        # The gray crop and the BGR copy are fresh arrays (16 KB / 48 KB at 128 px): a TrackedFace crosses
        # threads, so it must not alias the warp buffer that the next frame overwrites.
        if warped.ndim == 2:
            crop = warped.copy()
            crop_bgr = cv2.cvtColor(warped, cv2.COLOR_GRAY2BGR) if self.options.color else None
        else:
            code = cv2.COLOR_BGR2GRAY if warped.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
            crop = cv2.cvtColor(warped, code)
            if not self.options.color:
                crop_bgr = None
            elif warped.shape[2] == 3:
                crop_bgr = warped.copy()
            else:
                crop_bgr = cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR)
        return TrackedFace(
            landmarks=landmarks,
            anchors=anchors,
            bbox=box,
            crop=crop,
            crop_bgr=crop_bgr,
            crop_landmarks=aligned.landmarks.astype(np.float32),
            matrix=aligned.matrix,
            blendshapes=dict(blendshapes),
            landmarked=landmarked,
        )

    @property
    def closed(self) -> bool:
        return self._landmarker is None

    def close(self) -> None:
        """Release the MediaPipe landmarkers; safe to call twice."""
        landmarker, self._landmarker = self._landmarker, None
        tracking, self._tracking = self._tracking, None
        if tracking is not None and tracking is not landmarker:
            tracking.close()
        if landmarker is not None:
            landmarker.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
