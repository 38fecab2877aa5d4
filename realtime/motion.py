"""Per-frame facial motion intensity from aligned face crops, with lighting, jitter and blinks suppressed.

Each crop (aligned to the template of :mod:`realtime.alignment`) is resampled to a small grey square and
blurred. It is compared with a *reference*: an exponential average of recent quiet frames (time constant in
seconds). The reference freezes while the face moves, so an expression is measured against the face just
before it and the signal falls back when the face returns to neutral (a plain "frame k back" reference
would echo every event k frames later); a change that lasts lifts the noise level until the reference
takes it in, within seconds.

Before comparing, the reference is moved onto the frame by a robust least-squares fit over the rigid-ish
parts of the face (shift, rotation, scale, gain and offset with their x/y slopes; cells that move by
themselves are down-weighted): the sub-pixel jitter alignment leaves and global or graded lighting changes
cancel. Each facial region (fractions of the crop, see :data:`DEFAULT_REGIONS`) is tiled into cells; a cell
scores the sine of the angle between its centred frame and reference patches (gain-free, about
texture-free); a region pools its cells. Each region is then expressed in multiples of its own running
noise level (a noisy mouth does not drown a brow movement), the smallest region (the whole-face common
mode) is subtracted, and the intensity is the weighted power mean of the regions: about 1 or less on a
still face, tens for a few pixels of local deformation. A brief change far larger at the eyes than anywhere
else (a blink) has the eyes clamped to the most active other region and its small spill taken off the
brows, which otherwise always count. Cost: a few OpenCV/numpy operations on the small square, no growth.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_REGIONS",
    "FaceRegion",
    "MotionError",
    "MotionMeter",
    "MotionOptions",
    "MotionSample",
]


_N_BASIS = 10  # global fit: shift x/y, rotation, scale, gain (+ x/y slopes), offset (+ x/y slopes)


def _solve(normal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Least-squares normal equations, Jacobi-scaled and lightly damped (a flat crop gives zeros, not NaN)."""
    scale = 1.0 / np.sqrt(np.diag(normal).astype(np.float64) + 1e-12)
    damped = normal * np.outer(scale, scale) + 1e-4 * np.eye(len(rhs))
    return np.linalg.solve(damped, rhs * scale) * scale


class MotionError(ValueError):
    """A crop the motion meter cannot use (wrong shape or type)."""


