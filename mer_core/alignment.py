"""Face alignment: the one similarity transform from eyes and nose to a canonical square crop.

Live tracking, the synthetic generator and the dataset readers all call :func:`align_face`, so a crop
means the same thing everywhere. Geometry is in fractions of the crop side, so any crop size works.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Canonical positions (x, y) as fractions of the crop side, image-left eye first.
CANONICAL_LEFT_EYE = (0.32, 0.38)
CANONICAL_RIGHT_EYE = (0.68, 0.38)
CANONICAL_NOSE_TIP = (0.50, 0.60)
CANONICAL_POINTS = np.array([CANONICAL_LEFT_EYE, CANONICAL_RIGHT_EYE, CANONICAL_NOSE_TIP], dtype=np.float64)

DEFAULT_CROP_SIZE = 128


def canonical_points(crop_size: int) -> np.ndarray:
    """The three anchor points in pixel coordinates of a ``crop_size`` square crop."""
    return CANONICAL_POINTS * float(crop_size)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src→dst.

    Returns a 2×3 float64 matrix for ``cv2.warpAffine``. ``src`` and ``dst`` are (N, 2), N ≥ 2.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need matching (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    denom = float((s**2).sum())
    if denom <= 1e-12:
        raise ValueError("source points coincide; cannot estimate a similarity transform")
    # x' = a x - b y + tx ; y' = b x + a y + ty, closed form.
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / denom
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / denom
    rot = np.array([[a, -b], [b, a]])
    t = dst_mean - rot @ src_mean
    return np.hstack([rot, t[:, None]])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


@dataclass(frozen=True)
class AlignedFace:
    """A face warped to the canonical crop. ``matrix`` maps image pixels → crop pixels."""

    crop: np.ndarray
    matrix: np.ndarray
    landmarks: np.ndarray  # (N, 2) in crop pixel coordinates


def align_face(
    image: np.ndarray,
    anchors: np.ndarray,
    *,
    crop_size: int = DEFAULT_CROP_SIZE,
    landmarks: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> AlignedFace:
    """Warp ``image`` so the anchors (left eye, right eye, nose tip; image pixels) land on the template.

    ``landmarks`` (any (N, 2) image-pixel points) are carried into crop coordinates; ``out`` may be a
    preallocated crop buffer to avoid a per-frame allocation.
    """
    matrix = similarity_transform(anchors, canonical_points(crop_size))
    dsize = (crop_size, crop_size)
    if out is not None:
        crop = cv2.warpAffine(image, matrix, dsize, dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    else:
        crop = cv2.warpAffine(image, matrix, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    pts = transform_points(matrix, landmarks) if landmarks is not None else transform_points(matrix, anchors)
    return AlignedFace(crop=crop, matrix=matrix, landmarks=pts)
