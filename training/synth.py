"""Synthetic micro-expressions on real faces, with known onset, apex and offset (the ``mer-synth`` library).

A micro-expression (ME) is a combination of Action Units (:mod:`training.aus`), each a smooth Gaussian-RBF
displacement field anchored on MediaPipe landmarks, driven by an envelope that rises onset→apex and falls
apex→offset with randomised easing; its peak landmark displacement (the amplitude) is a few per cent of
the inter-ocular distance (IOD) — 1.5 to 4 pixels on a 128-px crop. Durations, amplitudes and timing are
drawn from the *same* distributions for every class, and each class has several AU recipes, so only
*where and how* the face moves tells the classes apart.

Two sets are written (see :func:`write_dataset`):

- **recognition**: one short clip per ME with neutral context, as aligned face crops (PNG), aligned by
  :func:`core.alignment.align_face` from the generator's known landmarks plus a little per-frame
  alignment jitter and sensor noise (like CASME-II "Cropped").
- **spotting**: long webcam-like videos (mp4) with several MEs, macro-expressions and distractors: blinks,
  talking, slow head drift and quicker head moves, brightness flicker, sensor noise, compression.

Everything is deterministic for a seed: each clip and each video draws from its own
``numpy.random.Generator`` seeded by (seed, set, index), so order and parallelism do not matter.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.alignment import CANONICAL_LEFT_EYE, CANONICAL_RIGHT_EYE, align_face, transform_points
from realtime.landmarks import anchors_from_landmarks
from training.aus import ExpressionScheme, format_aus, get_scheme
from training.synth_faces import Identity
from training.synth_render import AuKey, FaceRig, Look, au_key

__all__ = [
    "DISTRACTOR_COLUMNS",
    "RECOGNITION_COLUMNS",
    "SPOTTING_COLUMNS",
    "Clip",
    "ClipPlan",
    "Distractor",
    "Expression",
    "SynthError",
    "SynthGenerator",
    "SynthOptions",
    "VideoFrame",
    "VideoPlan",
    "ease",
    "write_dataset",
]

log = logging.getLogger(__name__)

RECOGNITION_COLUMNS = ("subject", "clip", "onset", "apex", "offset", "label", "aus", "fps", "n_frames")
SPOTTING_COLUMNS = ("video", "subject", "onset", "apex", "offset", "kind", "label", "aus", "fps", "n_frames")
DISTRACTOR_COLUMNS = ("video", "subject", "kind", "onset", "apex", "offset", "fps", "n_frames")
SETS = ("recognition", "spotting")
EASINGS = ("smoothstep", "cosine", "power")
_CROP_IOD = CANONICAL_RIGHT_EYE[0] - CANONICAL_LEFT_EYE[0]  # eye distance as a fraction of the crop side


class SynthError(RuntimeError):
    """Bad generator settings, or an output that cannot be written."""


Range = tuple[float, float]


@dataclass(frozen=True)
class SynthOptions:
    """Everything that decides the generated data. Times in seconds; amplitudes as fractions of the IOD."""

    seed: int = 0
    fps: float = 30.0
    scheme: str = "megc3"
    subjects: int | None = None  # None: every identity found
    clips_per_class: int = 10  # recognition clips per class per subject
    crop_size: int = 128
    videos: int = 6
    video_seconds: float = 30.0
    video_size: tuple[int, int] = (640, 360)  # width, height
    micro_amplitude: Range = (0.03, 0.08)  # peak landmark displacement × IOD (1.4-3.7 px on a 128-px crop)
    macro_amplitude: Range = (0.10, 0.22)
    micro_duration_s: Range = (0.15, 0.5)  # onset → offset
    phase_median_s: float = 0.15  # median onset→apex and apex→offset (CASME-II)
    phase_spread: float = 0.35  # log-normal sigma of the phase durations
    macro_duration_s: Range = (0.6, 3.0)
    context_s: Range = (0.2, 0.3)  # neutral frames before onset and after offset in a recognition clip
    jitter_px: Range = (0.05, 0.25)  # per-frame alignment jitter (std, crop pixels) of a recognition clip
    noise_sigma: Range = (0.8, 2.5)  # sensor noise std, grey levels
    mes_per_video: tuple[int, int] = (4, 8)
    macros_per_video: tuple[int, int] = (1, 2)
    me_gap_s: float = 1.5  # least gap between annotated intervals in a video
    blinks_per_minute: float = 15.0
    face_height: Range = (0.13, 0.18)  # IOD in a video frame as a fraction of the frame height
    codec: str = "mp4v"

    def __post_init__(self) -> None:
        def bad(msg: str) -> SynthError:
            return SynthError(f"invalid setting: {msg}")

        if not self.fps > 0 or not math.isfinite(self.fps):
            raise bad(f"fps must be > 0, got {self.fps}")
        get_scheme(self.scheme)
        if self.subjects is not None and self.subjects < 1:
            raise bad(f"subjects must be >= 1, got {self.subjects}")
        if self.clips_per_class < 0 or self.videos < 0:
            raise bad("clips_per_class and videos must be >= 0")
        if self.crop_size < 32:
            raise bad(f"crop_size must be >= 32 pixels, got {self.crop_size}")
        if not 5.0 <= self.video_seconds <= 600.0:
            raise bad(f"video_seconds must be within 5..600, got {self.video_seconds}")
        w, h = self.video_size
        if w < 160 or h < 120 or w % 2 or h % 2:
            raise bad(f"video_size must be even and at least 160x120, got {w}x{h}")
        for name in ("micro_amplitude", "macro_amplitude", "micro_duration_s", "macro_duration_s", "context_s",
                     "jitter_px", "noise_sigma", "face_height"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise bad(f"{name} must be a range 0 <= lo <= hi, got {(lo, hi)}")
        if self.micro_duration_s[1] > 0.5 or self.micro_duration_s[0] < 2.0 / self.fps:
            raise bad(f"micro_duration_s must lie within [2 frames, 0.5 s], got {self.micro_duration_s}")
        if self.macro_duration_s[0] <= 0.5:
            raise bad(f"macro expressions last longer than 0.5 s, got {self.macro_duration_s}")
        if self.mes_per_video[0] > self.mes_per_video[1] or self.mes_per_video[0] < 0:
            raise bad(f"mes_per_video must be a range, got {self.mes_per_video}")
        if self.macros_per_video[0] > self.macros_per_video[1] or self.macros_per_video[0] < 0:
            raise bad(f"macros_per_video must be a range, got {self.macros_per_video}")
        if len(self.codec) != 4:
            raise bad(f"codec must be a fourcc (4 characters), got {self.codec!r}")

    @property
    def class_scheme(self) -> ExpressionScheme:
        return get_scheme(self.scheme)


# --- envelopes -------------------------------------------------------------------------------------------


def ease(kind: str, s: np.ndarray | float, power: float = 2.0) -> np.ndarray:
    """Easing curve on [0, 1] → [0, 1], 0 at 0 and 1 at 1: ``smoothstep``, ``cosine`` or ``power`` (s^p)."""
    x = np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0)
    if kind == "smoothstep":
        return x * x * (3.0 - 2.0 * x)
    if kind == "cosine":
        return 0.5 - 0.5 * np.cos(np.pi * x)
    if kind == "power":
        return x**power
    raise SynthError(f"unknown easing {kind!r}; choose one of {EASINGS}")


@dataclass(frozen=True)
class Expression:
    """One facial expression event: AUs with intensities, amplitude, and its timing on a clip/video clock."""

    kind: str  # "micro" | "macro"
    label: str
    aus: tuple[int, ...]
    intensities: tuple[float, ...]
    amplitude: float  # peak landmark displacement × IOD
    onset_s: float
    rise_s: float
    hold_s: float
    fall_s: float
    ease_in: str = "smoothstep"
    ease_in_power: float = 2.0
    ease_out: str = "smoothstep"
    ease_out_power: float = 2.0
    side: str = "both"  # one-sided expressions move only the image-left or image-right half of the face

    @property
    def apex_s(self) -> float:
        return self.onset_s + self.rise_s + self.hold_s / 2.0

    @property
    def offset_s(self) -> float:
        return self.onset_s + self.rise_s + self.hold_s + self.fall_s

    @property
    def duration_s(self) -> float:
        return self.rise_s + self.hold_s + self.fall_s

    def shifted(self, onset_s: float) -> Expression:
        return replace(self, onset_s=onset_s)

    def envelope(self, t: float) -> float:
        """0 outside [onset, offset], 1 at the apex (plateau), eased in between."""
        dt = t - self.onset_s
        if dt <= 0.0 or t >= self.offset_s:
            return 0.0
        if dt < self.rise_s:
            return float(ease(self.ease_in, dt / self.rise_s, self.ease_in_power))
        dt -= self.rise_s
        if dt <= self.hold_s:
            return 1.0
        dt -= self.hold_s
        return float(ease(self.ease_out, 1.0 - dt / self.fall_s, self.ease_out_power))

    @property
    def keys(self) -> tuple[AuKey, ...]:
        """The deformation basis keys of its AUs (one side only when ``side`` says so)."""
        return tuple(au_key(a, self.side) for a in self.aus)

    def weights(self, t: float, rig: FaceRig) -> dict[AuKey, float]:
        """Per-AU field multipliers at time ``t`` on ``rig`` (amplitude normalised on that face)."""
        e = self.envelope(t)
        if e == 0.0:
            return {}
        scale = _scale(rig, self)
        return {k: e * i * scale for k, i in zip(self.keys, self.intensities, strict=True)}


def _scale(rig: FaceRig, expr: Expression) -> float:
    peak = rig.peak_shift(dict(zip(expr.keys, expr.intensities, strict=True)))
    return expr.amplitude * rig.frame.iod / peak if peak > 0 else 0.0


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(median * math.exp(sigma * rng.standard_normal()))


def _draw_easing(rng: np.random.Generator) -> tuple[str, float]:
    kind = EASINGS[int(rng.integers(len(EASINGS)))]
    return kind, float(rng.uniform(1.3, 2.6)) if kind == "power" else 2.0


def draw_expression(rng: np.random.Generator, settings: SynthOptions, label: str, kind: str) -> Expression:
    """An expression of class ``label`` (``kind`` micro or macro) starting at t = 0.

    Recipe, per-AU intensities, amplitude and timing come from distributions shared by every class.
    """
    cls = settings.class_scheme.get(label)
    weights = np.array([w for _, w in cls.recipes], dtype=np.float64)
    aus = cls.recipes[int(rng.choice(len(weights), p=weights / weights.sum()))][0]
    intensities = tuple(float(v) for v in rng.uniform(0.45, 1.0, len(aus)))
    fps = settings.fps
    if kind == "micro":
        amplitude = float(rng.uniform(*settings.micro_amplitude))
        lo = settings.micro_duration_s[0]
        hi = math.floor(settings.micro_duration_s[1] * fps + 1e-9) / fps  # annotated frames never exceed it
        hi = max(hi, lo)
        med, spread = settings.phase_median_s, settings.phase_spread
        for _ in range(200):
            rise = max(_lognormal(rng, med, spread), 0.6 / fps)
            fall = max(_lognormal(rng, med, spread), 0.6 / fps)
            hold = float(rng.uniform(0.0, 0.03))
            total = rise + hold + fall
            if lo <= total <= hi:
                break
        else:  # pragma: no cover - astronomically unlikely with sane settings
            f = min(max(total, lo), hi) / total
            rise, hold, fall = rise * f, hold * f, fall * f
    elif kind == "macro":
        amplitude = float(rng.uniform(*settings.macro_amplitude))
        total = float(rng.uniform(*settings.macro_duration_s))
        rise = total * float(rng.uniform(0.2, 0.45))
        hold = total * float(rng.uniform(0.05, 0.35))
        fall = total - rise - hold
    else:
        raise SynthError(f"unknown expression kind {kind!r} (micro or macro)")
    ein, pin = _draw_easing(rng)
    eout, pout = _draw_easing(rng)
    return Expression(kind, label, tuple(aus), intensities, amplitude, 0.0, rise, hold, fall, ein, pin, eout, pout)


def _frame(t: float, fps: float, n: int) -> int:
    return int(min(max(round(t * fps), 0), n - 1))


def _frames(e: Expression | Distractor, fps: float, n: int) -> tuple[int, int, int]:
    on, ap, off = _frame(e.onset_s, fps, n), _frame(e.apex_s, fps, n), _frame(e.offset_s, fps, n)
    ap = min(max(ap, on), off)
    return on, ap, off


# --- recognition clips -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipPlan:
    """Everything that decides one recognition clip."""

    subject_index: int
    subject: str
    clip: str  # "s01/s01_0003"
    label: str
    expression: Expression
    mirrored: bool
    look: Look
    fps: float
    n_frames: int
    onset: int
    apex: int
    offset: int
    jitter_px: float  # crop pixels (std)
    noise_sigma: float
    seed: tuple[int, ...]

    def row(self) -> dict[str, object]:
        return {"subject": self.subject, "clip": self.clip, "onset": self.onset, "apex": self.apex,
                "offset": self.offset, "label": self.label, "aus": format_aus(self.expression.aus),
                "fps": _fps_text(self.fps), "n_frames": self.n_frames}


@dataclass(frozen=True)
class Clip:
    """A rendered recognition clip: aligned crops (T, S, S, 3) uint8 BGR and crop-space landmarks."""

    plan: ClipPlan
    frames: np.ndarray
    landmarks: np.ndarray  # (T, 478, 2) in crop pixels (without the jitter)


# --- videos ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distractor:
    """A non-expression event in a video. ``amount``/``freq``/``phase``/``direction`` depend on ``kind``:
    blink (closure depth), talk (amplitude × IOD, syllable rate Hz, phase), head (rotation degrees,
    translation × IOD along ``direction`` radians), flicker (relative gain amplitude, Hz, phase)."""

    kind: str
    onset_s: float
    apex_s: float
    offset_s: float
    amount: float
    freq: float = 0.0
    phase: float = 0.0
    direction: float = 0.0
    shift: float = 0.0

    def profile(self, t: float) -> float:
        """0..1 envelope: a fast-close/slower-open blink, a smooth bump otherwise (ramped edges for talk)."""
        if t <= self.onset_s or t >= self.offset_s:
            return 0.0
        if self.kind == "talk":
            ramp = 0.15
            a = min((t - self.onset_s) / ramp, (self.offset_s - t) / ramp, 1.0)
            return float(ease("smoothstep", a))
        if t <= self.apex_s:
            return float(ease("smoothstep", (t - self.onset_s) / max(self.apex_s - self.onset_s, 1e-6)))
        return float(ease("smoothstep", (self.offset_s - t) / max(self.offset_s - self.apex_s, 1e-6)))


@dataclass(frozen=True)
class VideoPlan:
    """Everything that decides one spotting video."""

    index: int
    video: str
    subject_index: int
    subject: str
    mirrored: bool
    look: Look
    fps: float
    n_frames: int
    size: tuple[int, int]
    face_iod: float  # pixels in the frame
    centre: tuple[float, float]  # frame position of the point between the eyes
    roll_deg: float
    drift: tuple[tuple[float, float, float], ...]  # (amplitude, Hz, phase) × 3 per axis: dx, dy, roll, scale
    gain_drift: tuple[float, float, float]
    noise_sigma: float
    expressions: tuple[Expression, ...]
    distractors: tuple[Distractor, ...]
    seed: tuple[int, ...]

    def rows(self) -> list[dict[str, object]]:
        out = []
        for e in sorted(self.expressions, key=lambda e: e.onset_s):
            on, ap, off = _frames(e, self.fps, self.n_frames)
            out.append({"video": self.video, "subject": self.subject, "onset": on, "apex": ap, "offset": off,
                        "kind": e.kind, "label": e.label, "aus": format_aus(e.aus), "fps": _fps_text(self.fps),
                        "n_frames": self.n_frames})
        return out

    def distractor_rows(self) -> list[dict[str, object]]:
        out = []
        for d in sorted(self.distractors, key=lambda d: d.onset_s):
            on, ap, off = _frames(d, self.fps, self.n_frames)
            out.append({"video": self.video, "subject": self.subject, "kind": d.kind, "onset": on, "apex": ap,
                        "offset": off, "fps": _fps_text(self.fps), "n_frames": self.n_frames})
        return out

    def weights(self, t: float, rig: FaceRig) -> dict[AuKey, float]:
        """All AU field multipliers at ``t``: expressions plus talking."""
        out: dict[AuKey, float] = {}
        for e in self.expressions:
            for a, w in e.weights(t, rig).items():
                out[a] = out.get(a, 0.0) + w
        for d in self.distractors:
            if d.kind != "talk":
                continue
            p = d.profile(t)
            if p == 0.0:
                continue
            # Syllables: opening cycles at d.freq with a slower loudness modulation; lips press between.
            cyc = 0.5 - 0.5 * math.cos(2 * math.pi * d.freq * (t - d.onset_s) + d.phase)
            loud = 0.65 + 0.35 * math.sin(2 * math.pi * 0.7 * d.freq * (t - d.onset_s) + 2.0 * d.phase)
            scale = d.amount * rig.frame.iod / rig.peak_shift({25: 1.0, 26: 0.6})
            for a, w in ((25, cyc * loud), (26, 0.6 * cyc * loud), (23, 0.25 * (1.0 - cyc))):
                out[a] = out.get(a, 0.0) + p * w * scale
        return out

    def blink(self, t: float) -> float:
        return max((d.amount * d.profile(t) for d in self.distractors if d.kind == "blink"), default=0.0)

    def gain(self, t: float) -> float:
        a, f, ph = self.gain_drift
        g = 1.0 + a * math.sin(2 * math.pi * f * t + ph)
        for d in self.distractors:
            if d.kind == "flicker" and d.onset_s < t < d.offset_s:
                g += d.amount * d.profile(t) * math.sin(2 * math.pi * d.freq * t + d.phase)
        return g

    def matrix(self, t: float, rig: FaceRig) -> np.ndarray:
        """Scene → frame similarity at ``t``: placement, slow drift and head-move episodes."""
        axes = [sum(a * math.sin(2 * math.pi * f * t + p) for a, f, p in self.drift[k * 3 : k * 3 + 3])
                for k in range(4)]
        dx, dy, droll, dscale = axes
        for d in self.distractors:
            if d.kind == "head":
                p = d.profile(t)
                droll += p * d.amount
                dx += p * d.shift * math.cos(d.direction)
                dy += p * d.shift * math.sin(d.direction)
        s = self.face_iod / rig.frame.iod * (1.0 + dscale)
        ang = math.radians(self.roll_deg + droll)
        c, si = math.cos(ang) * s, math.sin(ang) * s
        # Remove the scene's own roll so the placement roll is the face's roll in the frame.
        base = math.atan2(rig.frame.ex[1], rig.frame.ex[0])
        cb, sb = math.cos(-base), math.sin(-base)
        rot = np.array([[c, -si], [si, c]]) @ np.array([[cb, -sb], [sb, cb]])
        centre = np.array(self.centre) + np.array([dx, dy]) * self.face_iod
        t_vec = centre - rot @ rig.frame.mid
        return np.hstack([rot, t_vec[:, None]])


@dataclass(frozen=True)
class VideoFrame:
    """One rendered video frame with the face's true landmarks (frame pixels)."""

    index: int
    t: float
    image: np.ndarray
    landmarks: np.ndarray