@dataclass(frozen=True)
class FaceRegion:
    """A box in fractions of the crop side, ``(x0, y0)`` top-left to ``(x1, y1)``, and its weight."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float
    weight: float = 1.0


# Placed from MediaPipe landmarks of real faces aligned by realtime.alignment (eyes at (0.32, 0.38),
# (0.68, 0.38), nose tip (0.50, 0.60)). "left" is image-left, as in realtime.alignment.
DEFAULT_REGIONS: tuple[FaceRegion, ...] = (
    FaceRegion("brows", 0.16, 0.16, 0.84, 0.30, 1.0),
    FaceRegion("left_eye", 0.22, 0.31, 0.44, 0.45, 0.5),
    FaceRegion("right_eye", 0.56, 0.31, 0.78, 0.45, 0.5),
    FaceRegion("nose", 0.40, 0.45, 0.60, 0.66, 0.75),
    FaceRegion("mouth", 0.30, 0.65, 0.72, 0.88, 1.25),
    FaceRegion("left_cheek", 0.16, 0.46, 0.38, 0.66, 0.75),
    FaceRegion("right_cheek", 0.62, 0.46, 0.84, 0.66, 0.75),
)


@dataclass(frozen=True)
class MotionOptions:
    """How motion is measured. Times in seconds, sizes in pixels of the work image."""

    work_size: int = 64  # crops are resampled to this square first (cost and noise both drop)
    reference_tau_s: float = 0.5  # time constant of the quiet-frame reference average
    blur_sigma_px: float = 1.4  # blur against sensor noise and the resampling jitter alignment leaves
    min_contrast: float = 1.0  # grey levels (0-255 scale); flatter crops count as featureless, not noise
    global_fit: bool = True  # fit and remove global shift / rotation / scale / gain before comparing
    robust_factor: float = 3.0  # fit cells with rms residual above this x the best cell's are down-weighted
    fit_regions: tuple[str, ...] = ("brows", "nose", "left_cheek", "right_cheek")  # the rigid-ish parts
    pool_power: float = 4.0  # cells -> region and regions -> intensity: power means (1 = plain mean;
    #                          higher favours one strongly moving part over the same change spread thin)
    whiten: bool = True  # score each region in multiples of its own noise level (running, clipped)
    noise_floor: float = 0.25  # ... plus this x the mean level, so a near-silent region is not blown up
    common_mode: float = 1.0  # fraction of the smallest (whitened) region score taken off every region
    quiet_factor: float = 2.0  # motion starts above this x the noise level: the reference freezes ...
    release_factor: float = 1.25  # ... until it is back below this x the noise level (slow tails stay out)
    level_tau_s: float = 3.0  # time constant of the noise level estimate
    warmup_s: float = 0.5  # after start / reset every frame is quiet for this long
    blink_ratio: float = 4.0  # eyes changing more than this x any other region look like a blink ...
    blink_spill: float = 0.03  # ... whose change spills onto the regions next to the eyes by this fraction
    blink_max_s: float = 0.5  # ... but only for this long; a longer eye-only change counts
    max_gap_s: float = 1.0  # a longer gap between frames (or time going back) restarts the reference
    regions: tuple[FaceRegion, ...] = DEFAULT_REGIONS
    eye_regions: tuple[str, ...] = ("left_eye", "right_eye")
    near_eye_regions: tuple[str, ...] = ("brows",)  # get the eyelid's spill taken off during a blink
    cell_size: float = 0.2  # regions are scored in cells of about this fraction of the side (locality)

    def __post_init__(self) -> None:
        if self.work_size < 16:
            raise ValueError(f"work_size must be >= 16 pixels, got {self.work_size}")
        for name in ("reference_tau_s", "level_tau_s", "blur_sigma_px", "pool_power", "cell_size",
                     "min_contrast"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.release_factor <= self.quiet_factor:
            raise ValueError(f"need 0 < release_factor <= quiet_factor, got {self.release_factor} and "
                             f"{self.quiet_factor}")
        if not self.regions:
            raise ValueError("at least one face region is needed")
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate region names in {names}")
        for r in self.regions:
            if not (0.0 <= r.x0 < r.x1 <= 1.0 and 0.0 <= r.y0 < r.y1 <= 1.0) or r.weight < 0:
                raise ValueError(f"region {r.name!r} must be a non-empty box inside [0, 1] with weight >= 0")
        if sum(r.weight for r in self.regions) <= 0:
            raise ValueError("region weights must not all be zero")
        for field_name in ("eye_regions", "near_eye_regions", "fit_regions"):
            unknown = set(getattr(self, field_name)) - set(names)
            if unknown:
                raise ValueError(f"{field_name} {sorted(unknown)} are not among the regions {names}")


@dataclass(frozen=True)
class MotionSample:
    """Motion of one frame: intensity (>= 0, finite) and the region scores it pooled, in multiples of each
    region's noise level after the common-mode subtraction and blink clamping (0 = no change)."""

    intensity: float
    regions: dict[str, float] = field(default_factory=dict)
    blink: bool = False  # the eye regions were clamped as a blink on this frame
    quiet: bool = True  # the frame was quiet enough to update the reference


