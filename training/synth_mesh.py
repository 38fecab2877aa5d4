"""The "mesh" render family of ``mer-synth onto``: expressions as deformations of the tracked face mesh.

A second way of moving skin, so that a spotter trained on renderings does not just learn one renderer (the
"warp" family of :mod:`training.synth_onto` adds Gaussian RBF fields per Action Unit). Per expression:

* **field** — each push of an Action Unit (:data:`training.aus.ACTION_UNITS`: its anchor landmarks and its
  direction) moves MediaPipe's landmarks by a raised-cosine falloff of their distance *along the face mesh*
  from the nearest anchor (the mesh's holes at the eyes and mouth keep lids and lips apart). The falloff's
  half-value distance (``extent``, 0.06-0.45 IOD) is drawn per expression, each push's direction is turned by
  a random angle, the two sides get unequal gains, and one-sided expressions move one half of the face. The
  irises stay (eyeballs do not move with skin). The whole is scaled so that its largest landmark displacement
  is the amplitude × the frame's inter-ocular distance (IOD), as in the warp family.
* **warp** — piecewise affine over a Delaunay triangulation of the moved landmarks (irises left out) plus a ring
  of fixed points around the face, so nothing moves outside it: each pixel of a triangle with a moved corner
  samples the source where its barycentric coordinates put it in the triangle's unmoved corners.
* **shading** — brightness × (1 + k · divergence of the displacement), the divergence taken per landmark over
  the skin's triangles (MediaPipe's tesselation) and interpolated like the warp: compressed skin darkens,
  stretched skin brightens (k drawn per expression; at most ±10 %).
* **profiles** — linear, smoothstep, skewed (fast rise, long tail) or with a short hold at the apex; the rise
  is usually shorter than the fall; onset, apex and offset fall on frames.
* **camera** — sensor noise and JPEG compression at levels drawn per video, on every frame
  (:class:`Camera`, applied by :func:`training.synth_onto.render_onto`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import Delaunay

from realtime.landmarks import mediapipe_module
from training.aus import ACTION_UNITS, LEFT_EYE, RIGHT_EYE, SIDES, FaceFrame
from training.synth_options import SynthError, SynthOptions
from training.synth_timing import Expression, draw_expression

__all__ = [
    "PROFILES",
    "Camera",
    "MeshExpression",
    "MeshOptions",
    "MeshWarp",
    "draw_mesh_expression",
    "mesh_shift",
    "render_mesh",
]

Range = tuple[float, float]
PROFILES = ("linear", "smoothstep", "skewed", "hold")  # intensity profiles of mesh micro-expressions

_RING_IOD = 0.6  # the fixed ring (an ellipse around the landmarks) lies at least this far outside them (IOD)
_RING_STEP_IOD = 0.25  # spacing of the ring's points (IOD)
_MIDLINE_IOD = 0.05  # one-sided fields fade out over ± this much around the face's midline
_BALANCE_IOD = 0.15  # the side imbalance reaches its full value this far from the midline
_MAX_SHADE = 0.1  # shading changes brightness by at most this fraction
_STILL_PX = 1e-3  # mesh points moved less than this (pixels) count as still
_MIN_ENVELOPE = 1e-9  # an envelope below this is no movement (float noise at onset/offset)
_IRISES = slice(468, 478)  # MediaPipe's iris points: eyeballs, not skin (left out of the warp's triangles)
_MAX_CLOSING = 0.7  # eyelids and lips close at most this fraction of their opening (more would fold the mesh)
# Points that close onto each other across an opening (upper, lower): eyelids and the inner lips.
_OPENINGS = (*zip(RIGHT_EYE.upper, RIGHT_EYE.lower, strict=True), *zip(LEFT_EYE.upper, LEFT_EYE.lower, strict=True),
             (191, 95), (80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318), (415, 324))


@dataclass(frozen=True)
class MeshOptions:
    """How the mesh family draws expressions and camera effects. Distances in IOD, times in seconds."""

    extent_iod: Range = (0.06, 0.45)  # half-value distance of the field along the mesh, drawn log-uniformly
    max_strain: float = 0.5  # the extent grows with the amplitude so skin is compressed or stretched at most this
    jitter_deg: float = 25.0  # each push's direction turned by up to ± this (degrees)
    imbalance: float = 0.35  # one side's gain is up to this much above 1, the other's as much below
    shading: Range = (0.05, 0.4)  # k: brightness × (1 + k · divergence)
    profiles: tuple[str, ...] = PROFILES  # drawn with equal chance
    rise_fraction: Range = (0.2, 0.6)  # onset→apex as a fraction of onset→offset (less the hold)
    skewed_rise_fraction: Range = (0.1, 0.3)  # ... of a skewed profile
    hold_s: Range = (0.03, 0.1)  # apex plateau of the "hold" profile (at least 2 frames)
    noise_sigma: Range = (0.0, 3.0)  # sensor noise per video, grey levels (standard deviation)
    quality: tuple[int, int] = (70, 95)  # JPEG quality per video

    def __post_init__(self) -> None:
        def bad(msg: str) -> SynthError:
            return SynthError(f"invalid mesh setting: {msg}")

        for name in ("extent_iod", "shading", "rise_fraction", "skewed_rise_fraction", "hold_s", "noise_sigma"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi or not math.isfinite(hi):
                raise bad(f"{name} must be a range 0 <= lo <= hi, got {(lo, hi)}")
        if self.extent_iod[0] <= 0:
            raise bad(f"extent_iod must be > 0, got {self.extent_iod}")
        for name in ("rise_fraction", "skewed_rise_fraction"):
            if getattr(self, name)[1] >= 1:
                raise bad(f"{name} must stay below 1, got {getattr(self, name)}")
        if not 0 < self.max_strain < 1:
            raise bad(f"max_strain must be within 0..1 (exclusive), got {self.max_strain}")
        if not 0 <= self.jitter_deg <= 90:
            raise bad(f"jitter_deg must be within 0..90, got {self.jitter_deg}")
        if not 0 <= self.imbalance < 1:
            raise bad(f"imbalance must be within 0..1, got {self.imbalance}")
        if not self.profiles or any(p not in PROFILES for p in self.profiles):
            raise bad(f"profiles must be some of {PROFILES}, got {self.profiles}")
        lo, hi = self.quality
        if not 1 <= lo <= hi <= 100:
            raise bad(f"quality must be a range 1 <= lo <= hi <= 100, got {self.quality}")


@dataclass(frozen=True)
class MeshExpression(Expression):
    """An expression of the mesh family: the AUs, amplitude and timing of :class:`Expression`, plus how its
    field is shaped."""

    extent: float = 0.2  # half-value distance of the field along the mesh (IOD)
    turns: tuple[tuple[int, tuple[float, ...]], ...] = ()  # per AU: each push's direction turn (radians)
    balance: float = 0.0  # image-right gain 1 + balance, image-left 1 - balance
    shading: float = 0.0  # k of brightness × (1 + k · divergence)
    profile: str = "smoothstep"  # one of PROFILES, or "macro"

    def turn(self, au: int, push: int) -> float:
        """The direction turn (radians) of push ``push`` of ``au``."""
        for a, angles in self.turns:
            if a == au:
                return angles[push] if push < len(angles) else 0.0
        return 0.0


# --- drawing -----------------------------------------------------------------------------------------------


def draw_mesh_expression(rng: np.random.Generator, settings: SynthOptions, options: MeshOptions, label: str,
                         kind: str) -> MeshExpression:
    """An expression of class ``label`` (``kind`` micro or macro) starting at t = 0, its onset, apex and offset
    on frames of ``settings.fps``. Recipe, intensities and amplitude as :func:`draw_expression` draws them."""
    base = draw_expression(rng, settings, label, kind)
    fps = settings.fps
    if kind == "micro":
        rise, hold, fall, profile, easing = _micro_timing(rng, settings, options)
    else:  # macro: the generator's timing, on frames (an even hold: the apex is its middle frame)
        rise, fall = max(1, round(base.rise_s * fps)), max(1, round(base.fall_s * fps))
        hold = 2 * round(base.hold_s * fps / 2.0)
        profile, easing = "macro", (base.ease_in, base.ease_in_power, base.ease_out, base.ease_out_power)
    lo, hi = options.extent_iod
    extent = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    # a raised cosine of half-value distance h has slope pi/(4h): keep amplitude × slope within max_strain
    extent = max(extent, math.pi * base.amplitude / (4.0 * options.max_strain))
    jitter = math.radians(options.jitter_deg)
    turns = tuple((au, tuple(float(a) for a in rng.uniform(-jitter, jitter, len(ACTION_UNITS[au].pushes))))
                  for au in base.aus)
    balance = float(rng.uniform(-options.imbalance, options.imbalance))
    shading = float(rng.uniform(*options.shading))
    return MeshExpression(base.kind, base.label, base.aus, base.intensities, base.amplitude, 0.0, rise / fps,
                          hold / fps, fall / fps, *easing, side="both", extent=extent, turns=turns,
                          balance=balance, shading=shading, profile=profile)


def _micro_timing(rng: np.random.Generator, settings: SynthOptions, options: MeshOptions
                  ) -> tuple[int, int, int, str, tuple[str, float, str, float]]:
    """(rise, hold, fall) in frames, the profile and its easings (in, power, out, power)."""
    fps = settings.fps
    lo_s, hi_s = settings.micro_duration_s
    lo = max(math.ceil(lo_s * fps - 1e-9), 2)
    hi = max(math.floor(hi_s * fps + 1e-9), lo)  # annotated frames never exceed the longest duration
    n = int(np.clip(round(rng.uniform(lo_s, hi_s) * fps), lo, hi))
    profile = options.profiles[int(rng.integers(len(options.profiles)))]
    hold = 0
    if profile == "hold":
        hold = 2 * max(1, round(rng.uniform(*options.hold_s) * fps / 2.0))
        hold = min(hold, (n - 2) // 2 * 2)  # at least a frame of rise and of fall
    fraction = options.skewed_rise_fraction if profile == "skewed" else options.rise_fraction
    rise = int(np.clip(round(rng.uniform(*fraction) * (n - hold)), 1, n - hold - 1))
    easing: tuple[str, float, str, float]
    if profile == "linear":
        easing = ("linear", 1.0, "linear", 1.0)
    elif profile == "skewed":  # steep, concave rise; a fall that drops at once and tails off slowly
        easing = ("power", float(rng.uniform(0.5, 0.8)), "power", float(rng.uniform(1.6, 2.6)))
    else:
        easing = ("smoothstep", 2.0, "smoothstep", 2.0)
    return rise, hold, n - hold - rise, profile, easing


# --- the field ---------------------------------------------------------------------------------------------


@functools.cache
def _mesh_triangles() -> np.ndarray:
    """(F, 3) MediaPipe's face-mesh tesselation (skin only: it has holes at the eyes and the mouth)."""
    connections = mediapipe_module().tasks.vision.FaceLandmarksConnections.FACE_LANDMARKS_TESSELATION
    return np.array([[connections[i].start, connections[i + 1].start, connections[i + 2].start]
                     for i in range(0, len(connections) - 2, 3)], dtype=np.int32)