def _fps_text(fps: float) -> str:
    return f"{float(fps):g}"


def _place(rng: np.random.Generator, duration: float, start: float, stop: float,
           avoid: Sequence[tuple[float, float, float]], tries: int = 300) -> float | None:
    """A start time for an interval of ``duration`` within [start, stop] keeping each (a, b, gap) clear."""
    if stop - start < duration:
        return None
    for _ in range(tries):
        s = float(rng.uniform(start, stop - duration))
        e = s + duration
        if all(e + gap <= a or s >= b + gap for a, b, gap in avoid):
            return s
    return None


# --- the generator ---------------------------------------------------------------------------------------


class SynthGenerator:
    """Plans and renders clips and videos from :class:`SynthOptions` and loaded identities.

    Holds no open resources (identities are plain arrays); ``close()`` drops the cached rigs.
    """

    def __init__(self, settings: SynthOptions, identities: Sequence[Identity]) -> None:
        if not identities:
            raise SynthError("no identities: load some faces first")
        n = settings.subjects if settings.subjects is not None else len(identities)
        if n > len(identities):
            raise SynthError(f"--subjects {n} asks for more subjects than the {len(identities)} faces found; "
                             "add photos with --faces DIR")
        self.settings = settings
        self.identities = list(identities[:n])
        self.scheme = settings.class_scheme

    def close(self) -> None:
        for ident in self.identities:
            ident._rigs.clear()

    def __enter__(self) -> SynthGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rng(self, *key: int) -> tuple[np.random.Generator, tuple[int, ...]]:
        seed = (int(self.settings.seed), *key)
        return np.random.default_rng(np.random.SeedSequence(list(seed))), seed

    # --- recognition --------------------------------------------------------------------------------------

    def clip_plans(self) -> list[ClipPlan]:
        n = self.settings.clips_per_class * len(self.scheme.labels)
        return [self.clip_plan(s, c) for s in range(len(self.identities)) for c in range(n)]

    def clip_plan(self, subject_index: int, clip_index: int) -> ClipPlan:
        st = self.settings
        rng, seed = self._rng(1, subject_index, clip_index)
        subject = self.identities[subject_index].subject
        label = self.scheme.labels[clip_index % len(self.scheme.labels)]
        expr = draw_expression(rng, st, label, "micro")
        pre = float(rng.uniform(*st.context_s))
        post = float(rng.uniform(*st.context_s))
        onset = int(round(pre * st.fps))
        expr = expr.shifted(onset / st.fps)
        n = int(math.ceil((expr.offset_s + post) * st.fps)) + 1
        on, ap, off = _frames(expr, st.fps, n)
        return ClipPlan(
            subject_index=subject_index, subject=subject, clip=f"{subject}/{subject}_{clip_index + 1:04d}",
            label=label, expression=expr, mirrored=bool(rng.random() < 0.5), look=Look.draw(rng),
            fps=st.fps, n_frames=n, onset=on, apex=ap, offset=off,
            jitter_px=float(rng.uniform(*st.jitter_px)), noise_sigma=float(rng.uniform(*st.noise_sigma)),
            seed=seed,
        )

    def render_clip(self, plan: ClipPlan) -> Clip:
        """Aligned crops of one clip: ROI-only rendering, known landmarks + jitter → ``align_face``."""
        st = self.settings
        rng = np.random.default_rng(np.random.SeedSequence([*plan.seed, 7]))
        rig = self.identities[plan.subject_index].rig(plan.mirrored)
        x0, y0, _, _ = rig.roi
        region = plan.look.apply(rig.region(rig.scene), (x0, y0), rig.frame)
        cs = st.crop_size
        jitter = plan.jitter_px * rig.frame.iod / (_CROP_IOD * cs)  # crop px → region px
        frames = np.empty((plan.n_frames, cs, cs, 3), np.uint8)
        lms = np.empty((plan.n_frames, rig.landmarks.shape[0], 2), np.float32)
        buf = np.empty_like(region)
        origin = np.array([x0, y0], np.float64)
        for k in range(plan.n_frames):
            face = rig.render(region, plan.expression.weights(k / plan.fps, rig), out=buf)
            lm = face.landmarks - origin
            anchors = anchors_from_landmarks(lm) + rng.normal(0.0, jitter, (3, 2))
            aligned = align_face(face.image, anchors, crop_size=cs, landmarks=lm)
            noisy = aligned.crop.astype(np.float32) + rng.normal(0.0, plan.noise_sigma, aligned.crop.shape).astype(np.float32)
            frames[k] = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
            lms[k] = aligned.landmarks
        return Clip(plan, frames, lms)

    # --- spotting -----------------------------------------------------------------------------------------

    def video_plans(self) -> list[VideoPlan]:
        return [self.video_plan(i) for i in range(self.settings.videos)]

    def video_plan(self, index: int, *, seconds: float | None = None) -> VideoPlan:
        """Plan video ``index`` (subjects cycle through the identities; ``seconds`` overrides the length)."""
        st = self.settings
        rng, seed = self._rng(2, index)
        length = float(seconds if seconds is not None else st.video_seconds)
        n_frames = int(round(length * st.fps))
        subject_index = index % len(self.identities)
        w, h = st.video_size
        iod = float(rng.uniform(*st.face_height)) * h
        centre = (w * (0.5 + float(rng.uniform(-0.08, 0.08))), h * float(rng.uniform(0.36, 0.46)))
        drift = []
        for amp in (0.22, 0.15, 2.0, 0.03):  # dx, dy (× IOD), roll (deg), scale
            parts = rng.dirichlet(np.ones(3)) * amp * float(rng.uniform(0.4, 1.0))
            for a in parts:
                drift.append((float(a), float(rng.uniform(0.02, 0.15)), float(rng.uniform(0, 2 * math.pi))))
        labels = self.scheme.labels
        begin, end = 1.0, length - 0.5  # the first second is left quiet (trackers and meters warm up)
        annotated: list[tuple[float, float, float]] = []
        expressions: list[Expression] = []
        n_macro = int(rng.integers(st.macros_per_video[0], st.macros_per_video[1] + 1))
        n_micro = int(rng.integers(st.mes_per_video[0], st.mes_per_video[1] + 1))
        for kind, count in (("macro", n_macro), ("micro", n_micro)):
            for _ in range(count):
                e = draw_expression(rng, st, labels[int(rng.integers(len(labels)))], kind)
                start = _place(rng, e.duration_s, begin, end, annotated)
                if start is None:
                    log.info("video %d: no room for another %s expression", index, kind)
                    continue
                e = e.shifted(start)
                expressions.append(e)
                annotated.append((e.onset_s, e.offset_s, st.me_gap_s))
        busy = [(a, b, 0.4) for a, b, _ in annotated]
        distractors: list[Distractor] = []

        def room(duration: float) -> float | None:
            start = _place(rng, duration, begin, end, busy)
            if start is not None:
                busy.append((start, start + duration, 0.2))
            return start

        for _ in range(int(rng.integers(1, 3))):  # talking: jaw/lip oscillation episodes
            dur = float(rng.uniform(1.0, 3.0))
            amp, f, ph = float(rng.uniform(0.08, 0.16)), float(rng.uniform(3.0, 5.5)), float(rng.uniform(0, 6.28))
            if (s := room(dur)) is not None:
                distractors.append(Distractor("talk", s, s + dur / 2, s + dur, amp, f, ph))
        for _ in range(int(rng.integers(1, 3))):  # quicker head moves (nods, turns in the image plane)
            dur = float(rng.uniform(0.4, 1.2))
            rot = float(rng.uniform(1.5, 5.0)) * (1 if rng.random() < 0.5 else -1)
            shift, direction = float(rng.uniform(0.05, 0.3)), float(rng.uniform(0, 6.28))
            if (s := room(dur)) is not None:
                distractors.append(Distractor("head", s, s + dur / 2, s + dur, rot, direction=direction, shift=shift))
        if rng.random() < 0.5:  # brightness flicker
            dur = float(rng.uniform(0.5, 1.5))
            amp, f, ph = float(rng.uniform(0.02, 0.05)), float(rng.uniform(5.0, 12.0)), float(rng.uniform(0, 6.28))
            if (s := room(dur)) is not None:
                distractors.append(Distractor("flicker", s, s + dur / 2, s + dur, amp, f, ph))
        for _ in range(int(rng.poisson(st.blinks_per_minute * length / 60.0))):
            dur = float(rng.uniform(0.1, 0.25))
            depth, close = float(rng.uniform(0.75, 1.0)), float(rng.uniform(0.3, 0.45))
            if (s := room(dur)) is not None:
                distractors.append(Distractor("blink", s, s + close * dur, s + dur, depth))
        return VideoPlan(
            index=index, video=f"v{index + 1:03d}", subject_index=subject_index,
            subject=self.identities[subject_index].subject, mirrored=bool(rng.random() < 0.5),
            look=Look.draw(rng), fps=st.fps, n_frames=n_frames, size=(w, h), face_iod=iod, centre=centre,
            roll_deg=float(rng.uniform(-4.0, 4.0)), drift=tuple(drift),
            gain_drift=(float(rng.uniform(0.0, 0.03)), float(rng.uniform(0.03, 0.2)), float(rng.uniform(0, 6.28))),
            noise_sigma=float(rng.uniform(*st.noise_sigma)),
            expressions=tuple(sorted(expressions, key=lambda e: e.onset_s)),
            distractors=tuple(sorted(distractors, key=lambda d: d.onset_s)), seed=seed,
        )

    def render_video(self, plan: VideoPlan) -> Iterator[VideoFrame]:
        """The frames of a planned video, one at a time (a 30 s video does not fit in memory at once)."""
        rng = np.random.default_rng(np.random.SeedSequence([*plan.seed, 7]))
        rig = self.identities[plan.subject_index].rig(plan.mirrored)
        lit = plan.look.apply(rig.scene, (0, 0), rig.frame)
        closed = rig.closed_eyes(plan.look)
        work = lit.copy()
        region_src = rig.region(lit)
        region_dst = rig.region(work)
        buf = np.empty_like(region_src)
        w, h = plan.size
        pad = 16
        bank = rng.standard_normal((3, h + 2 * pad, w + 2 * pad, 3), dtype=np.float32) * np.float32(plan.noise_sigma)
        dirty = False
        img = np.empty((h, w, 3), np.float32)
        for k in range(plan.n_frames):
            t = k / plan.fps
            weights = {a: v for a, v in plan.weights(t, rig).items() if v != 0.0}
            closure = plan.blink(t)
            landmarks = rig.landmarks
            if weights or closure > 0.0:
                face = rig.render(region_src, weights, blink=closure, closed=closed, out=buf)
                np.copyto(region_dst, face.image)
                landmarks = face.landmarks
                dirty = True
            elif dirty:
                np.copyto(region_dst, region_src)
                dirty = False
            m = plan.matrix(t, rig)
            frame = cv2.warpAffine(work, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            b, dy, dx = int(rng.integers(3)), int(rng.integers(2 * pad)), int(rng.integers(2 * pad))
            gain = plan.gain(t) * (1.0 + 0.002 * float(rng.standard_normal()))
            np.multiply(frame, np.float32(gain), out=img, dtype=np.float32)
            img += bank[b, dy : dy + h, dx : dx + w]
            img += 0.5
            np.clip(img, 0, 255, out=img)
            yield VideoFrame(k, t, img.astype(np.uint8), transform_points(m, landmarks).astype(np.float32))


# --- writing the sets ------------------------------------------------------------------------------------

Progress = Callable[[int], None]
_WORKER: SynthGenerator | None = None


def _init_worker(gen: SynthGenerator) -> None:
    global _WORKER
    _WORKER = gen
    cv2.setNumThreads(1)


def _write_clip(gen: SynthGenerator, plan: ClipPlan, root: Path) -> dict[str, object]:
    clip = gen.render_clip(plan)
    folder = root / plan.clip
    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(clip.frames):
        if not cv2.imwrite(str(folder / f"{k:06d}.png"), img):
            raise SynthError(f"cannot write {folder / f'{k:06d}.png'}")
    return plan.row()


def _clip_job(args: tuple[ClipPlan, Path]) -> dict[str, object]:
    assert _WORKER is not None
    return _write_clip(_WORKER, *args)


_CONTAINERS: dict[str, tuple[str, str]] = {}


def video_container(codec: str = "mp4v") -> tuple[str, str]:
    """(fourcc, suffix) that this OpenCV can write *and* read back: ``codec``/.mp4, else MJPG/.avi."""
    found = _CONTAINERS.get(codec)
    if found is not None:
        return found
    frame = np.full((64, 64, 3), 128, np.uint8)
    with tempfile.TemporaryDirectory(prefix="mer-synth-") as tmp:
        for fourcc, suffix in ((codec, ".mp4"), ("MJPG", ".avi")):
            path = os.path.join(tmp, "probe" + suffix)
            writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*fourcc), 30.0, (64, 64))
            ok = writer.isOpened()
            if ok:
                for _ in range(3):
                    writer.write(frame)
            writer.release()
            if not ok:
                continue
            cap = cv2.VideoCapture(path)
            n = 0
            while cap.read()[0]:
                n += 1
            cap.release()
            if n == 3:
                if fourcc != codec:
                    log.warning("this OpenCV cannot write and read back %s .mp4; writing MJPG .avi instead", codec)
                _CONTAINERS[codec] = (fourcc, suffix)
                return fourcc, suffix
    raise SynthError("this OpenCV build can write neither mp4 nor MJPG avi video")


