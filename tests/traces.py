"""Deterministic synthetic motion-intensity traces with known windows, for spotter tests.

A trace is sampled from one continuous-time process, so the same events at 30 fps and at 200 fps are the
same movements: baseline + slow drift + temporally correlated noise (Ornstein-Uhlenbeck, time constant in
seconds) + white noise + events (raised-cosine rise onset->apex and fall apex->offset) + blink-like bursts
(80-150 ms; what the motion meter's blink suppression leaves over, which the spotter's minimum duration
should reject).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from realtime.spotting import SpottedWindow, Spotter

MICRO_MAX_S = 0.5


@dataclass(frozen=True)
class TraceEvent:
    """A movement: onset, apex, offset in seconds and its peak height above the baseline."""

    onset_s: float
    apex_s: float
    offset_s: float
    amplitude: float = 1.0

    @property
    def kind(self) -> str:
        return "micro" if self.offset_s - self.onset_s <= MICRO_MAX_S else "macro"


@dataclass(frozen=True)
class Trace:
    fps: float
    t: np.ndarray
    intensity: np.ndarray
    events: tuple[TraceEvent, ...]
    blinks: tuple[TraceEvent, ...]

    def frame(self, seconds: float) -> int:
        return int(round(seconds * self.fps))

    def true_windows(self, kind: str | None = None) -> list[tuple[int, int, str]]:
        """Ground truth as ``(onset_frame, offset_frame, kind)`` (frames inclusive)."""
        return [(self.frame(e.onset_s), self.frame(e.offset_s), e.kind) for e in self.events
                if kind is None or e.kind == kind]

    def samples(self) -> list[tuple[int, float, float]]:
        """``(frame, t, intensity)`` per frame, ready for ``Spotter.update``."""
        return [(i, float(t), float(x)) for i, (t, x) in enumerate(zip(self.t, self.intensity, strict=True))]


def bump(t: np.ndarray, onset: float, apex: float, offset: float) -> np.ndarray:
    """0 outside (onset, offset), raised-cosine up to 1 at the apex and back down."""
    out = np.zeros_like(t)
    rise = (t > onset) & (t <= apex)
    fall = (t > apex) & (t < offset)
    out[rise] = 0.5 - 0.5 * np.cos(math.pi * (t[rise] - onset) / max(apex - onset, 1e-9))
    out[fall] = 0.5 + 0.5 * np.cos(math.pi * (t[fall] - apex) / max(offset - apex, 1e-9))
    return out


def random_events(*, duration_s: float, n_micro: int, n_macro: int = 0, amplitude: tuple[float, float] = (1.0, 2.0),
                  lead_s: float = 2.0, gap_s: tuple[float, float] = (1.2, 2.5), seed: int = 0) -> list[TraceEvent]:
    """Micro (0.25-0.45 s) and macro (0.8-3 s) events in random order, ``gap_s`` apart, after ``lead_s``."""
    rng = np.random.default_rng(seed)
    kinds = ["micro"] * n_micro + ["macro"] * n_macro
    rng.shuffle(kinds)
    events, t = [], lead_s
    for kind in kinds:
        length = rng.uniform(0.25, 0.45) if kind == "micro" else rng.uniform(0.8, 3.0)
        apex = t + length * rng.uniform(0.3, 0.6)
        events.append(TraceEvent(t, apex, t + length, float(rng.uniform(*amplitude))))
        t += length + rng.uniform(*gap_s)
    if events and events[-1].offset_s > duration_s - 0.5:
        raise ValueError(f"{len(events)} events do not fit in {duration_s} s")
    return events


def make_trace(*, fps: float, duration_s: float, events: Sequence[TraceEvent] = (), base: float = 1.0,
               noise: float = 0.0, noise_tau_s: float = 0.08, white: float = 0.0, drift: float = 0.0,
               drift_period_s: float = 20.0, blink_rate_hz: float = 0.0,
               blink_amplitude: tuple[float, float] = (0.5, 2.0),
               blink_duration_s: tuple[float, float] = (0.08, 0.15), seed: int = 0) -> Trace:
    """Sample a trace at ``fps``. Blinks (Poisson, ``blink_rate_hz``) keep 0.3 s away from events."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * fps))
    t = np.arange(n, dtype=np.float64) / fps
    x = np.full(n, base, dtype=np.float64)
    if drift:
        x += drift * np.sin(2 * math.pi * t / drift_period_s + rng.uniform(0, 2 * math.pi))
    if noise:
        a = math.exp(-1.0 / (fps * noise_tau_s))
        shocks = rng.normal(0.0, noise * math.sqrt(1 - a * a), n)
        ou = np.empty(n)
        ou[0] = rng.normal(0.0, noise)
        for i in range(1, n):
            ou[i] = a * ou[i - 1] + shocks[i]
        x += ou
    if white:
        x += rng.normal(0.0, white, n)
    for e in events:
        x += e.amplitude * bump(t, e.onset_s, e.apex_s, e.offset_s)
    blinks = []
    if blink_rate_hz > 0:
        s = rng.exponential(1.0 / blink_rate_hz)
        while s < duration_s - 0.5:
            length = rng.uniform(*blink_duration_s)
            clear = all(s + length < e.onset_s - 0.3 or s > e.offset_s + 0.3 for e in events)
            if clear:
                blinks.append(TraceEvent(s, s + 0.4 * length, s + length, float(rng.uniform(*blink_amplitude))))
            s += length + rng.exponential(1.0 / blink_rate_hz)
        for b in blinks:
            x += b.amplitude * bump(t, b.onset_s, b.apex_s, b.offset_s)
    np.maximum(x, 0.0, out=x)
    return Trace(fps=float(fps), t=t, intensity=x, events=tuple(events), blinks=tuple(blinks))


def run_spotter(trace: Trace, spotter: Spotter) -> list[SpottedWindow]:
    """Feed a whole trace, return every window (flush included)."""
    out: list[SpottedWindow] = []
    for frame, t, x in trace.samples():
        out += spotter.update(frame, t, x)
    return out + spotter.flush()
