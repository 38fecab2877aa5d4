"""Facial Action Units as smooth displacement fields on MediaPipe face-mesh landmarks, and class schemes.

Each Action Unit (AU, FACS) is a few *pushes*: a Gaussian radial-basis displacement centred on the mean of
some landmarks (MediaPipe's 478-point mesh), moving skin "outward" (away from the face midline) and "up"
(towards the forehead) in the face's own frame, in units of the inter-ocular distance (IOD). A face at any
size, position or roll therefore gets the same expression. Fields are *relative*: the synthesiser scales a
whole AU combination so its largest landmark displacement is the amplitude it drew (a few pixels on a
128-px crop for a micro-expression), so no class is told apart by its size.

A class scheme lists, per class, several AU recipes (with weights): negative is sometimes AU4 alone,
sometimes AU14+AU15, and so on, so a model has to look at *where* and *how* the face moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.datasets.classes import SCHEMES as DATASET_SCHEMES

__all__ = [
    "ACTION_UNITS",
    "LEFT_EYE",
    "PINS",
    "RIGHT_EYE",
    "SCHEMES",
    "SIDES",
    "TALK_AUS",
    "ActionUnit",
    "AuError",
    "ExpressionScheme",
    "ExpressionClass",
    "EyeIndices",
    "FaceFrame",
    "Push",
    "au_field",
    "au_landmark_shift",
    "format_aus",
    "get_scheme",
    "register_scheme",
]


class AuError(ValueError):
    """An unknown Action Unit or class scheme, or a malformed recipe."""


# MediaPipe face-mesh landmark groups. "R" = the subject's right (image-left in a frontal, unmirrored view);
# the field code never relies on that: "outward" is decided per anchor from where it lies on the face.
R_BROW_INNER = (55, 65, 107, 66)
L_BROW_INNER = (285, 295, 336, 296)
R_BROW_MID = (52, 105, 65)
L_BROW_MID = (282, 334, 295)
R_BROW_OUTER = (46, 53, 70, 63)
L_BROW_OUTER = (276, 283, 300, 293)
R_UPPER_LID = (160, 159, 158)
L_UPPER_LID = (387, 386, 385)
R_LOWER_LID = (144, 145, 153)
L_LOWER_LID = (373, 374, 380)
R_CHEEK = (117, 50, 123)
L_CHEEK = (346, 280, 352)
R_CHEEK_LOW = (205, 206)
L_CHEEK_LOW = (425, 426)
R_NOSE_WING = (129, 48, 64)
L_NOSE_WING = (358, 278, 294)
NOSE_BRIDGE = (197, 195)
GLABELLA = (9, 8)
R_NASOLABIAL = (165, 92)
L_NASOLABIAL = (391, 322)
R_UPPER_LIP = (40, 39, 37)
L_UPPER_LIP = (270, 269, 267)
UPPER_LIP_MID = (0, 13)
LOWER_LIP_MID = (17, 14)
R_LOWER_LIP = (91, 84, 181)
L_LOWER_LIP = (321, 314, 405)
R_LIP_CORNER = (61,)
L_LIP_CORNER = (291,)
CHIN = (18, 200, 199)
JAW = (175, 152, 199)
NOSE_TIP = (1, 4)

@dataclass(frozen=True)
class EyeIndices:
    """One eye's contour: corners, and upper/lower lid points both from the outer to the inner corner."""

    outer: int
    inner: int
    upper: tuple[int, ...]
    lower: tuple[int, ...]

    @property
    def contour(self) -> tuple[int, ...]:
        return (self.outer, self.inner, *self.upper, *self.lower)


# Eye contours — also used for blinks (upper[i] closes onto lower[i]).
RIGHT_EYE = EyeIndices(33, 133, (246, 161, 160, 159, 158, 157, 173), (7, 163, 144, 145, 153, 154, 155))
LEFT_EYE = EyeIndices(263, 362, (466, 388, 387, 386, 385, 384, 398), (249, 390, 373, 374, 380, 381, 382))
_EYE_CENTRE_IDS = (RIGHT_EYE.contour, LEFT_EYE.contour)


@dataclass(frozen=True)
class Push:
    """One Gaussian-RBF displacement at the mean of ``landmarks``: ``outward`` and ``up`` in IOD units at
    full intensity (outward = away from the face midline), width ``sigma`` in IOD units."""

    landmarks: tuple[int, ...]
    outward: float
    up: float
    sigma: float


@dataclass(frozen=True)
class ActionUnit:
    """A FACS Action Unit: number, name and the pushes that make it."""

    number: int
    name: str
    pushes: tuple[Push, ...]


def _both(right: tuple[int, ...], left: tuple[int, ...], outward: float, up: float, sigma: float) -> tuple[Push, Push]:
    return Push(right, outward, up, sigma), Push(left, outward, up, sigma)


