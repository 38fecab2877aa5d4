"""Clip frames for training: load, frame-rate match, align and grey a sample's onset..offset frames.

Alignment modes (``FrameOptions.alignment``):

- ``"none"``  — resize each frame to the crop (for data that is already an aligned or tight face crop,
  and for tests); no face model needed.
- ``"onset"`` — detect landmarks on the onset frame (``training.still_faces.detect_faces``) and align *every*
  frame with that one transform (``mer_core.alignment.align_face``): the head is still during an ME, and
  one transform adds no landmark jitter. This is what most ME papers do and the default with a face model.
- ``"each"``  — detect on every frame (the previous frame's anchors fill in when a frame has no face).

Samples marked ``aligned`` (the synthetic set) are already template crops and are only resized.
Frames are then converted to the card's channels (1 = grey, as live), and the motion intensity per frame
comes from ``mer_core.dynamic_image.motion_intensity`` — the same one the live DI builder uses — for MIDI and
for a missing apex (apex = intensity peak between onset and offset).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mer_core.alignment import align_face
from mer_core.dynamic_image import motion_intensity as intensity_of
from realtime.landmarks import anchors_from_landmarks
from training.datasets.base import Sample
from training.still_faces import detect_faces

__all__ = [
    "ALIGNMENT_MODES",
    "Clip",
    "FrameError",
    "FrameOptions",
    "estimate_apex",
    "load_clip",
    "motion_intensity",
    "resample_numbers",
]

log = logging.getLogger(__name__)

ALIGNMENT_MODES = ("none", "onset", "each")


class FrameError(RuntimeError):
    """A sample's frames cannot be turned into aligned crops (unreadable image, no face found)."""