@functools.cache
def _mesh_edges() -> np.ndarray:
    """(E, 2) landmark pairs joined by the tesselation's triangles."""
    t = _mesh_triangles()
    pairs = np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), axis=1)
    return np.unique(pairs, axis=0)


def _side_gains(u: np.ndarray, side: str, balance: float) -> np.ndarray:
    """Per landmark at ``u`` (IOD across the face, < 0 image-left): the share of the field it keeps."""
    gain = 1.0 + balance * np.clip(u / _BALANCE_IOD, -1.0, 1.0)
    if side == "both":
        return gain
    if side not in SIDES:
        raise SynthError(f"unknown side {side!r}; choose one of {SIDES}")
    s = np.clip(0.5 + (u if side == "right" else -u) / (2.0 * _MIDLINE_IOD), 0.0, 1.0)
    return gain * s * s * (3.0 - 2.0 * s)  # all on its side, half on the midline, none on the other side


def mesh_shift(landmarks: np.ndarray, expression: MeshExpression, *, frame: FaceFrame | None = None
               ) -> np.ndarray:
    """(N, 2) pixel displacement of the landmarks at the apex of ``expression``: its largest norm is the
    amplitude × the IOD of this face."""
    lm = np.asarray(landmarks, dtype=np.float64)
    frame = frame or FaceFrame.from_landmarks(lm)
    edges = _mesh_edges()
    lengths = np.hypot(*(lm[edges[:, 0]] - lm[edges[:, 1]]).T) / frame.iod + 1e-9  # 0 would drop the edge
    graph = csr_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(len(lm), len(lm)))
    pushes = [(au, k, intensity, push) for au, intensity in zip(expression.aus, expression.intensities, strict=True)
              for k, push in enumerate(ACTION_UNITS[au].pushes)]
    if not pushes:
        return np.zeros_like(lm)
    anchors = sorted({i for *_, push in pushes for i in push.landmarks})
    row = {i: r for r, i in enumerate(anchors)}
    reach = 2.0 * expression.extent
    dist = dijkstra(graph, directed=False, indices=anchors, limit=reach)  # (anchors, N), inf beyond reach
    out = np.zeros_like(lm)
    for au, k, intensity, push in pushes:
        d = dist[[row[i] for i in push.landmarks]].min(0)
        weight = 0.5 + 0.5 * np.cos(np.pi * np.minimum(d / reach, 1.0))  # 1 at the anchors, 1/2 at extent
        centre = lm[list(push.landmarks)].mean(0)
        v = frame.push_vector(centre, push)
        a = expression.turn(au, k)
        v = np.array([math.cos(a) * v[0] - math.sin(a) * v[1], math.sin(a) * v[0] + math.cos(a) * v[1]])
        out += (intensity * weight)[:, None] * v[None, :]
    u = (lm - frame.mid) @ frame.ex / frame.iod
    out *= _side_gains(u, expression.side, expression.balance)[:, None]
    out[_IRISES] = 0.0
    target = expression.amplitude * frame.iod
    for _ in range(4):  # scale to the amplitude, keep lids and lips from crossing, scale again
        peak = float(np.hypot(out[:, 0], out[:, 1]).max())
        if peak <= 0:
            return out
        out *= target / peak
        if not _limit_closing(lm, out, frame):
            return out
    return out * (target / float(np.hypot(out[:, 0], out[:, 1]).max()))


