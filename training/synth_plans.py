"""Plans of what the generator renders: one recognition clip per expression, and spotting videos with
expressions, macro-expressions and distractors placed on a timeline (and their annotation rows)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.aus import format_aus
from training.synth_render import AuKey, FaceRig, Look
from training.synth_timing import Expression, ease


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


def _frame(t: float, fps: float, n: int) -> int:
    return int(min(max(round(t * fps), 0), n - 1))


def _frames(e: Expression | Distractor, fps: float, n: int) -> tuple[int, int, int]:
    on, ap, off = _frame(e.onset_s, fps, n), _frame(e.apex_s, fps, n), _frame(e.offset_s, fps, n)
    ap = min(max(ap, on), off)
    return on, ap, off
