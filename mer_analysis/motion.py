"""Facial motion per frame: optical flow in landmark-anchored regions, with the head's own motion removed.

For each aligned face crop the meter measures how far the skin moved since the crop of about ``lag_s``
earlier, at the crop's full resolution (a 2-px brow raise must not be averaged away by downsampling): in a
small box around each landmark group — inner and outer brows, upper and lower eyelids, cheeks, nose wings, lip
corners, lips, chin, glabella — one Lucas-Kanade translation (the box's image gradients against its change,
offset-free, lightly regularised so a featureless box reads as still rather than as noise). The head's
residual motion is removed: an affine field fitted robustly to the same estimate at rigid points (nose ridge,
eye corners, forehead, temples), none of which an expression moves much; the earlier crop is then moved by
that field and the boxes are measured once more, so a head that turned a little does not bias the small
movements. What is left is, per region, how far the skin moved over the last ``lag_s`` relative to the skull,
in units of the inter-ocular distance (IOD), so the figures mean the same at any face size.

Box Lucas-Kanade rather than dense optical flow: on these 2-6 px wide, 1-2 px deep movements DIS at half
resolution (the affordable setting) measured a quarter to a half of the movement and blurred neighbouring
regions together; at full resolution it cost 3-5 ms a frame. The boxes are summed from integral images, so the
cost does not depend on the box size.

The meter measures; it does not decide. :class:`mer_analysis.spotting.Spotter` turns the displacements into
windows. :meth:`MotionMeter.displacement` measures any two held crops the same way, so the spotter can check
a candidate's rise and return directly. Cost: two passes of blur, gradients and integral images over a
128-px crop, about 1 ms per frame on one CPU core; no allocation grows with the stream.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from mer_core.alignment import CANONICAL_LEFT_EYE, CANONICAL_RIGHT_EYE

log = logging.getLogger(__name__)

__all__ = [
    "NUM_LANDMARKS",
    "REGIONS",
    "REGION_NAMES",
    "RIGID_POINTS",
    "MotionError",
    "MotionMeter",
    "MotionOptions",
    "MotionSample",
    "eye_opening",
]

# Landmark groups (MediaPipe face mesh) whose skin an expression moves; "_l" / "_r" = image left / right.
REGIONS: dict[str, tuple[int, ...]] = {
    "brow_inner_l": (55, 65, 107, 66),
    "brow_inner_r": (285, 295, 336, 296),
    "brow_outer_l": (46, 53, 70, 63),
    "brow_outer_r": (276, 283, 300, 293),
    "lid_upper_l": (160, 159, 158),
    "lid_upper_r": (387, 386, 385),
    "lid_lower_l": (144, 145, 153),
    "lid_lower_r": (373, 374, 380),
    "cheek_l": (117, 50, 123),
    "cheek_r": (346, 280, 352),
    "nose_l": (129, 48, 64),
    "nose_r": (358, 278, 294),
    "lip_corner_l": (61,),
    "lip_corner_r": (291,),
    "lip_upper": (0, 13),
    "lip_lower": (17, 14),
    "chin": (18, 200, 199),
    "glabella": (9, 8),
}
REGION_NAMES: tuple[str, ...] = tuple(REGIONS)
# Points that move with the skull, not with expressions: nose ridge and tip, eye corners, forehead, temples.
RIGID_POINTS: tuple[int, ...] = (6, 197, 195, 5, 4, 1, 133, 362, 33, 263, 10, 151, 54, 284, 21, 251, 127, 356,
                                 234, 454, 168)
# Eyelid pairs (upper, lower) and eye corners (outer, inner), for the eye opening.
_LIDS = (((159, 158, 160), (145, 153, 144), (33, 133)), ((386, 385, 387), (374, 380, 373), (263, 362)))
_CROP_IOD = CANONICAL_RIGHT_EYE[0] - CANONICAL_LEFT_EYE[0]  # eye distance as a fraction of the crop side
NUM_LANDMARKS = 478  # points of the MediaPipe face mesh, which the regions above index (realtime.landmarks too)


class MotionError(ValueError):
    """A crop or landmarks the motion meter cannot use (wrong shape or type, time not finite)."""


@dataclass(frozen=True)
class MotionOptions:
    """How motion is measured. Times in seconds; sizes in pixels of the work image or fractions of the IOD."""

    lag_s: float = 0.25  # displacement over this long (an ME's rise or fall takes about 0.1-0.25 s)
    work_size: int = 128  # crops are resampled to this square (128 = about the native face size of a webcam)
    region_half_iod: float = 0.12  # half side of a region's box, × IOD
    rigid_half_px: int = 4  # half side of the box measured at each rigid point (work pixels)
    blur_px: float = 1.0  # Gaussian blur (sigma) against sensor noise and compression blocks
    regularisation: float = 0.05  # box solve: + this × the mean gradient energy ...
    gradient_floor: float = 0.5  # ... + this squared per pixel (grey levels/pixel): featureless skin reads still
    robust_rounds: int = 3  # iteratively reweighted rounds of the head-motion fit
    max_gap_s: float = 1.0  # a longer gap between frames (or time going back) restarts the meter

    def __post_init__(self) -> None:
        if not 0.02 <= self.lag_s <= 2.0:
            raise ValueError(f"lag_s must be within 0.02..2 s, got {self.lag_s}")
        if self.work_size < 32:
            raise ValueError(f"work_size must be >= 32 pixels, got {self.work_size}")
        if not 0.02 <= self.region_half_iod <= 0.5:
            raise ValueError(f"region_half_iod must be within 0.02..0.5, got {self.region_half_iod}")
        if self.rigid_half_px < 1 or self.robust_rounds < 1 or self.max_gap_s <= 0:
            raise ValueError("rigid_half_px must be >= 1, robust_rounds >= 1 and max_gap_s > 0")
        if self.blur_px < 0 or self.regularisation < 0 or self.gradient_floor < 0:
            raise ValueError("blur_px, regularisation and gradient_floor must be >= 0")


@dataclass(frozen=True, slots=True)
class MotionSample:
    """Motion of one frame. ``displacement`` (R, 2) float32 is each region's movement since frame ``since``
    (about ``lag_s`` earlier) in IOD units, in :data:`REGION_NAMES` order; None (and ``since`` None) while no
    earlier crop of the same face is held. ``head`` is the size of the head's residual motion over the same
    time (the linear part of the fitted affine field, summed absolute values; 0 = none). ``eye_opening`` is
    the eyelid gap over the eye width, both eyes averaged (about 0.3 open, under 0.15 closed)."""

    index: int
    t: float
    since: int | None
    displacement: np.ndarray | None
    head: float
    eye_opening: float
    change: np.ndarray | None = None  # (R,) change no movement explains, RMS grey levels (a lid over an eye)
    # (R, 2) how far each region's landmarks moved over the same time relative to the rigid landmarks (an
    # affine fit to them removed), IOD units: the face mesh's view of the movement, beside the skin's own
    geometry: np.ndarray | None = None

    @property
    def magnitude(self) -> float:
        """Largest region displacement (IOD units), 0 without one."""
        if self.displacement is None:
            return 0.0
        return float(np.sqrt((self.displacement**2).sum(axis=1)).max())


_UPPER = [i for u, _, _ in _LIDS for i in u]
_LOWER = [i for _, lo, _ in _LIDS for i in lo]
_CORNERS = [i for _, _, c in _LIDS for i in c]


def eye_opening(landmarks: np.ndarray) -> float:
    """Eyelid gap over eye width, averaged over both eyes (any pixel units)."""
    gap = np.sqrt(((landmarks[_UPPER] - landmarks[_LOWER]) ** 2).sum(axis=1)).reshape(2, 3).mean(axis=1)
    corners = landmarks[_CORNERS].reshape(2, 2, 2)
    width = np.sqrt(((corners[:, 0] - corners[:, 1]) ** 2).sum(axis=1))
    return float((gap / np.maximum(width, 1e-6)).mean())


@dataclass(slots=True)
class _Held:
    index: int
    t: float
    crop: np.ndarray  # (n, n) uint8, work size
    landmarks: np.ndarray  # (478, 2) float32, work pixels


class MotionMeter:
    """Streaming region motion: ``update(crop, landmarks, index, t)`` once per aligned face, ``reset()`` on loss."""

    def __init__(self, options: MotionOptions | None = None, *, max_fps: float = 240.0) -> None:
        self.options = opts = options or MotionOptions()
        n = opts.work_size
        self._iod = _CROP_IOD * n
        self._half = opts.region_half_iod * self._iod
        f32 = np.float32
        self._a, self._b, self._moved = (np.zeros((n, n), f32) for _ in range(3))
        self._mean, self._ix, self._iy, self._it = (np.zeros((n, n), f32) for _ in range(4))
        # the ten per-pixel products the box solve sums (4 + 4 + 2 channels, one integral each)
        self._products = [np.zeros((n, n, c), np.float64) for c in (4, 4, 2)]
        self._products[2][..., 1] = 1.0
        self._sums = [np.zeros((n + 1, n + 1, c), np.float64) for c in (4, 4, 2)]
        # region centre = mean of its landmarks: one (R, 478) averaging matrix
        self._members = np.zeros((len(REGIONS), NUM_LANDMARKS), np.float32)
        for k, ids in enumerate(REGIONS.values()):
            self._members[k, list(ids)] = 1.0 / len(ids)
        self._rigid = list(RIGID_POINTS)
        # enough held crops to reach lag_s back at max_fps, plus slack for jittery timestamps
        self._capacity = max(4, int(math.ceil(opts.lag_s * max_fps)) + 4)
        self._held: deque[_Held] = deque()
        self._spare: list[_Held] = []
        self.reset()

    # --- lifecycle ----------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the held crops (face lost, new person, jump in time); displacements start again after lag_s."""
        while self._held:
            self._spare.append(self._held.popleft())

    def close(self) -> None:
        """Nothing to release; present so every component closes the same way."""

    def __enter__(self) -> MotionMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- per frame ----------------------------------------------------------------------------------------

    def update(self, crop: np.ndarray, landmarks: np.ndarray, index: int, t: float) -> MotionSample:
        """Motion of frame ``index`` at ``t`` s: ``crop`` is the aligned face (grey or BGR, uint8), ``landmarks``
        its (478, 2) face-mesh points in crop pixels."""
        opts = self.options
        if not math.isfinite(t):
            raise MotionError(f"frame time must be a finite number of seconds, got {t!r}")
        held = self._take()
        scale = self._prepare(crop, held.crop)
        pts = np.asarray(landmarks, dtype=np.float32)
        if pts.shape != (NUM_LANDMARKS, 2):
            raise MotionError(f"expected ({NUM_LANDMARKS}, 2) face-mesh landmarks, got shape {pts.shape}")
        np.multiply(pts, np.float32(scale), out=held.landmarks)
        held.index, held.t = int(index), float(t)
        opening = eye_opening(held.landmarks)
        last = self._held[-1] if self._held else None
        if last is not None and (t <= last.t or t - last.t > opts.max_gap_s):
            log.debug("motion restarted at t=%.3f (previous frame t=%.3f)", t, last.t)
            self.reset()
        ref = self._reference(t)
        self._held.append(held)
        if len(self._held) > self._capacity:
            self._spare.append(self._held.popleft())
        if ref is None:
            return MotionSample(held.index, held.t, None, None, 0.0, opening)
        vectors, head, change = self._measure(ref, held)
        return MotionSample(held.index, held.t, ref.index, vectors, head, opening, change, self._geometry(ref, held))

    def displacement(self, crop_a: np.ndarray, landmarks_a: np.ndarray, crop_b: np.ndarray,
                     landmarks_b: np.ndarray) -> np.ndarray:
        """Region displacement (R, 2) in IOD units from crop ``a`` to crop ``b`` (held crops of one face),
        measured exactly as :meth:`update` measures it over the lag."""
        a, b = self._take(), self._take()
        try:
            for held, crop, pts in ((a, crop_a, landmarks_a), (b, crop_b, landmarks_b)):
                scale = self._prepare(crop, held.crop)
                np.multiply(np.asarray(pts, np.float32), np.float32(scale), out=held.landmarks)
            vectors, _, _ = self._measure(a, b)
        finally:
            self._spare += (a, b)
        return vectors

    # --- internals ----------------------------------------------------------------------------------------

    def _take(self) -> _Held:
        if self._spare:
            return self._spare.pop()
        n = self.options.work_size
        return _Held(0, 0.0, np.zeros((n, n), np.uint8), np.zeros((NUM_LANDMARKS, 2), np.float32))

    def _reference(self, t: float) -> _Held | None:
        """The latest held crop at least lag_s before ``t`` (a tenth of a frame of slack for jittery clocks)."""
        target = t - self.options.lag_s
        best = None
        for held in reversed(self._held):
            if held.t <= target + 1e-3:
                best = held
                break
        return best

    def _prepare(self, crop: np.ndarray, out: np.ndarray) -> float:
        """Crop → grey uint8 work image in ``out``; returns the work/crop scale for the landmarks."""
        img = np.asarray(crop)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 3 and img.shape[2] in (3, 4):
            img = cv2.cvtColor(_as_uint8(img), cv2.COLOR_BGR2GRAY if img.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
        elif img.ndim != 2:
            raise MotionError(f"expected a grey (H, W) or BGR (H, W, 3) face crop, got shape {img.shape}")
        if img.shape[0] < 8 or img.shape[0] != img.shape[1]:
            raise MotionError(f"expected a square face crop of at least 8 pixels, got {img.shape[1]}x{img.shape[0]}")
        img = _as_uint8(img)
        n = self.options.work_size
        if img.shape[0] == n:
            np.copyto(out, img)
        else:
            interp = cv2.INTER_AREA if img.shape[0] > n else cv2.INTER_LINEAR
            cv2.resize(img, (n, n), dst=out, interpolation=interp)
        return n / img.shape[0]

    def _boxes(self, centres: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, ...]:
        n = self.options.work_size
        x0 = np.clip(np.rint(centres[:, 0] - half).astype(np.intp), 0, n - 2)
        x1 = np.clip(np.rint(centres[:, 0] + half).astype(np.intp) + 1, x0 + 2, n)
        y0 = np.clip(np.rint(centres[:, 1] - half).astype(np.intp), 0, n - 2)
        y1 = np.clip(np.rint(centres[:, 1] + half).astype(np.intp) + 1, y0 + 2, n)
        return x0, x1, y0, y1

    def _translations(self, first: np.ndarray, second: np.ndarray, boxes: tuple[np.ndarray, ...]
                      ) -> tuple[np.ndarray, np.ndarray]:
        """One Lucas-Kanade translation per box, first → second (N, 2) pixels, offset-free and regularised;
        and per box the change a translation does not explain (RMS grey levels: a lid closing over the eye,
        not skin sliding)."""
        m, ix, iy, it = self._mean, self._ix, self._iy, self._it
        cv2.addWeighted(first, 0.5, second, 0.5, 0.0, dst=m)  # gradients of the midpoint: symmetric step
        cv2.Sobel(m, cv2.CV_32F, 1, 0, dst=ix, ksize=3, scale=0.125)
        cv2.Sobel(m, cv2.CV_32F, 0, 1, dst=iy, ksize=3, scale=0.125)
        cv2.subtract(second, first, dst=it)
        p0, p1, p2 = self._products
        # written in place (no temporaries); p2[..., 1] holds ones from the start (a box's pixel count)
        for out, a, b in ((p0[..., 0], ix, ix), (p0[..., 1], iy, iy), (p0[..., 2], ix, iy), (p0[..., 3], ix, it),
                          (p1[..., 0], iy, it), (p2[..., 0], it, it)):
            np.multiply(a, b, out=out)
        for out, a in ((p1[..., 1], ix), (p1[..., 2], iy), (p1[..., 3], it)):
            np.copyto(out, a)
        x0, x1, y0, y1 = boxes
        totals = []
        for product, total in zip(self._products, self._sums, strict=True):
            cv2.integral(product, total, sdepth=cv2.CV_64F)
            totals.append(total[y1, x1] - total[y0, x1] - total[y1, x0] + total[y0, x0])
        (sxx, syy, sxy, sxt), (syt, sx, sy, st), (stt, count) = (t.T for t in totals)
        # centred sums: a brightness offset between the two boxes is not motion
        sxx = sxx - sx * sx / count
        syy = syy - sy * sy / count
        sxy = sxy - sx * sy / count
        sxt = sxt - sx * st / count
        syt = syt - sy * st / count
        stt = stt - st * st / count
        opts = self.options
        reg = opts.regularisation * 0.5 * (sxx + syy) + count * opts.gradient_floor**2 + 1e-6
        a, b = sxx + reg, syy + reg
        det = a * b - sxy * sxy
        dx, dy = -(b * sxt - sxy * syt) / det, -(a * syt - sxy * sxt) / det
        left = stt + 2 * (dx * sxt + dy * syt) + dx * dx * sxx + 2 * dx * dy * sxy + dy * dy * syy
        return np.stack([dx, dy], axis=1), np.sqrt(np.maximum(left, 0.0) / count)

    def _geometry(self, ref: _Held, cur: _Held) -> np.ndarray:
        """Region landmark movement ref → cur with the rigid landmarks' affine motion removed (IOD units)."""
        moved = cur.landmarks - ref.landmarks
        rigid = ref.landmarks[self._rigid].astype(np.float64)
        design = np.c_[rigid, np.ones(len(rigid))]
        affine, *_ = np.linalg.lstsq(design, moved[self._rigid].astype(np.float64), rcond=None)
        centres = (self._members @ ref.landmarks).astype(np.float64)
        residual = self._members @ moved - np.c_[centres, np.ones(len(centres))] @ affine
        return (residual / self._iod).astype(np.float32)

    def _measure(self, ref: _Held, cur: _Held) -> tuple[np.ndarray, float, np.ndarray]:
        """Region displacement ref → cur with the head's residual (affine) motion removed; the size of that
        motion; and per region the change that no movement explains (RMS grey levels)."""
        opts = self.options
        first, second = self._a, self._b
        for src, dst in ((ref.crop, first), (cur.crop, second)):
            np.copyto(dst, src, casting="unsafe")
            if opts.blur_px > 0:
                cv2.GaussianBlur(dst, (0, 0), opts.blur_px, dst=dst)
        pts = 0.5 * (ref.landmarks + cur.landmarks)
        regions = len(self._members)
        centres = np.vstack([self._members @ pts, pts[self._rigid]]).astype(np.float64)
        half = np.r_[np.full(regions, self._half), np.full(len(self._rigid), float(opts.rigid_half_px))]
        boxes = self._boxes(centres, half)
        ones = np.c_[centres, np.ones(len(centres))]
        # pass 1, then move the earlier crop by the head's motion and measure what is left (pass 2)
        moves, _ = self._translations(first, second, boxes)
        head = _robust_affine(centres[regions:], moves[regions:], opts.robust_rounds)
        inverse = np.eye(2, 3) - head  # dst(x) = first(x - A[x, 1]): content moved by the head's field
        cv2.warpAffine(first, inverse, first.shape[::-1], dst=self._moved,
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        residual, change = self._translations(self._moved, second, boxes)
        moves = ones @ head.T + residual
        affine = _robust_affine(centres[regions:], moves[regions:], opts.robust_rounds)
        vectors = (moves[:regions] - ones[:regions] @ affine.T) / self._iod
        return vectors.astype(np.float32), float(np.abs(affine[:, :2]).sum()), change[:regions].astype(np.float32)


def _as_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if not np.issubdtype(img.dtype, np.number):
        raise MotionError(f"face crop must be numeric, got dtype {img.dtype}")
    return np.clip(np.nan_to_num(img.astype(np.float32), nan=0.0), 0, 255).astype(np.uint8)


def _robust_affine(points: np.ndarray, vectors: np.ndarray, rounds: int) -> np.ndarray:
    """(2, 3) affine field ``v ≈ A @ [x, y, 1]`` fitted to ``vectors`` at ``points``, Huber-reweighted so a part
    that moves by itself (a wrinkling forehead, a turning cheek) does not drag the head's motion along."""
    design = np.ones((len(points), 3))
    design[:, :2] = points
    weights = np.ones(len(points))
    affine = np.zeros((2, 3))
    ridge = 1e-6 * np.eye(3)
    for _ in range(rounds):
        wd = design * weights[:, None]
        affine = np.linalg.solve(wd.T @ design + ridge, wd.T @ vectors).T
        miss = vectors - design @ affine.T
        residual = np.sqrt(miss[:, 0] * miss[:, 0] + miss[:, 1] * miss[:, 1])
        scale = max(1.4826 * _median(residual), 0.05)
        weights = 1.0 / np.maximum(1.0, residual / (1.5 * scale))
    return affine


def _median(values: np.ndarray) -> float:
    """np.median of a short 1-D array, without its overhead (a third of the head-motion fit)."""
    ordered = np.sort(values)
    half = len(ordered) // 2
    return float(ordered[half]) if len(ordered) % 2 else float(0.5 * (ordered[half - 1] + ordered[half]))