def _limit_closing(lm: np.ndarray, shift: np.ndarray, frame: FaceFrame) -> bool:
    """Shorten (in place) the movements that would close an eye or the lips by more than ``_MAX_CLOSING`` of
    the opening (measured down the face); True if any was."""
    upper, lower = (np.array(side) for side in zip(*_OPENINGS, strict=True))
    gap = np.maximum((lm[lower] - lm[upper]) @ frame.ey, 0.0)
    su, sl = shift[upper] @ frame.ey, shift[lower] @ frame.ey
    closing = su - sl
    over = closing > _MAX_CLOSING * gap + 1e-9
    if not over.any():
        return False
    f = np.where(over, _MAX_CLOSING * gap / np.where(over, closing, 1.0), 1.0)
    shift[upper] += ((f - 1.0) * su)[:, None] * frame.ey
    shift[lower] += ((f - 1.0) * sl)[:, None] * frame.ey
    return True


# --- the warp ----------------------------------------------------------------------------------------------


class MeshWarp:
    """One frame's face mesh ready for piecewise-affine warps: the landmarks plus a ring of fixed points around
    the face (nothing moves outside it)."""

    def __init__(self, landmarks: np.ndarray, shape: tuple[int, int]) -> None:
        lm = np.asarray(landmarks, dtype=np.float64)
        self.frame = FaceFrame.from_landmarks(lm)
        h, w = shape
        ring = _ring(lm, _RING_IOD * self.frame.iod, _RING_STEP_IOD * self.frame.iod)
        lo, hi = np.floor(ring.min(0)), np.ceil(ring.max(0))
        x0, y0 = int(max(lo[0], 0)), int(max(lo[1], 0))
        x1, y1 = int(min(hi[0] + 1, w)), int(min(hi[1] + 1, h))
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise SynthError("the face lies outside the frame")
        self.roi = (x0, y0, x1, y1)  # pixels the warp may change (x1, y1 exclusive)
        self.points = np.vstack([lm, ring])
        self._used = np.delete(np.arange(len(self.points)), np.arange(len(lm))[_IRISES])  # irises: no skin

    def _pad(self, per_landmark: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((len(self.points), *per_landmark.shape[1:]), fill, dtype=np.float64)
        out[: len(per_landmark)] = per_landmark
        return out

    def divergence(self, shift: np.ndarray) -> np.ndarray:
        """Per landmark: the divergence of the displacement that moves the landmarks by ``shift``, piecewise
        affine over the skin's triangles (the face-mesh tesselation), area-weighted over the triangles around
        it; < 0 where skin is compressed, 0 off the skin (irises, the ring)."""
        faces = _mesh_triangles()
        p = self.points[faces]
        d = np.asarray(shift, dtype=np.float64)[faces]
        e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        m1, m2 = d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]
        det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
        # trace of [m1 m2] @ inverse([e1 e2]), times the signed double area: no division by a flat triangle
        weighted = m1[:, 0] * e2[:, 1] - m2[:, 0] * e1[:, 1] + m2[:, 1] * e1[:, 0] - m1[:, 1] * e2[:, 0]
        area = np.abs(det)
        total = np.bincount(faces.ravel(), np.repeat(np.sign(det) * weighted, 3), len(shift))
        around = np.bincount(faces.ravel(), np.repeat(area, 3), len(shift))
        return np.divide(total, around, out=np.zeros_like(total), where=around > 1e-9)

    def apply(self, image: np.ndarray, shift: np.ndarray, gain: np.ndarray | None = None) -> np.ndarray:
        """``image`` (a new array) with the landmarks moved by ``shift`` (N, 2) pixels and its brightness
        multiplied by ``gain`` (per mesh point; None: 1).

        The moved points are triangulated again (Delaunay), so every pixel lies in exactly one triangle even
        where skin folds; it takes its source position and gain from the triangle's corners with its barycentric
        coordinates: piecewise affine, and exact at the mesh points."""
        d = self._pad(np.asarray(shift, dtype=np.float64), 0.0)
        d[np.hypot(d[:, 0], d[:, 1]) < _STILL_PX] = 0.0
        g = np.ones(len(self.points)) if gain is None else self._pad(np.asarray(gain, dtype=np.float64), 1.0)
        active = (d != 0.0).any(1) | (np.abs(g - 1.0) > 1e-6)
        if not active.any():
            return image.copy()
        moved = self.points + d
        mesh = Delaunay(moved[self._used], qhull_options="QJ")  # joggled: no flat triangles
        corners = self._used[mesh.simplices]
        table = _triangle_table(moved[corners], self.points[corners], g[corners])
        changing = np.flatnonzero(active[corners].any(1))  # triangles that move or shade; the rest stay
        x0, y0, x1, y1 = self.roi
        index = np.full((y1 - y0, x1 - x0), -1, np.int32)
        outline = np.round((moved[corners[changing]] - (x0, y0)) * 16.0).astype(np.int32)
        for i, poly in zip(changing, outline, strict=True):  # a first guess: edge pixels go to either side
            cv2.fillConvexPoly(index, poly, (int(i),), cv2.LINE_8, 4)
        ys, xs = np.nonzero(index >= 0)
        if not len(ys):
            return image.copy()
        which = index[ys, xs]
        px, py = (xs + x0).astype(np.float32), (ys + y0).astype(np.float32)
        lam = _barycentric(table, which, px, py)
        todo = np.flatnonzero(~(lam.min(1) >= -1e-6))
        beyond_ring = []
        for _ in range(8):  # walk a pixel outside its guess into the neighbour across the edge it is beyond
            if not len(todo):
                break
            step = mesh.neighbors[which[todo], np.argmin(lam[todo], 1)]
            beyond_ring.append(todo[step < 0])
            todo, step = todo[step >= 0], step[step >= 0]
            which[todo] = step
            lam[todo] = _barycentric(table, step, px[todo], py[todo])
            todo = todo[~(lam[todo].min(1) >= -1e-6)]
        lam[todo] = np.nan_to_num(lam[todo], nan=1.0 / 3.0).clip(0.0, 1.0)  # lost (rare): inside its guess
        lam[todo] /= np.maximum(lam[todo].sum(1, keepdims=True), 1e-6)
        row = table[which]
        l0, l1 = lam[:, 0], lam[:, 1]
        sx, sy = row[:, 6] * l0 + row[:, 8] * l1 + row[:, 10], row[:, 7] * l0 + row[:, 9] * l1 + row[:, 11]
        shade_values = row[:, 12] * l0 + row[:, 13] * l1 + row[:, 14]
        # outside the ring, or lost in a flat triangle: the pixel stays as it is
        stay = np.concatenate([*beyond_ring, todo[~np.isfinite(sx[todo] + sy[todo] + shade_values[todo])]])
        sx[stay], sy[stay], shade_values[stay] = px[stay], py[stay], 1.0
        bx0, by0, bx1, by1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        map_x, map_y = np.meshgrid(np.arange(bx0, bx1, dtype=np.float32), np.arange(by0, by1, dtype=np.float32))
        inside = (ys - by0) * (bx1 - bx0) + (xs - bx0)
        map_x.ravel()[inside] = sx - x0
        map_y.ravel()[inside] = sy - y0
        warped = cv2.remap(image[y0:y1, x0:x1], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if gain is not None:
            shade = np.ones(map_x.shape, np.float32)
            shade.ravel()[inside] = shade_values
            shaded = warped.astype(np.float32) * (shade[..., None] if warped.ndim == 3 else shade)
            warped = np.clip(shaded + 0.5, 0, 255).astype(np.uint8) if image.dtype == np.uint8 else shaded
        out = image.copy()
        out[y0 + by0 : y0 + by1, x0 + bx0 : x0 + bx1] = warped
        return out


def _triangle_table(dst: np.ndarray, src: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """(T, 15) float32 per triangle with corners a, b, c: the inverse of [a - c, b - c] (4, row-major) and c
    (2) where it lies (``dst``); a - c, b - c and c where it came from (6, ``src``); gain a - c, b - c, c (3).
    A flat triangle gets NaNs."""
    a, b, c = dst[:, 0] - dst[:, 2], dst[:, 1] - dst[:, 2], dst[:, 2]
    det = a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]
    flat = np.abs(det) < 1e-12
    det = np.where(flat, np.nan, det)
    inverse = np.stack([b[:, 1], -b[:, 0], -a[:, 1], a[:, 0]], 1) / det[:, None]
    came = np.concatenate([src[:, 0] - src[:, 2], src[:, 1] - src[:, 2], src[:, 2]], 1)
    shade = np.stack([gain[:, 0] - gain[:, 2], gain[:, 1] - gain[:, 2], gain[:, 2]], 1)
    return np.concatenate([inverse, c, came, shade], 1).astype(np.float32)


def _barycentric(table: np.ndarray, triangles: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(P, 3) barycentric coordinates of the points (x, y) in their ``triangles`` (rows of :func:`_triangle_table`;
    NaN in a flat one)."""
    t = table[triangles]
    dx, dy = x - t[:, 4], y - t[:, 5]
    l0, l1 = t[:, 0] * dx + t[:, 1] * dy, t[:, 2] * dx + t[:, 3] * dy
    return np.stack([l0, l1, 1.0 - l0 - l1], 1)


def _ring(landmarks: np.ndarray, margin: float, step: float) -> np.ndarray:
    """Points about ``step`` apart on an ellipse around the landmarks, at least ``margin`` outside them (an
    ellipse, not a box: no three points in a line, so no flat triangles along it)."""
    centre = (landmarks.min(0) + landmarks.max(0)) / 2.0
    half = np.maximum((landmarks.max(0) - landmarks.min(0)) / 2.0, 1.0)
    reach = float(np.sqrt((((landmarks - centre) / half) ** 2).sum(1)).max())  # every landmark within reach
    a, b = reach * half + margin
    n = max(8, math.ceil(math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b))) / step))  # Ramanujan
    angle = np.arange(n) * (2.0 * math.pi / n)
    return centre + np.stack([a * np.cos(angle), b * np.sin(angle)], 1)


def render_mesh(frame: np.ndarray, landmarks: np.ndarray, expressions: Sequence[MeshExpression], t: float
                ) -> np.ndarray | None:
    """``frame`` with every mesh expression active at ``t`` deformed and shaded onto the face at ``landmarks``
    (a new array), or None when none moves the face."""
    active = [(e, env) for e in expressions if (env := e.envelope(t)) > _MIN_ENVELOPE]
    if not active or np.isnan(landmarks[0, 0]):
        return None
    lm = np.asarray(landmarks, dtype=np.float64)
    warp = MeshWarp(lm, frame.shape[:2])
    shift = np.zeros_like(lm)
    shade = np.zeros(len(lm))
    for e, env in active:
        s = env * mesh_shift(lm, e, frame=warp.frame)
        shift += s
        if e.shading:
            shade += e.shading * warp.divergence(s)
    return warp.apply(frame, shift, 1.0 + np.clip(shade, -_MAX_SHADE, _MAX_SHADE))


# --- the camera ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """Camera effects of one rendered video, on every frame so they tell nothing about where expressions are:
    Gaussian sensor noise and JPEG compression."""

    noise_sigma: float  # grey levels
    quality: int  # JPEG quality (MJPG's own, or a JPEG round trip before another codec)
    seed: tuple[int, ...]

    @classmethod
    def draw(cls, seed: tuple[int, ...], options: MeshOptions) -> Camera:
        rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
        lo, hi = options.quality
        return cls(float(rng.uniform(*options.noise_sigma)), int(rng.integers(lo, hi + 1)), seed)

    def noise(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function that adds this camera's noise to each frame it is given (the frames of one video, in
        order: the noise is a seeded stream)."""
        rng = np.random.default_rng(np.random.SeedSequence([*self.seed, 1]))
        # Frames hold integers, so round(x + n) = x + round(n): draw rounded Gaussian noise, by looking up
        # uniform indices in a table of 65536 draws (a quarter of the cost of fresh Gaussians per pixel).
        table = np.round(self.noise_sigma * rng.standard_normal(1 << 16)).astype(np.int16)

        def add(frame: np.ndarray) -> np.ndarray:
            if not table.any():
                return frame
            noise = table[rng.integers(0, 1 << 16, frame.shape, dtype=np.uint16)]
            return cv2.add(frame, noise, dtype=cv2.CV_8U)  # saturates

        return add

    def compress(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` after a JPEG round trip at this camera's quality."""
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(self.quality)])
        out = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if ok else None
        if out is None:
            raise SynthError("JPEG round trip failed")
        return np.asarray(out)