def _write_video(gen: SynthGenerator, plan: VideoPlan, root: Path, progress: Progress | None = None
                 ) -> tuple[list[dict[str, object]], list[dict[str, object]], str]:
    fourcc, suffix = video_container(gen.settings.codec)
    path = root / f"{plan.video}{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), float(plan.fps), plan.size)
    if not writer.isOpened():
        raise SynthError(f"cannot open a video writer for {path}")
    try:
        done = 0
        for frame in gen.render_video(plan):
            writer.write(frame.image)
            done += 1
            if progress is not None and done % 30 == 0:
                progress(30)
        if progress is not None and done % 30:
            progress(done % 30)
    finally:
        writer.release()
    return plan.rows(), plan.distractor_rows(), path.name


def _video_job(args: tuple[VideoPlan, Path]) -> tuple[list[dict[str, object]], list[dict[str, object]], str]:
    assert _WORKER is not None
    return _write_video(_WORKER, *args)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _prepare_dir(path: Path, force: bool) -> None:
    if path.exists() and any(path.iterdir()):
        if not force:
            raise SynthError(f"{path} exists and is not empty; pass --force to replace it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def _run(gen: SynthGenerator, jobs: list[tuple[Any, Path]], job: Callable[[Any], Any], direct: Callable[..., Any],
         workers: int, progress: Progress | None, units: Callable[[Any], int]) -> list[Any]:
    """Run ``direct(*job)`` for each job here, or ``job(job)`` in worker processes (same results)."""
    if workers <= 1 or len(jobs) <= 1:
        return [direct(*j) for j in jobs]
    results = []
    # spawn, not fork: the parent holds MediaPipe and OpenCV thread pools whose locks a fork would copy.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(gen,)) as pool:
        for j, res in zip(jobs, pool.map(job, jobs), strict=True):
            results.append(res)
            if progress is not None:
                progress(units(j))
    return results