def _au(number: int, name: str, *pushes: Push | tuple[Push, ...]) -> ActionUnit:
    flat: list[Push] = []
    for p in pushes:
        flat.extend(p if isinstance(p, tuple) else (p,))
    return ActionUnit(number, name, tuple(flat))


ACTION_UNITS: dict[int, ActionUnit] = {
    au.number: au
    for au in (
        _au(1, "inner brow raiser", _both(R_BROW_INNER, L_BROW_INNER, -0.03, 0.10, 0.17),
            Push(GLABELLA, 0.0, 0.03, 0.18)),
        _au(2, "outer brow raiser", _both(R_BROW_OUTER, L_BROW_OUTER, 0.02, 0.10, 0.17)),
        _au(4, "brow lowerer", _both(R_BROW_INNER, L_BROW_INNER, -0.07, -0.06, 0.15),
            _both(R_BROW_MID, L_BROW_MID, -0.03, -0.05, 0.17), Push(GLABELLA, 0.0, -0.02, 0.14)),
        _au(5, "upper lid raiser", _both(R_UPPER_LID, L_UPPER_LID, 0.0, 0.10, 0.11)),
        _au(6, "cheek raiser", _both(R_CHEEK, L_CHEEK, 0.01, 0.10, 0.26),
            _both(R_LOWER_LID, L_LOWER_LID, 0.0, 0.05, 0.10)),
        _au(7, "lid tightener", _both(R_LOWER_LID, L_LOWER_LID, 0.0, 0.08, 0.10),
            _both(R_UPPER_LID, L_UPPER_LID, 0.0, -0.03, 0.09)),
        _au(9, "nose wrinkler", _both(R_NOSE_WING, L_NOSE_WING, -0.01, 0.09, 0.15),
            Push(NOSE_BRIDGE, 0.0, 0.05, 0.14), _both(R_BROW_INNER, L_BROW_INNER, -0.02, -0.04, 0.16),
            Push(UPPER_LIP_MID, 0.0, 0.04, 0.14)),
        _au(10, "upper lip raiser", _both(R_UPPER_LIP, L_UPPER_LIP, 0.0, 0.10, 0.15),
            _both(R_NASOLABIAL, L_NASOLABIAL, 0.01, 0.05, 0.16)),
        _au(12, "lip corner puller", _both(R_LIP_CORNER, L_LIP_CORNER, 0.07, 0.08, 0.20),
            _both(R_CHEEK_LOW, L_CHEEK_LOW, 0.03, 0.04, 0.20)),
        _au(14, "dimpler", _both(R_LIP_CORNER, L_LIP_CORNER, -0.08, 0.02, 0.13),
            _both(R_CHEEK_LOW, L_CHEEK_LOW, -0.02, 0.0, 0.15)),
        _au(15, "lip corner depressor", _both(R_LIP_CORNER, L_LIP_CORNER, 0.01, -0.10, 0.18),
            _both(R_LOWER_LIP, L_LOWER_LIP, 0.0, -0.04, 0.14)),
        _au(17, "chin raiser", Push(CHIN, 0.0, 0.10, 0.28), Push(LOWER_LIP_MID, 0.0, 0.05, 0.14)),
        _au(20, "lip stretcher", _both(R_LIP_CORNER, L_LIP_CORNER, 0.10, -0.02, 0.18)),
        _au(23, "lip tightener", Push(UPPER_LIP_MID, 0.0, -0.04, 0.12), Push(LOWER_LIP_MID, 0.0, 0.05, 0.12),
            _both(R_LIP_CORNER, L_LIP_CORNER, -0.05, 0.0, 0.12)),
        _au(25, "lips part", Push(LOWER_LIP_MID, 0.0, -0.08, 0.16), Push(UPPER_LIP_MID, 0.0, 0.02, 0.12)),
        _au(26, "jaw drop", Push(JAW, 0.0, -0.10, 0.45), Push(LOWER_LIP_MID, 0.0, -0.06, 0.20)),
    )
}

# Points that facial muscles barely move: the eyeballs (iris centres) and the nose tip. Every field is
# multiplied by Π (1 − strength · Gaussian(sigma × IOD)) around them, so an AU moves lids but not irises,
# and alignment anchors (eye centres, nose tip) stay put as they do on a real face.
PINS: tuple[tuple[int, float, float], ...] = ((468, 0.07, 1.0), (473, 0.07, 1.0), (1, 0.08, 0.7))

# AUs a talking mouth cycles through (distractor, not an expression).
TALK_AUS: tuple[int, ...] = (25, 26, 23)


def format_aus(aus: Sequence[int]) -> str:
    """``[12, 6]`` → ``'12+6'`` (the annotation column format, order kept)."""
    return "+".join(str(int(a)) for a in aus)


