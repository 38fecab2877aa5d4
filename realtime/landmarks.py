"""The MediaPipe face mesh as the rest of mer-live sees it: landmark indices, alignment anchors, the lazy
``mediapipe`` import, images converted to what it takes, and landmark boxes. Shared by the face tracker
(:mod:`realtime.face`) and the still-image detector (:mod:`training.still_faces`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import cv2
import numpy as np

from mer_analysis.motion import (
    NUM_LANDMARKS,  # the face mesh's size, defined where the motion regions index it
)
from mer_core.paths import user_cache_dir

# MediaPipe face-mesh indices. "Right eye" is the subject's right eye, which is on the image left of an
# upright, unmirrored face; the landmark model names eyes by appearance, so this holds for mirrored
# (selfie) frames too.
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
RIGHT_IRIS = (468, 469, 470, 471, 472)
LEFT_IRIS = (473, 474, 475, 476, 477)
RIGHT_EYE_CORNERS = (33, 133)  # outer, inner
LEFT_EYE_CORNERS = (263, 362)  # outer, inner
NOSE_TIP = 1
Box = tuple[float, float, float, float]  # x0, y0, x1, y1

PAD_VALUE = 127  # grey around a face: image padding, and what the tracker's detector sees beyond the face


def anchors_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(478, 2) landmarks → (3, 2) alignment anchors: image-left eye centre, image-right eye centre, nose tip.

    An eye centre is the midpoint of the eye's two corners. Corners are fixed to the skull; the eyelid
    contour and the iris are not: on a blink in single_face.mp4 the contour+iris mean moved 3.5 px (eye
    opening 12 px) against 1.8 px for the corners, and the iris follows the gaze. Either would shift the
    whole aligned crop on every blink or glance, which the motion meter would then see as face motion.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] < NUM_LANDMARKS:
        raise ValueError(f"need the {NUM_LANDMARKS}-point MediaPipe face mesh, got {pts.shape[0]} points")
    right = pts[list(RIGHT_EYE_CORNERS)].mean(axis=0)
    left = pts[list(LEFT_EYE_CORNERS)].mean(axis=0)
    return np.stack([right, left, pts[NOSE_TIP]])


def mediapipe_module() -> Any:
    """Import mediapipe on first use (it is slow to import and most callers never need it).

    mediapipe imports matplotlib, which creates ``~/.config/matplotlib`` and a font cache in
    ``~/.cache/matplotlib``; unless the user chose a place (``MPLCONFIGDIR``) or matplotlib is loaded already,
    both go into the mer-live user cache, the one place we write besides the paths a user names.
    """
    if "matplotlib" not in sys.modules and not os.environ.get("MPLCONFIGDIR"):
        os.environ["MPLCONFIGDIR"] = str(user_cache_dir() / "matplotlib")
    import mediapipe as mp

    return mp


def check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(f"expected an H×W gray, H×W×3 BGR or H×W×4 BGRA image, got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image too small: {image.shape}")


def to_rgb(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """BGR / BGRA / gray uint8 → contiguous RGB uint8 (into ``out`` when its shape fits)."""
    image = np.asarray(image)
    check_image(image)
    if image.ndim == 2:
        code = cv2.COLOR_GRAY2RGB
    elif image.shape[2] == 3:
        code = cv2.COLOR_BGR2RGB
    else:
        code = cv2.COLOR_BGRA2RGB
    if out is not None and out.shape == (*image.shape[:2], 3):
        return cv2.cvtColor(image, code, dst=out)
    return cv2.cvtColor(image, code)


def landmarks_px(face: Any, width: int, height: int) -> np.ndarray:
    pts = np.array([(p.x, p.y) for p in face], dtype=np.float32)
    pts *= np.array([width, height], dtype=np.float32)
    return pts


def bbox(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    lo = landmarks.min(axis=0)
    hi = landmarks.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def area(box: tuple[float, float, float, float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])

