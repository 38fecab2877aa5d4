"""Every face in a still image (synthetic generator identities, dataset readers' onset alignment): the
MediaPipe landmarker in IMAGE mode over the whole image, overlapping tiles, and a refinement window per face.
Training alone uses it; live tracking is :class:`realtime.face.FaceTracker`.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from realtime.face_model import resolve_face_model
from realtime.landmarks import PAD_VALUE, Box, area, bbox, landmarks_px, mediapipe_module, to_rgb


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


# The short-range face detector inside the landmarker sees the image shrunk to 128 px, so it misses faces
# narrower than roughly 12 % of the image's long side, and places the landmarks of faces it barely finds
# tens of pixels off. detect_faces therefore (1) also searches overlapping square tiles (a face is reliably
# found in a tile it fills 15-48 % of) and (2) re-runs the landmarker on a square window around each face
# found, 3 face widths wide, so every face's landmarks come from the same framing whatever pass found it.
_TILE_RELIABLE = 0.15


_TILE_EDGE_MARGIN = 0.01  # a tile detection touching an inner tile edge is a cut-off face: drop it


_DUPLICATE_IOU = 0.3


_REFINE_CONTEXT = 3.0  # refinement window side, × face size


_image_lock = threading.Lock()


_image_landmarkers: dict[str, Any] = {}



def _image_landmarker(model: Path) -> Any:
    key = str(model.resolve())
    lm = _image_landmarkers.get(key)
    if lm is None:
        mp = mediapipe_module()
        vision = mp.tasks.vision
        options = vision.FaceLandmarkerOptions(
            base_options=mp.tasks.BaseOptions(model_asset_path=key),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=10,
        )
        lm = vision.FaceLandmarker.create_from_options(options)
        _image_landmarkers[key] = lm
    return lm


def _tile_origins(length: int, side: int) -> list[int]:
    if length <= side:
        return [0]
    n = math.ceil((length - side) / (side / 2)) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - side, n)})


def _window(rgb: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """rgb[y0:y0+h, x0:x0+w] as a contiguous array, padded with grey where it leaves the image."""
    height, width = rgb.shape[:2]
    if x0 == 0 and y0 == 0 and (w, h) == (width, height):
        return rgb
    if x0 >= 0 and y0 >= 0 and x0 + w <= width and y0 + h <= height:
        return np.ascontiguousarray(rgb[y0 : y0 + h, x0 : x0 + w])
    out = np.full((h, w, 3), PAD_VALUE, np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + w, width), min(y0 + h, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return out


def _dedupe(faces: list[np.ndarray]) -> list[np.ndarray]:
    """Drop every face that overlaps (IoU or centre inside) one earlier in the list."""
    kept: list[tuple[Box, np.ndarray]] = []
    for pts in faces:
        box = bbox(pts)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if not any(
            _iou(box, k) > _DUPLICATE_IOU or (k[0] <= cx <= k[2] and k[1] <= cy <= k[3]) for k, _ in kept
        ):
            kept.append((box, pts))
    return [pts for _, pts in kept]


def detect_faces(
    image_bgr: np.ndarray,
    *,
    model_path: str | Path | None = None,
    min_face_size: int | None = 80,
) -> list[np.ndarray]:
    """Every face in a still: (478, 2) float32 landmarks in image pixels each, largest face first.

    Runs the landmarker (IMAGE mode, up to 10 faces per pass) on the whole image and, unless
    ``min_face_size`` is None, on overlapping tiles small enough that faces down to about
    ``min_face_size`` pixels wide are found (group photos); then refines each face on a window around it.
    Takes 10-30 ms per pass on one CPU core (a 1000×667 group photo: 1 + 6 tiles + 5 refinements).
    """
    model = resolve_face_model(model_path)
    mp = mediapipe_module()
    rgb = to_rgb(image_bgr)
    height, width = rgb.shape[:2]
    with _image_lock:
        lm = _image_landmarker(model)

        def run(x0: int, y0: int, w: int, h: int) -> list[np.ndarray]:
            result = lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=_window(rgb, x0, y0, w, h)))
            return [landmarks_px(f, w, h) + np.array([x0, y0], np.float32) for f in result.face_landmarks]

        # candidates: (level, -edge margin, landmarks); lower sorts first = preferred among duplicates
        candidates: list[tuple[int, float, np.ndarray]] = [(0, 0.0, pts) for pts in run(0, 0, width, height)]
        reliable_from = _TILE_RELIABLE * max(width, height)  # smallest face width the last pass finds
        side = min(min(width, height), max(width, height) // 2)
        level = 1
        while min_face_size is not None and reliable_from > min_face_size and side >= 64:
            for y0 in _tile_origins(height, side):
                for x0 in _tile_origins(width, side):
                    for pts in run(x0, y0, side, side):
                        box = bbox(pts)
                        gaps = []
                        if x0 > 0:
                            gaps.append(box[0] - x0)
                        if y0 > 0:
                            gaps.append(box[1] - y0)
                        if x0 + side < width:
                            gaps.append(x0 + side - box[2])
                        if y0 + side < height:
                            gaps.append(y0 + side - box[3])
                        margin = min(gaps, default=float(side)) / side
                        if margin >= _TILE_EDGE_MARGIN:
                            candidates.append((level, -margin, pts))
            reliable_from = _TILE_RELIABLE * side
            side //= 2
            level += 1
        candidates.sort(key=lambda c: (c[0], c[1]))
        refined: list[np.ndarray] = []
        for pts in _dedupe([c[2] for c in candidates]):
            box = bbox(pts)
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            win = max(64, int(round(_REFINE_CONTEXT * max(box[2] - box[0], box[3] - box[1]))))
            x0, y0 = int(round(cx - win / 2)), int(round(cy - win / 2))
            found = run(x0, y0, win, win)
            if found:  # the face nearest the window centre is the one we came for
                best = min(found, key=lambda f: float(np.hypot(*(f.mean(axis=0) - (cx, cy)))))
                b = bbox(best)
                if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]:
                    pts = best
            refined.append(pts)
    faces = _dedupe(sorted(refined, key=lambda f: area(bbox(f)), reverse=True))
    return faces