@dataclass(frozen=True)
class FrameOptions:
    """How a sample's frames become crops. Sizes in pixels, rates in frames per second."""

    alignment: str = "none"  # "none" | "onset" | "each" (see module docstring)
    crop_size: int = 128  # aligned crop side (the model card's crop_size)
    channels: int = 1  # 1 = grey (as live), 3 = BGR
    target_fps: float | None = None  # resample faster clips to this rate (nearest frame by time)
    face_model: str | None = None  # MediaPipe face_landmarker.task for "onset"/"each"
    detect_padding: float = 0.3  # border (fraction of the side) added when a tight crop hides the face

    def __post_init__(self) -> None:
        if self.alignment not in ALIGNMENT_MODES:
            raise ValueError(f"alignment must be one of {ALIGNMENT_MODES}, got {self.alignment!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.crop_size < 8:
            raise ValueError(f"crop_size must be at least 8 pixels, got {self.crop_size}")
        if self.target_fps is not None and not self.target_fps > 0:
            raise ValueError(f"target_fps must be positive, got {self.target_fps}")


@dataclass(frozen=True)
class Clip:
    """Aligned crops of one sample's onset..offset window, with indices into ``frames``."""

    frames: np.ndarray  # (T, crop, crop) or (T, crop, crop, 3) uint8
    onset: int
    apex: int
    offset: int
    fps: float  # rate of ``frames`` after resampling
    apex_estimated: bool
    intensity: np.ndarray  # (T,) motion intensity per frame
    frame_numbers: tuple[int, ...]  # dataset frame numbers of ``frames``


def resample_numbers(
    numbers: tuple[int, ...] | list[int], onset: int, apex: int | None, offset: int, fps: float, target_fps: float | None
) -> tuple[list[int], int, int | None, int, float]:
    """Pick, for each tick of ``target_fps`` from onset to offset, the available frame nearest in time.

    Returns (selected frame numbers, onset index, apex index or None, offset index, effective fps). With no
    target, or a target not below ``fps``, every frame is kept (frames are never invented).
    """
    numbers = [n for n in sorted(numbers) if onset <= n <= offset]
    if not numbers:
        raise FrameError(f"no frames between onset {onset} and offset {offset}")

    def nearest(frame: float) -> int:
        arr = np.asarray(numbers)
        return int(arr[int(np.argmin(np.abs(arr - frame)))])

    if target_fps is None or target_fps >= fps:
        selected = numbers
        rate = fps
    else:
        step = fps / target_fps  # source frames per target tick
        ticks = int(round((offset - onset) / step))
        selected = []
        for k in range(ticks + 1):
            n = nearest(onset + k * step)
            if not selected or selected[-1] != n:
                selected.append(n)
        # the window ends on the offset frame (the last tick is within half a step of it)
        if selected[-1] != numbers[-1]:
            if len(selected) > 1:
                selected[-1] = numbers[-1]
            else:
                selected.append(numbers[-1])
        rate = target_fps
    apex_index = None
    if apex is not None:
        apex_index = int(np.argmin(np.abs(np.asarray(selected) - apex)))
    return selected, 0, apex_index, len(selected) - 1, float(rate)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameError(f"cannot read image {path}")
    return image


def _detect_anchors(image: np.ndarray, options: FrameOptions) -> np.ndarray | None:
    """Eye/eye/nose anchors (image pixels) of the largest face, trying a padded copy for tight crops."""
    # dataset frames are face crops or close-ups: one whole-image pass, no small-face tiling
    faces = detect_faces(image, model_path=options.face_model, min_face_size=None)
    if faces:
        return np.asarray(anchors_from_landmarks(faces[0]), dtype=np.float64)
    pad = int(round(options.detect_padding * max(image.shape[:2])))
    if pad > 0:
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        faces = detect_faces(padded, model_path=options.face_model, min_face_size=None)
        if faces:
            return np.asarray(anchors_from_landmarks(faces[0]), dtype=np.float64) - pad
    return None


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


def _align(images: list[np.ndarray], sample: Sample, onset_index: int, options: FrameOptions) -> list[np.ndarray]:
    size = options.crop_size
    if options.alignment == "none" or sample.aligned:
        return [
            img if img.shape[:2] == (size, size) else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            for img in images
        ]
    if options.alignment == "onset":
        anchors = _detect_anchors(images[onset_index], options)
        if anchors is None:
            raise FrameError(f"{sample.clip}: no face found on the onset frame")
        return [align_face(img, anchors, crop_size=size).crop for img in images]
    # "each": per-frame detection, previous anchors fill gaps, the first found fills leading gaps
    found = [_detect_anchors(img, options) for img in images]
    if all(a is None for a in found):
        raise FrameError(f"{sample.clip}: no face found on any frame")
    first = next(a for a in found if a is not None)
    crops, last = [], first
    for img, anchors in zip(images, found, strict=True):
        last = anchors if anchors is not None else last
        crops.append(align_face(img, last, crop_size=size).crop)
    return crops


def motion_intensity(crops: np.ndarray, fps: float) -> np.ndarray:
    """Per-frame motion intensity of a clip's aligned crops (clip starts at its onset): the one definition
    the live DI builder uses too (:func:`mer_core.dynamic_image.motion_intensity`). ``fps`` is unused: the
    measure is a difference to the onset frame, independent of the frame rate."""
    out = np.asarray(intensity_of(np.asarray(crops), 0), dtype=np.float64)
    return np.where(np.isfinite(out), out, 0.0)


def estimate_apex(intensity: np.ndarray, onset: int, offset: int) -> int:
    """Apex = motion-intensity peak strictly inside onset..offset when possible (first peak on ties)."""
    lo, hi = (onset + 1, offset - 1) if offset - onset >= 2 else (onset, offset)
    segment = np.asarray(intensity[lo : hi + 1], dtype=np.float64)
    if segment.size == 0 or not np.isfinite(segment).any():
        return (onset + offset) // 2
    return lo + int(np.nanargmax(segment))


def load_clip(sample: Sample, options: FrameOptions) -> Clip:
    """Aligned crops of ``sample``'s window, frame-rate matched, with intensity and (estimated) apex."""
    if not sample.frames:
        raise FrameError(f"{sample.clip}: no frame files")
    by_number = dict(zip(sample.frame_numbers, sample.frames, strict=True))
    numbers, onset, apex, offset, rate = resample_numbers(
        sample.frame_numbers, sample.onset, sample.apex, sample.offset, sample.fps, options.target_fps
    )
    images = [_read(by_number[n]) for n in numbers]
    crops = _align(images, sample, onset, options)
    frames = np.stack([_to_channels(c, options.channels) for c in crops])
    intensity = motion_intensity(frames, rate)
    estimated = apex is None
    if apex is None:
        apex = estimate_apex(intensity, onset, offset)
    return Clip(
        frames=frames,
        onset=onset,
        apex=int(apex),
        offset=offset,
        fps=rate,
        apex_estimated=estimated,
        intensity=intensity,
        frame_numbers=tuple(numbers),
    )
