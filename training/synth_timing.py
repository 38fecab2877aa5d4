"""When a synthetic expression happens and how it moves: envelopes (easing), the drawn expression with its
onset, apex and offset, and their frame numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from training.synth_options import EASINGS, SynthError, SynthOptions
from training.synth_render import AuKey, FaceRig, au_key

# Every easing an expression may use. The warp family draws from EASINGS (unchanged, so its draws stay the
# same); the mesh family (training.synth_mesh) also uses "linear".
ALL_EASINGS = (*EASINGS, "linear")


def ease(kind: str, s: np.ndarray | float, power: float = 2.0) -> np.ndarray:
    """Easing curve on [0, 1] → [0, 1], 0 at 0 and 1 at 1: ``smoothstep``, ``cosine``, ``power`` (s^p) or
    ``linear``."""
    x = np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0)
    if kind == "linear":
        return x
    if kind == "smoothstep":
        return x * x * (3.0 - 2.0 * x)
    if kind == "cosine":
        return 0.5 - 0.5 * np.cos(np.pi * x)
    if kind == "power":
        return x**power
    raise SynthError(f"unknown easing {kind!r}; choose one of {ALL_EASINGS}")


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