@dataclass
class SetSummary:
    """What one call of :func:`write_dataset` wrote."""

    recognition_clips: int = 0
    recognition_frames: int = 0
    videos: int = 0
    video_frames: int = 0
    micro: int = 0
    macro: int = 0
    distractors: dict[str, int] = field(default_factory=dict)
    container: str = ""


def write_dataset(
    gen: SynthGenerator,
    out: str | Path,
    *,
    sets: Sequence[str] = SETS,
    workers: int = 1,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> SetSummary:
    """Write the chosen sets under ``out`` plus README.md and manifest.json.

    ``progress(set_name, advance, total)`` is called as work completes (units: clips for recognition,
    frames for spotting; the first call of each set has advance 0 and gives the total).
    """
    root = Path(out)
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise SynthError(f"unknown set(s) {unknown}; choose from {SETS}")
    root.mkdir(parents=True, exist_ok=True)
    summary = SetSummary()
    if "recognition" in sets:
        rec = root / "recognition"
        _prepare_dir(rec, force)
        plans = gen.clip_plans()
        total = len(plans)
        if progress:
            progress("recognition", 0, total)

        def one(plan: ClipPlan, folder: Path) -> dict[str, object]:
            row = _write_clip(gen, plan, folder)
            if progress:
                progress("recognition", 1, total)
            return row

        rows = _run(gen, [(p, rec) for p in plans], _clip_job, one, workers,
                    (lambda n: progress("recognition", n, total)) if progress else None, lambda j: 1)
        _write_csv(rec / "annotations.csv", RECOGNITION_COLUMNS, rows)
        summary.recognition_clips = len(rows)
        summary.recognition_frames = sum(p.n_frames for p in plans)
    if "spotting" in sets:
        spot = root / "spotting"
        _prepare_dir(spot, force)
        vplans = gen.video_plans()
        total = sum(p.n_frames for p in vplans)
        if progress:
            progress("spotting", 0, total)
        cb = (lambda n: progress("spotting", n, total)) if progress else None
        results = _run(gen, [(p, spot) for p in vplans], _video_job,
                       lambda p, folder: _write_video(gen, p, folder, cb), workers, cb, lambda j: j[0].n_frames)
        rows = [r for res in results for r in res[0]]
        drows = [r for res in results for r in res[1]]
        _write_csv(spot / "annotations.csv", SPOTTING_COLUMNS, rows)
        _write_csv(spot / "distractors.csv", DISTRACTOR_COLUMNS, drows)
        summary.videos = len(vplans)
        summary.video_frames = total
        summary.micro = sum(1 for r in rows if r["kind"] == "micro")
        summary.macro = sum(1 for r in rows if r["kind"] == "macro")
        for r in drows:
            summary.distractors[str(r["kind"])] = summary.distractors.get(str(r["kind"]), 0) + 1
        summary.container = ",".join(sorted({res[2].rsplit(".", 1)[-1] for res in results}))
    _write_manifest(gen, root, sets, summary)
    return summary


# --- README and manifest ---------------------------------------------------------------------------------


def _write_manifest(gen: SynthGenerator, root: Path, sets: Sequence[str], summary: SetSummary) -> None:
    path = root / "manifest.json"
    manifest: dict[str, Any] = {}
    if path.is_file():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}
    settings = asdict(gen.settings)
    written = dict(manifest.get("sets", {})) if isinstance(manifest.get("sets"), dict) else {}
    for name in sets:
        entry: dict[str, object] = {"settings": settings}
        if name == "recognition":
            entry["counts"] = {"clips": summary.recognition_clips, "frames": summary.recognition_frames}
        else:
            entry["counts"] = {"videos": summary.videos, "frames": summary.video_frames, "micro": summary.micro,
                               "macro": summary.macro, "distractors": dict(sorted(summary.distractors.items()))}
            entry["container"] = summary.container
        written[name] = entry
    manifest = {
        "generator": "mer-synth",
        "format": 1,
        "seed": gen.settings.seed,
        "classes": list(gen.scheme.labels),
        "scheme": gen.scheme.name,
        "class_recipes": {c.name: [[format_aus(a), w] for a, w in c.recipes] for c in gen.scheme.classes},
        "subjects": [{"subject": i.subject, "source": i.source} for i in gen.identities],
        "sets": written,
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (root / "README.md").write_text(_readme(manifest), encoding="utf-8")


def _readme(manifest: dict[str, Any]) -> str:
    subjects = "\n".join(f"| {s['subject']} | {s['source']} |" for s in manifest["subjects"])
    sets = manifest["sets"]
    parts = [
        "# Synthetic micro-expressions (mer-synth)\n",
        "Generated by `mer-synth` from real face photos: micro-expressions (MEs) are Action-Unit-driven, smooth",
        "local deformations of the face with known onset, apex and offset. All settings and counts are in",
        f"`manifest.json`; the same seed ({manifest['seed']}) and settings give the same data.\n",
        f"Classes ({manifest['scheme']}): {', '.join(manifest['classes'])}. AU recipes per class (AUs, weight):\n",
        *[f"- {k}: " + ", ".join(f"{a} ({w:g})" for a, w in v) for k, v in manifest["class_recipes"].items()],
        "",
        "## Subjects\n",
        "One subject = one real person. Augmented variants (mirroring, skin tone, lighting, alignment jitter)",
        "of the same photo share the subject id, so leave-one-subject-out splits never test on a seen face.\n",
        "| subject | source photo |", "|---|---|", subjects, "",
    ]
    if "recognition" in sets:
        c = sets["recognition"]["counts"]
        s = sets["recognition"]["settings"]
        parts += [
            "## recognition/\n",
            f"{c['clips']} clips, {c['frames']} frames at {s['fps']:g} fps. One ME per clip with "
            f"{s['context_s'][0]:g}-{s['context_s'][1]:g} s of neutral face before onset and after offset.",
            f"Frames: aligned face crops ({s['crop_size']} px, BGR PNG) made by `core.alignment.align_face`",
            "from the generator's known landmarks (eyes and nose tip) with a little per-frame alignment jitter",
            "and sensor noise — like CASME-II \"Cropped\".\n",
            "Layout: `recognition/<subject>/<clip_id>/000000.png ...` and `recognition/annotations.csv`:\n",
            "| column | meaning |", "|---|---|",
            "| subject | subject id (one real person) |",
            "| clip | clip folder relative to recognition/, e.g. `s01/s01_0003` |",
            "| onset, apex, offset | 0-based frame indices within the clip, inclusive |",
            "| label | class name |", "| aus | Action Units, e.g. `12+6` |",
            "| fps | frame rate |", "| n_frames | frames in the clip |", "",
        ]
    if "spotting" in sets:
        c = sets["spotting"]["counts"]
        s = sets["spotting"]["settings"]
        w, h = s["video_size"]
        parts += [
            "## spotting/\n",
            f"{c['videos']} videos ({sets['spotting']['container']}), {w}x{h}, {s['fps']:g} fps, "
            f"{s['video_seconds']:g} s each: {c['micro']} micro- and {c['macro']} macro-expressions",
            f"(annotated intervals at least {s['me_gap_s']:g} s apart), plus distractors: "
            + ", ".join(f"{k} {v}" for k, v in c["distractors"].items())
            + "; and throughout: slow head drift and roll, brightness drift, sensor noise, compression.\n",
            "`spotting/annotations.csv` (micro and macro expressions only):\n",
            "| column | meaning |", "|---|---|",
            "| video | file name without suffix |", "| subject | subject id |",
            "| onset, apex, offset | 0-based frame indices in the video, inclusive |",
            "| kind | `micro` (<= 0.5 s) or `macro` (> 0.5 s) |",
            "| label | expression class (macro rows too) |", "| aus | Action Units |",
            "| fps | frame rate |", "| n_frames | frames in the video |", "",
            "`spotting/distractors.csv` (not expressions; for analysing false positives): `video, subject, kind,",
            "onset, apex, offset, fps, n_frames` with kind `blink` (eyelids close), `talk` (jaw/lip oscillation),",
            "`head` (a quicker head move on top of the drift) or `flicker` (brightness oscillation).\n",
        ]
    return "\n".join(parts) + "\n"