# --- geometry ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceFrame:
    """The face's own frame: eye centres, unit axes (``ex`` image-left eye → image-right eye, ``ey`` down
    the face), midpoint between the eyes and inter-ocular distance (pixels)."""

    left_eye: np.ndarray
    right_eye: np.ndarray
    ex: np.ndarray
    ey: np.ndarray
    mid: np.ndarray
    iod: float

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> FaceFrame:
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.ndim != 2 or lm.shape[0] < 478 or lm.shape[1] != 2:
            raise AuError(f"need MediaPipe face-mesh landmarks (478, 2), got shape {lm.shape}")
        a = lm[list(_EYE_CENTRE_IDS[0])].mean(0)
        b = lm[list(_EYE_CENTRE_IDS[1])].mean(0)
        left, right = (a, b) if a[0] <= b[0] else (b, a)
        d = right - left
        iod = float(np.hypot(*d))
        if iod < 1e-6:
            raise AuError("eye centres coincide; landmarks are degenerate")
        ex = d / iod
        ey = np.array([-ex[1], ex[0]])  # ex rotated +90° in image coordinates (y down): points chin-wards
        return cls(left, right, ex, ey, (left + right) / 2.0, iod)

    def side_of(self, centre: np.ndarray) -> float:
        """-1 for a point on the image-left half of the face, +1 on the image-right half, 0 on the midline."""
        side = float((centre - self.mid) @ self.ex)
        return 0.0 if abs(side) < 0.05 * self.iod else float(np.sign(side))

    def push_vector(self, centre: np.ndarray, push: Push) -> np.ndarray:
        """Pixel displacement of ``push`` at full intensity, anchored at ``centre``."""
        return self.iod * (push.outward * self.side_of(centre) * self.ex - push.up * self.ey)


SIDES = ("both", "left", "right")  # which half of the face an AU moves ("left" = image-left)
_SIDE_SIGN = {"left": -1.0, "right": 1.0}


def _side_gain(frame: FaceFrame, centre: np.ndarray, side: str) -> float:
    """How much of a push anchored at ``centre`` a one-sided AU keeps: all on its side, none on the other,
    half on the midline (a one-sided brow raise still lifts the glabella a little)."""
    if side == "both":
        return 1.0
    if side not in _SIDE_SIGN:
        raise AuError(f"unknown side {side!r}; choose one of {SIDES}")
    s = frame.side_of(centre)
    return 0.5 if s == 0.0 else float(s == _SIDE_SIGN[side])


def _resolve(au: int | ActionUnit) -> ActionUnit:
    if isinstance(au, ActionUnit):
        return au
    try:
        return ACTION_UNITS[int(au)]
    except KeyError:
        raise AuError(f"unknown Action Unit {au!r}; known: {sorted(ACTION_UNITS)}") from None


def au_field(
    landmarks: np.ndarray, au: int | ActionUnit, *, origin: tuple[float, float], shape: tuple[int, int],
    frame: FaceFrame | None = None, side: str = "both",
) -> np.ndarray:
    """The forward displacement field (h, w, 2) float32 of ``au`` at full intensity on a pixel grid.

    ``origin`` is the image position (x, y) of grid pixel (0, 0); ``shape`` is (h, w). Content at ``p``
    moves to ``p + field(p)``. ``side`` restricts the AU to one half of the face (see :data:`SIDES`).
    """
    unit = _resolve(au)
    lm = np.asarray(landmarks, dtype=np.float64)
    frame = frame or FaceFrame.from_landmarks(lm)
    h, w = shape
    xs = np.arange(w, dtype=np.float32) + np.float32(origin[0])
    ys = np.arange(h, dtype=np.float32) + np.float32(origin[1])
    out = np.zeros((h, w, 2), np.float32)
    for push in unit.pushes:
        c = lm[list(push.landmarks)].mean(0)
        gain = _side_gain(frame, c, side)
        if gain == 0.0:
            continue
        v = (gain * frame.push_vector(c, push)).astype(np.float32)
        g = _gauss_grid(xs, ys, c, push.sigma * frame.iod)
        out[..., 0] += v[0] * g
        out[..., 1] += v[1] * g
    for index, sigma, strength in PINS:
        out *= (1.0 - np.float32(strength) * _gauss_grid(xs, ys, lm[index], sigma * frame.iod))[..., None]
    return out


def _gauss_grid(xs: np.ndarray, ys: np.ndarray, c: np.ndarray, sigma: float) -> np.ndarray:
    s2 = np.float32(2.0 * sigma**2)
    gx = np.exp(-((xs - np.float32(c[0])) ** 2) / s2)
    gy = np.exp(-((ys - np.float32(c[1])) ** 2) / s2)
    return np.outer(gy, gx)  # separable Gaussian


def _gauss_points(points: np.ndarray, c: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-((points - c) ** 2).sum(1) / (2.0 * sigma**2))