class MotionMeter:
    """Streaming motion intensity: ``update(crop, t)`` once per aligned crop, ``reset()`` on face loss."""

    def __init__(self, options: MotionOptions | None = None) -> None:
        self.options = opts = options or MotionOptions()
        n = opts.work_size
        f32 = np.float32
        self._gray = np.zeros((n, n), f32)
        self._frame = np.zeros((n, n), f32)  # the current crop: grey, work size, blurred, zero mean
        self._ref = np.zeros((n, n), f32)  # average of recent quiet frames
        self._warped = np.zeros((n, n), f32)  # the reference moved onto the frame (global motion, gain)
        self._prod = np.zeros((n, n), f32)
        self._sum = np.zeros((n + 1, n + 1), np.float64)
        # Global fit basis (rows): d/dx, d/dy, rotation, scale, gain, gain slopes x / y, offset, offset
        # slopes x / y; fitted over the pixels of the rigid-ish regions' cells.
        c = (n - 1) / 2.0
        ys, xs = np.mgrid[0:n, 0:n].astype(f32)
        self._xs, self._ys = (xs - c) / n, (ys - c) / n
        self._basis = np.zeros((_N_BASIS, n, n), f32)
        self._basis[7], self._basis[8], self._basis[9] = 1.0, self._xs, self._ys
        fit_pixels: list[np.ndarray] = []  # flat pixel indices of each cell of the rigid-ish regions
        cells, owner = [], []  # each region is tiled into cells of about cell_size; a cell knows its region
        for k, r in enumerate(opts.regions):
            x0, y0 = round(r.x0 * n), round(r.y0 * n)
            x1, y1 = max(round(r.x1 * n), x0 + 1), max(round(r.y1 * n), y0 + 1)
            step = max(opts.cell_size * n, 1.0)
            nx, ny = max(1, round((x1 - x0) / step)), max(1, round((y1 - y0) / step))
            gx = np.linspace(x0, x1, nx + 1).round().astype(int)
            gy = np.linspace(y0, y1, ny + 1).round().astype(int)
            for j in range(ny):
                for i in range(nx):
                    cx0, cy0, cx1, cy1 = gx[i], gy[j], gx[i + 1], gy[j + 1]
                    cells.append((cx0, cy0, cx1, cy1))
                    owner.append(k)
                    if r.name in opts.fit_regions:
                        pixels = np.arange(cy0, cy1)[:, None] * n + np.arange(cx0, cx1)[None, :]
                        fit_pixels.append(pixels.ravel())
        self._fit_idx = np.concatenate(fit_pixels) if fit_pixels else np.zeros(0, np.intp)
        if opts.global_fit and self._fit_idx.size < 2 * _N_BASIS:
            raise ValueError(f"fit_regions {opts.fit_regions} cover too little of the face for the global fit")
        self._fit_counts = np.array([len(p) for p in fit_pixels], dtype=np.intp)
        self._fit_starts = np.concatenate([[0], np.cumsum(self._fit_counts)[:-1]]).astype(np.intp)
        self._fit_rows = np.zeros((_N_BASIS, self._fit_idx.size), f32)
        b = np.array(cells, dtype=np.intp)
        w = n + 1  # flat indices into the (n+1)^2 integral image: sum = S[y1,x1] - S[y0,x1] - S[y1,x0] + S[y0,x0]
        self._corners = np.stack([b[:, 3] * w + b[:, 2], b[:, 1] * w + b[:, 2], b[:, 3] * w + b[:, 0],
                                  b[:, 1] * w + b[:, 0]])
        self._area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).astype(np.float64)
        self._eps = self._area * opts.min_contrast**2
        # region score = power mean of its cells' scores: (membership @ cell**p) ** (1/p)
        owner_ = np.array(owner)
        self._members = np.zeros((len(opts.regions), len(cells)))
        self._members[owner_, np.arange(len(cells))] = 1.0
        self._members /= self._members.sum(axis=1, keepdims=True)
        weights = np.array([r.weight for r in opts.regions], dtype=np.float64)
        self._weights = weights / weights.sum()
        self._names = [r.name for r in opts.regions]
        self._eye = np.array([r.name in opts.eye_regions for r in opts.regions])
        self._near_eye = np.array([r.name in opts.near_eye_regions for r in opts.regions])
        self.reset()

    # --- lifecycle ----------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the reference (face lost, new person, jump in time); the next crop starts afresh."""
        self._last_t: float | None = None
        self._start_t = 0.0
        self._level = 0.0
        self._level_n = 0
        self._blink_since: float | None = None
        self._moving = False
        self._noise = np.zeros(len(self.options.regions))  # per-region noise level (whiten)

    def close(self) -> None:
        """Nothing to release; present so every component closes the same way."""

    def __enter__(self) -> MotionMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- per frame ----------------------------------------------------------------------------------------

    def update(self, crop: np.ndarray, t: float) -> MotionSample:
        """Motion of ``crop`` (aligned face, grey or BGR, uint8 or float on a 0-255 scale) at time ``t`` s."""
        opts = self.options
        if not math.isfinite(t):
            raise MotionError(f"frame time must be a finite number of seconds, got {t!r}")
        self._prepare(crop)
        last = self._last_t
        if last is None or t < last or t - last > opts.max_gap_s:
            if last is not None:
                log.debug("motion reference restarted at t=%.3f (previous frame t=%.3f)", t, last)
            self.reset()
            self._last_t = self._start_t = t
            np.copyto(self._ref, self._frame)
            return MotionSample(0.0, dict.fromkeys(self._names, 0.0))
        dt = t - last
        self._last_t = t

        if opts.global_fit:
            self._fit_reference()
        else:
            np.copyto(self._warped, self._ref)
        cell = self._cell_scores()
        p = opts.pool_power
        scores = (self._members @ cell**p) ** (1.0 / p) if p != 1.0 else self._members @ cell
        warm = t - self._start_t < opts.warmup_s
        rate = 1.0 - math.exp(-dt / opts.level_tau_s)
        self._level_n += 1

        # Blink: the eyes change far more than any other region, briefly. Then the eyelid's spill is taken off
        # the regions next to the eyes (the brows, which count otherwise), and below the eyes are clamped to
        # the most active other region.
        blink = False
        near = scores
        if self._eye.any() and (~self._eye).any():
            eye = float(scores[self._eye].max())
            if eye > opts.blink_ratio * float(scores[~self._eye].max()) + 1e-3:
                if self._blink_since is None:
                    self._blink_since = t
                if t - self._blink_since <= opts.blink_max_s:
                    blink = True
                    near = scores.copy()
                    near[self._near_eye] = np.maximum(near[self._near_eye] - opts.blink_spill * eye, 0.0)
            else:
                self._blink_since = None

        # Each region in multiples of its own noise level (running, clipped; a blink does not feed the eyes'):
        # a noisy mouth does not drown the brows. The common mode (smallest region) goes; regions are pooled.
        if opts.whiten:
            noise = self._noise
            sample = np.where(self._eye, noise, near) if blink else near
            if warm:
                noise += (sample - noise) / self._level_n
            else:
                noise += rate * (np.minimum(sample, opts.quiet_factor * noise + 1e-6) - noise)
            denominator = noise + max(opts.noise_floor * float(noise.mean()), 1e-4)
        else:
            denominator = np.ones_like(scores)
        z = scores / denominator
        common = float(z.min()) * opts.common_mode
        unclamped = np.maximum(z - common, 0.0)
        raw = self._pool(unclamped)
        if blink:
            z = near / denominator
            np.minimum(z, float(z[~self._eye].max()), out=z, where=self._eye)
            scores = np.maximum(z - common, 0.0)
            intensity = self._pool(scores)
        else:
            scores, intensity = unclamped, raw

        # Quiet frames (judged before blink clamping, so a blink never leaks into the reference) update it.
        gate = opts.quiet_factor * self._level + 1e-6
        if warm or raw <= opts.release_factor * self._level + 1e-6:
            self._moving = False
        elif raw > gate:
            self._moving = True
        quiet = not self._moving
        if warm:
            self._level += (raw - self._level) / self._level_n
        else:  # clipped: a burst cannot inflate it, a lasting rise lifts it within seconds
            self._level += rate * (min(raw, gate) - self._level)
        if quiet and dt > 0:
            cv2.accumulateWeighted(self._frame, self._ref, 1.0 - math.exp(-dt / opts.reference_tau_s))

        if not math.isfinite(intensity):  # cannot happen with finite input; never hand NaN downstream
            intensity = 0.0
        return MotionSample(
            intensity=intensity,
            regions={name: float(v) for name, v in zip(self._names, scores, strict=True)},
            blink=blink,
            quiet=quiet,
        )

    def _pool(self, scores: np.ndarray) -> float:
        p = self.options.pool_power
        if p == 1.0:
            return float(self._weights @ scores)
        return float(self._weights @ scores**p) ** (1.0 / p)

    def _prepare(self, crop: np.ndarray) -> None:
        """Crop -> grey work image -> blur -> zero mean, into ``self._frame``."""
        opts = self.options
        img = np.asarray(crop)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 3 and img.shape[2] in (3, 4):
            if img.dtype not in (np.uint8, np.float32):
                img = img.astype(np.float32)
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY if img.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
        elif img.ndim != 2:
            raise MotionError(f"expected a grey (H, W) or BGR (H, W, 3) face crop, got shape {img.shape}")
        if img.shape[0] < 2 or img.shape[1] < 2:
            raise MotionError(f"face crop too small: {img.shape[1]}x{img.shape[0]} pixels")
        if img.dtype not in (np.uint8, np.float32):
            if not np.issubdtype(img.dtype, np.number):
                raise MotionError(f"face crop must be numeric, got dtype {img.dtype}")
            img = img.astype(np.float32)
        n = opts.work_size
        interp = cv2.INTER_AREA if img.shape[0] >= n and img.shape[1] >= n else cv2.INTER_LINEAR
        small = cv2.resize(img, (n, n), interpolation=interp)
        np.copyto(self._gray, small, casting="unsafe")
        if not np.isfinite(self._gray).all():
            np.nan_to_num(self._gray, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        cv2.GaussianBlur(self._gray, (0, 0), opts.blur_sigma_px, dst=self._frame)
        self._frame -= np.float32(cv2.mean(self._frame)[0])  # zero mean: products below stay accurate

    def _fit_reference(self) -> None:
        """Move the reference onto the frame: least-squares global shift, rotation, scale, gain and offset.

        One Gauss-Newton step of ``frame ~ ref + sum_k c_k basis_k`` over the rigid-part mask; removes the
        sub-pixel jitter that alignment leaves and global lighting, so the region scores see only deformation.
        """
        ref, basis = self._ref, self._basis
        # Gradients of frame + reference (halved): the symmetric, second-order accurate form of the step.
        cv2.add(self._frame, ref, dst=self._prod)
        cv2.Sobel(self._prod, cv2.CV_32F, 1, 0, dst=basis[0], ksize=3, scale=0.0625)
        cv2.Sobel(self._prod, cv2.CV_32F, 0, 1, dst=basis[1], ksize=3, scale=0.0625)
        np.multiply(self._xs, basis[1], out=basis[2])
        basis[2] -= self._ys * basis[0]
        np.multiply(self._xs, basis[0], out=basis[3])
        basis[3] += self._ys * basis[1]
        np.copyto(basis[4], ref)
        np.multiply(self._xs, ref, out=basis[5])
        np.multiply(self._ys, ref, out=basis[6])
        flat = basis.reshape(_N_BASIS, -1)
        rows = self._fit_rows
        np.take(flat, self._fit_idx, axis=1, out=rows)  # the rigid-part pixels only
        np.subtract(self._frame, ref, out=self._prod)
        diff = self._prod.reshape(-1)[self._fit_idx]
        coef = _solve(rows @ rows.T, rows @ diff)
        if len(self._fit_counts) > 2:
            # Robust rounds: a part that moves by itself (a raised brow, a cheek) must not drag the global fit;
            # cells whose residual is far above the best-fitting cell's are down-weighted and it is redone.
            for _ in range(2):
                res = diff - coef.astype(np.float32) @ rows
                energy = np.add.reduceat(res * res, self._fit_starts) / self._fit_counts
                limit = self.options.robust_factor**2 * float(energy.min()) + 1e-12
                if energy.max() <= limit:
                    break
                weights = np.repeat(np.minimum(1.0, limit / energy), self._fit_counts).astype(np.float32)
                weighted = rows * weights
                coef = _solve(weighted @ rows.T, weighted @ diff)
        np.copyto(self._warped, ref)
        self._warped += (coef.astype(np.float32) @ flat).reshape(ref.shape)

    def _region_sums(self, image: np.ndarray) -> np.ndarray:
        cv2.integral(image, self._sum, cv2.CV_64F)
        c = self._sum.ravel()[self._corners]
        return c[0] - c[1] - c[2] + c[3]

    def _cell_scores(self) -> np.ndarray:
        """Per cell: sine of the angle between the frame's and the fitted reference's patches (centred).

        Gain- and offset-free (a brighter patch has the same angle) and about texture-free (a small shift turns
        a busy and a smooth patch by about as much); ``eps`` keeps featureless patches at zero.
        """
        frame, ref, prod, area = self._frame, self._warped, self._prod, self._area
        s_frame = self._region_sums(frame)
        s_ref = self._region_sums(ref)
        cv2.multiply(frame, frame, dst=prod)
        e_frame = self._region_sums(prod) - s_frame * s_frame / area
        cv2.multiply(frame, ref, dst=prod)
        cross = self._region_sums(prod) - s_frame * s_ref / area
        cv2.multiply(ref, ref, dst=prod)
        e_ref = self._region_sums(prod) - s_ref * s_ref / area
        flat = 1e-3 * self._eps  # below this a patch is featureless (float rounding), not changed
        e_frame[e_frame < flat] = 0.0
        e_ref[e_ref < flat] = 0.0
        gap = np.maximum(e_frame * e_ref - cross * cross, 0.0)
        return np.sqrt(gap / ((e_frame + self._eps) * (e_ref + self._eps)))
