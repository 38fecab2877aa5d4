"""Rendering one face of the synthetic generator: AU deformation, blinks and identity looks.

A :class:`FaceRig` holds one face scene (a real photo, rescaled so the inter-ocular distance is
``WORK_IOD`` pixels) and precomputes, once, the displacement field of every Action Unit on a region
around the face (at half resolution: the fields are smooth) and the closed-eye texture used for blinks.
A frame is then a weighted sum of basis fields and one ``cv2.remap`` of that region, so a clip costs a
few milliseconds per frame. A :class:`Look` (skin tone, lighting) changes how an identity appears
without changing its geometry (augmentation of the same subject).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from training.aus import ACTION_UNITS, LEFT_EYE, RIGHT_EYE, EyeIndices, FaceFrame, au_field, au_landmark_shift

__all__ = ["WORK_IOD", "AuKey", "FaceRig", "Look", "RenderedFace", "au_key", "combine_shift"]

# A deformation basis element: an Action Unit on both sides of the face (plain int), or (AU, side) for one
# side only ("left" / "right" = image-left / image-right; see training.aus.SIDES).
AuKey = int | tuple[int, str]


def au_key(au: int, side: str = "both") -> AuKey:
    """The basis key of ``au`` moved on ``side`` of the face."""
    return int(au) if side == "both" else (int(au), side)


def _split(key: AuKey) -> tuple[int, str]:
    return (key, "both") if isinstance(key, int) else key

WORK_IOD = 64.0  # pixels between the eye centres in every face scene
_ROI_MARGIN = 0.8  # deformation region: landmark box + this many IOD on every side
_TAPER = 0.3  # fields fade to zero over this many IOD at the region border
_FIELD_STEP = 2  # basis fields are stored at 1/_FIELD_STEP resolution


@dataclass(frozen=True)
class Look:
    """Identity augmentation: skin tone (L gain, a/b shift in Lab, inside a soft head mask) and
    lighting (a linear gain ramp across the face in direction ``light_angle``, plus a gamma)."""

    tone_gain: float = 1.0
    tone_a: float = 0.0
    tone_b: float = 0.0
    light_strength: float = 0.0
    light_angle: float = 0.0  # radians, image coordinates
    gamma: float = 1.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Look:
        """A random, natural-looking variation (one in five clips keeps the original look)."""
        if rng.random() < 0.2:
            return cls()
        return cls(
            tone_gain=float(rng.uniform(0.8, 1.12)),
            tone_a=float(rng.uniform(-5.0, 7.0)),
            tone_b=float(rng.uniform(-6.0, 9.0)),
            light_strength=float(rng.uniform(-0.35, 0.35)),
            light_angle=float(rng.uniform(0.0, 2 * np.pi)),
            gamma=float(rng.uniform(0.85, 1.2)),
        )

    @property
    def is_identity(self) -> bool:
        return self == Look()

    def apply(self, image: np.ndarray, origin: tuple[int, int], frame: FaceFrame) -> np.ndarray:
        """This look on ``image`` (uint8 BGR), a part of a scene whose pixel (0, 0) is scene ``origin``."""
        if self.is_identity:
            return image
        h, w = image.shape[:2]
        xs = np.arange(w, dtype=np.float32) + origin[0] - np.float32(frame.mid[0])
        ys = np.arange(h, dtype=np.float32) + origin[1] - np.float32(frame.mid[1])
        img = image.astype(np.float32) / 255.0
        if (self.tone_gain, self.tone_a, self.tone_b) != (1.0, 0.0, 0.0):
            # Soft head mask: ellipse centred a little below the eyes.
            cx, cy = frame.ey * (0.4 * frame.iod)
            u = (xs[None, :] - cx) / (1.7 * frame.iod)
            v = (ys[:, None] - cy) / (2.4 * frame.iod)
            mask = np.clip(1.4 - (u * u + v * v), 0.0, 1.0)[..., None].astype(np.float32)
            lab = cv2.cvtColor(img, cv2.COLOR_BGR2Lab)
            toned = lab * np.array([self.tone_gain, 1.0, 1.0], np.float32) + np.array(
                [0.0, self.tone_a, self.tone_b], np.float32
            )
            toned = cv2.cvtColor(np.clip(toned, [0, -127, -127], [100, 127, 127]).astype(np.float32), cv2.COLOR_Lab2BGR)
            img = img + mask * (toned - img)
        if self.light_strength != 0.0:
            d = np.array([np.cos(self.light_angle), np.sin(self.light_angle)], np.float32)
            ramp = (xs[None, :] * d[0] + ys[:, None] * d[1]) / np.float32(3.0 * frame.iod)
            gain = np.clip(1.0 + self.light_strength * ramp, 0.5, 1.5).astype(np.float32)
            img = img * gain[..., None]
        np.clip(img, 0.0, 1.0, out=img)
        if self.gamma != 1.0:
            img = np.power(img, np.float32(self.gamma))
        return (img * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class RenderedFace:
    """A rendered face region (``image``, top-left at scene ``origin``) and its landmarks in scene pixels."""

    image: np.ndarray
    origin: tuple[int, int]
    landmarks: np.ndarray


@dataclass(frozen=True)
class _Eye:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in scene pixels
    u: np.ndarray  # along the eye axis, in half-widths
    v: np.ndarray  # down the face, in half-openings
    mask: np.ndarray  # soft eye-region mask (float32)
    closed: np.ndarray  # closed-lid texture of the box (uint8 BGR)
    upper: tuple[int, ...]
    lower: tuple[int, ...]


def combine_shift(shifts: Mapping[AuKey, np.ndarray], weights: Mapping[AuKey, float]) -> np.ndarray | None:
    """Σ weight · landmark shift over the AUs with a non-zero weight (None when all are zero)."""
    out = None
    for au, w in weights.items():
        if w == 0.0:
            continue
        term = shifts[au] * w
        out = term if out is None else out + term
    return out


class FaceRig:
    """One face scene with its landmarks, ready to be deformed. Fields are computed lazily, once per AU."""

    def __init__(self, scene: np.ndarray, landmarks: np.ndarray) -> None:
        self.scene = np.ascontiguousarray(scene)
        self.landmarks = np.asarray(landmarks, dtype=np.float64)
        self.frame = FaceFrame.from_landmarks(self.landmarks)
        h, w = scene.shape[:2]
        m = _ROI_MARGIN * self.frame.iod
        lo = np.floor(self.landmarks.min(0) - m).astype(int)
        hi = np.ceil(self.landmarks.max(0) + m).astype(int)
        x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
        x1, y1 = min(int(hi[0]), w), min(int(hi[1]), h)
        # An even size keeps the half-resolution fields aligned with the full grid.
        x1 -= (x1 - x0) % _FIELD_STEP
        y1 -= (y1 - y0) % _FIELD_STEP
        self.roi = (x0, y0, x1, y1)
        self._fields: dict[AuKey, np.ndarray] = {}
        self._shifts: dict[AuKey, np.ndarray] = {}
        self._taper = self._make_taper()
        gx, gy = np.meshgrid(np.arange(x1 - x0, dtype=np.float32), np.arange(y1 - y0, dtype=np.float32))
        self._grid = np.stack([gx, gy], axis=-1)
        self._eye_cache: tuple[_Eye, ...] | None = None  # built on the first blink (inpainting costs)

    # --- precomputation -------------------------------------------------------------------------------

    @property
    def roi_shape(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.roi
        return y1 - y0, x1 - x0

    def _make_taper(self) -> np.ndarray:
        h, w = self.roi_shape
        hs, ws = h // _FIELD_STEP, w // _FIELD_STEP
        ramp = max(_TAPER * self.frame.iod / _FIELD_STEP, 1.0)

        def edge(n: int) -> np.ndarray:
            i = np.arange(n, dtype=np.float32)
            d = np.minimum(i, n - 1 - i) / ramp
            s = np.clip(d, 0.0, 1.0)
            return s * s * (3 - 2 * s)

        return np.outer(edge(hs), edge(ws)).astype(np.float32)[..., None]

    @property
    def _eyes(self) -> tuple[_Eye, ...]:
        if self._eye_cache is None:
            self._eye_cache = tuple(self._make_eye(e) for e in (RIGHT_EYE, LEFT_EYE))
        return self._eye_cache

    def field(self, key: AuKey) -> np.ndarray:
        """Half-resolution forward displacement field of an AU (:data:`AuKey`) at full intensity over the
        region (pixels)."""
        f = self._fields.get(key)
        if f is None:
            au, side = _split(key)
            x0, y0, _, _ = self.roi
            h, w = self.roi_shape
            origin = (x0 + (_FIELD_STEP - 1) / 2.0, y0 + (_FIELD_STEP - 1) / 2.0)
            # Sample at the centres of 2×2 blocks, on a grid of step 2: scale coordinates by hand.
            small = au_field(self.landmarks / _FIELD_STEP, ACTION_UNITS[au],
                             origin=(origin[0] / _FIELD_STEP, origin[1] / _FIELD_STEP),
                             shape=(h // _FIELD_STEP, w // _FIELD_STEP),
                             frame=_scaled_frame(self.frame, 1.0 / _FIELD_STEP), side=side)
            f = small * np.float32(_FIELD_STEP) * self._taper
            self._fields[key] = f
        return f

    def shift(self, key: AuKey) -> np.ndarray:
        """(478, 2) landmark displacement of an AU (:data:`AuKey`) at full intensity (pixels)."""
        s = self._shifts.get(key)
        if s is None:
            au, side = _split(key)
            s = au_landmark_shift(self.landmarks, ACTION_UNITS[au], frame=self.frame, side=side)
            self._shifts[key] = s
        return s

    def peak_shift(self, intensities: Mapping[AuKey, float]) -> float:
        """Largest landmark displacement (pixels) of an AU combination at the given intensities."""
        total = combine_shift({a: self.shift(a) for a in intensities}, intensities)
        return 0.0 if total is None else float(np.hypot(total[:, 0], total[:, 1]).max())

    def _make_eye(self, eye: EyeIndices) -> _Eye:
        lm = self.landmarks
        upper, lower = eye.upper, eye.lower
        centre = lm[list(eye.contour)].mean(0)
        half_w = max(float(np.hypot(*(lm[eye.outer] - lm[eye.inner]))) / 2.0, 0.1 * self.frame.iod)
        opening = np.hypot(*(lm[list(upper)] - lm[list(lower)]).T).max()
        half_h = max(float(opening) / 2.0, 0.05 * self.frame.iod)
        r = int(np.ceil(1.6 * half_w))
        h, w = self.scene.shape[:2]
        x0, y0 = max(int(centre[0]) - r, 0), max(int(centre[1]) - r, 0)
        x1, y1 = min(int(centre[0]) + r + 1, w), min(int(centre[1]) + r + 1, h)
        gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32) - np.float32(centre[0]),
                             np.arange(y0, y1, dtype=np.float32) - np.float32(centre[1]))
        ex, ey = self.frame.ex.astype(np.float32), self.frame.ey.astype(np.float32)
        u = (gx * ex[0] + gy * ex[1]) / np.float32(half_w)
        v = (gx * ey[0] + gy * ey[1]) / np.float32(half_h)
        rho = np.sqrt((u / 1.3) ** 2 + (v / 2.2) ** 2)
        mask = np.clip((1.0 - rho) / 0.25, 0.0, 1.0).astype(np.float32)
        # Closed lid: the eye region filled in from the surrounding skin, slightly shaded, with a lash line.
        patch = self.scene[y0:y1, x0:x1]
        hole = ((u / 1.15) ** 2 + (v / 1.5) ** 2 < 1.0).astype(np.uint8) * 255
        filled = cv2.inpaint(patch, hole, max(3.0, half_h), cv2.INPAINT_TELEA).astype(np.float32)
        lash = 1.0 - 0.45 * np.exp(-(((v - 0.85) / 0.3) ** 2)) * np.clip(1.2 - np.abs(u), 0.0, 1.0)
        closed = np.clip(filled * (0.93 * lash)[..., None], 0, 255).astype(np.uint8)
        return _Eye((x0, y0, x1, y1), u.astype(np.float32), v.astype(np.float32), mask, closed, upper, lower)

    def closed_eyes(self, look: Look) -> tuple[np.ndarray, ...]:
        """Closed-lid textures of both eye boxes in the given look."""
        return tuple(look.apply(e.closed, (e.box[0], e.box[1]), self.frame) for e in self._eyes)

    # --- per frame -------------------------------------------------------------------------------------

    def blend_blink(self, image: np.ndarray, origin: tuple[int, int], closure: float,
                    closed: tuple[np.ndarray, ...]) -> None:
        """Draw eyelids closed by ``closure`` (0 open .. 1 shut) into ``image`` in place."""
        if closure <= 0.0:
            return
        front = -2.0 + 3.1 * float(closure)  # lid edge position in half-openings (lower lid at about +1)
        for eye, tex in zip(self._eyes, closed, strict=True):
            x0, y0, x1, y1 = eye.box
            ox, oy = x0 - origin[0], y0 - origin[1]
            if ox < 0 or oy < 0 or ox + (x1 - x0) > image.shape[1] or oy + (y1 - y0) > image.shape[0]:
                continue  # eye box outside the rendered region (cannot happen for a rig's own region)
            dst = image[oy : oy + (y1 - y0), ox : ox + (x1 - x0)]
            lid = eye.mask / (1.0 + np.exp((eye.v - front) / 0.2))
            edge = 1.0 - 0.3 * eye.mask * np.exp(-(((eye.v - front) / 0.35) ** 2)) * min(1.0, 3.0 * float(closure))
            out = dst.astype(np.float32) * (1.0 - lid)[..., None] + tex.astype(np.float32) * lid[..., None]
            out *= edge[..., None]
            dst[...] = np.clip(out, 0, 255).astype(np.uint8)

    def blink_shift(self, closure: float) -> np.ndarray | None:
        """Landmark displacement of a blink: upper-lid points move towards the lower lid."""
        if closure <= 0.0:
            return None
        out = np.zeros_like(self.landmarks)
        for eye in self._eyes:
            up, lo = list(eye.upper), list(eye.lower)
            out[up] = 0.9 * float(closure) * (self.landmarks[lo] - self.landmarks[up])
        return out

    def region(self, image: np.ndarray) -> np.ndarray:
        """The deformation region of a scene-sized ``image`` (a view)."""
        x0, y0, x1, y1 = self.roi
        return image[y0:y1, x0:x1]

    def render(
        self,
        region: np.ndarray,
        weights: Mapping[AuKey, float],
        *,
        blink: float = 0.0,
        closed: tuple[np.ndarray, ...] | None = None,
        out: np.ndarray | None = None,
    ) -> RenderedFace:
        """Deform the face ``region`` (:meth:`region` of the scene, in some look) by the AU ``weights``
        (multiples of each unit field: intensity × scale) and a blink ``closure``.

        Returns the deformed region (written into ``out`` when given; the input is never modified) and
        the moved landmarks (scene pixels).
        """
        x0, y0, x1, y1 = self.roi
        if region.shape[:2] != self.roi_shape:
            raise ValueError(f"region must be {self.roi_shape}, got {region.shape[:2]}")
        if blink > 0.0:
            region = region.copy()
            self.blend_blink(region, (x0, y0), blink, closed if closed is not None else self.closed_eyes(Look()))
        small = None
        for au, w in weights.items():
            if w == 0.0:
                continue
            term = self.field(au) * np.float32(w)
            small = term if small is None else small + term
        landmarks = self.landmarks
        shift = combine_shift({a: self.shift(a) for a in weights}, weights)
        if shift is not None:
            landmarks = landmarks + shift
        bshift = self.blink_shift(blink)
        if bshift is not None:
            landmarks = landmarks + bshift
        if small is None:
            if out is not None:
                np.copyto(out, region)
                return RenderedFace(out, (x0, y0), landmarks)
            return RenderedFace(region if blink > 0.0 else region.copy(), (x0, y0), landmarks)
        h, w = self.roi_shape
        disp = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        # Backward map for a forward displacement d: src(x) = x - d(src(x)); one fixed-point step.
        first = self._grid - disp
        disp_at = cv2.remap(disp, first[..., 0], first[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mapping = self._grid - disp_at
        img = cv2.remap(region, mapping[..., 0], mapping[..., 1], cv2.INTER_LINEAR,
                        dst=out, borderMode=cv2.BORDER_REPLICATE)
        return RenderedFace(img, (x0, y0), landmarks)


def _scaled_frame(frame: FaceFrame, s: float) -> FaceFrame:
    return FaceFrame(frame.left_eye * s, frame.right_eye * s, frame.ex, frame.ey, frame.mid * s, frame.iod * s)