def au_landmark_shift(landmarks: np.ndarray, au: int | ActionUnit, *, frame: FaceFrame | None = None,
                      side: str = "both") -> np.ndarray:
    """The same field evaluated at the landmarks themselves: (N, 2) float64 pixel displacements."""
    unit = _resolve(au)
    lm = np.asarray(landmarks, dtype=np.float64)
    frame = frame or FaceFrame.from_landmarks(lm)
    out = np.zeros_like(lm)
    for push in unit.pushes:
        c = lm[list(push.landmarks)].mean(0)
        v = _side_gain(frame, c, side) * frame.push_vector(c, push)
        out += _gauss_points(lm, c, push.sigma * frame.iod)[:, None] * v[None, :]
    for index, sigma, strength in PINS:
        out *= (1.0 - strength * _gauss_points(lm, lm[index], sigma * frame.iod))[:, None]
    return out


# --- class schemes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpressionClass:
    """One class and its AU recipes: (AUs, relative weight). A clip draws one recipe, then per-AU intensities."""

    name: str
    recipes: tuple[tuple[tuple[int, ...], float], ...]

    def __post_init__(self) -> None:
        if not self.recipes:
            raise AuError(f"class {self.name!r} has no AU recipe")
        for aus, weight in self.recipes:
            if not aus or weight <= 0:
                raise AuError(f"class {self.name!r}: recipe {aus!r} needs AUs and a weight > 0")
            for a in aus:
                _resolve(a)


@dataclass(frozen=True)
class ExpressionScheme:
    """How the generator renders each class of a class scheme: AU recipes per label.

    The labels and their order belong to the dataset scheme of the same name in
    ``training.datasets.classes`` (the one list models are trained on); registration checks they agree.
    """

    name: str
    classes: tuple[ExpressionClass, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def get(self, label: str) -> ExpressionClass:
        for c in self.classes:
            if c.name == label:
                return c
        raise AuError(f"class {label!r} is not in scheme {self.name!r} {self.labels}")


SCHEMES: dict[str, ExpressionScheme] = {}


def register_scheme(scheme: ExpressionScheme) -> ExpressionScheme:
    """Add a scheme under its name (a duplicate name is an error)."""
    if scheme.name in SCHEMES:
        raise AuError(f"class scheme {scheme.name!r} is already registered")
    if len(set(scheme.labels)) != len(scheme.labels) or not scheme.labels:
        raise AuError(f"class scheme {scheme.name!r} needs distinct class names, got {scheme.labels}")

    dataset = DATASET_SCHEMES.get(scheme.name)
    if dataset is not None and tuple(dataset.labels) != scheme.labels:
        raise AuError(f"class scheme {scheme.name!r}: labels {scheme.labels} differ from the dataset scheme's "
                      f"{tuple(dataset.labels)}")
    SCHEMES[scheme.name] = scheme
    return scheme


def get_scheme(name: str | ExpressionScheme) -> ExpressionScheme:
    """A registered scheme by name, or the scheme itself."""
    if isinstance(name, ExpressionScheme):
        return name
    try:
        return SCHEMES[name]
    except KeyError:
        raise AuError(f"unknown class scheme {name!r}; choose one of {sorted(SCHEMES)}") from None


_POSITIVE = (((12,), 3.0), ((6, 12), 4.0), ((12, 25), 1.0), ((6,), 1.0))
_SURPRISE = (((1, 2), 4.0), ((1, 2, 5), 3.0), ((5,), 1.0), ((1, 2, 25), 1.0), ((1,), 1.0))

register_scheme(ExpressionScheme("megc3", (
    ExpressionClass("negative", (
        ((4,), 3.0), ((4, 7), 2.0), ((14,), 1.5), ((15,), 1.5), ((14, 15), 1.5), ((4, 9), 1.5), ((9,), 1.0),
        ((10,), 1.0), ((4, 15), 1.0), ((15, 17), 1.0), ((20,), 0.5), ((4, 14), 1.0),
    )),
    ExpressionClass("positive", _POSITIVE),
    ExpressionClass("surprise", _SURPRISE),
)))

# CASME-II 5-class scheme (labels as in training.datasets.classes "casme5").
register_scheme(ExpressionScheme("casme5", (
    ExpressionClass("happiness", _POSITIVE),
    ExpressionClass("disgust", (((9,), 2.0), ((4, 9), 2.0), ((10,), 2.0), ((4, 7), 1.0), ((9, 10), 1.0))),
    ExpressionClass("repression", (((14,), 2.0), ((15,), 1.5), ((17,), 1.5), ((14, 17), 1.0), ((15, 17), 1.0))),
    ExpressionClass("surprise", _SURPRISE),
    ExpressionClass("others", (((4,), 2.0), ((7,), 1.5), ((20,), 1.0), ((23,), 1.0), ((1, 4), 1.0))),
)))
