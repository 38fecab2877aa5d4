"""Deterministic synthetic region-motion streams with known windows, for spotter tests.

A stream is sampled from one continuous-time process, so the same movements at 30 fps and at 200 fps are the
same movements. Each face region has a position (IOD units) made of temporally correlated noise
(Ornstein-Uhlenbeck) plus events (raised-cosine rise onset→apex and fall apex→offset; or a step that stays),
talking (a sinusoid on mouth regions), blinks (the eye opening drops) and head moves (the head's residual
motion rises). A :class:`mer_analysis.motion.MotionSample` per frame then carries each region's displacement over
the lag, as the motion meter would measure it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mer_analysis.motion import REGION_NAMES, MotionSample
from mer_analysis.spotting import SpottedWindow, Spotter

MICRO_MAX_S = 0.5
LAG_S = 0.25


@dataclass(frozen=True)
class TraceEvent:
    """A movement of ``region``: onset, apex, offset in seconds, its peak displacement (IOD) and direction.
    ``stays`` makes it a step: it rises and does not come back (a lasting expression)."""

    onset_s: float
    apex_s: float
    offset_s: float
    amplitude: float = 0.03
    region: str = "brow_inner_l"
    direction: tuple[float, float] = (0.0, -1.0)
    stays: bool = False

    @property
    def kind(self) -> str:
        return "micro" if self.offset_s - self.onset_s <= MICRO_MAX_S else "macro"


@dataclass(frozen=True)
class Interval:
    start_s: float
    stop_s: float
    amount: float = 1.0


@dataclass(frozen=True)
class Stream:
    fps: float
    t: np.ndarray
    samples: tuple[MotionSample | None, ...]
    events: tuple[TraceEvent, ...]

    def frame(self, seconds: float) -> int:
        return int(round(seconds * self.fps))

    def true_windows(self) -> list[tuple[int, int, str]]:
        """Ground truth as ``(onset_frame, offset_frame, kind)`` (frames inclusive); steps are not windows."""
        return [(self.frame(e.onset_s), self.frame(e.offset_s), e.kind) for e in self.events if not e.stays]


def bump(t: np.ndarray, onset: float, apex: float, offset: float) -> np.ndarray:
    """0 outside (onset, offset), raised-cosine up to 1 at the apex and back down."""
    out = np.zeros_like(t)
    rise = (t > onset) & (t <= apex)
    fall = (t > apex) & (t < offset)
    out[rise] = 0.5 - 0.5 * np.cos(math.pi * (t[rise] - onset) / max(apex - onset, 1e-9))
    out[fall] = 0.5 + 0.5 * np.cos(math.pi * (t[fall] - apex) / max(offset - apex, 1e-9))
    return out


def step(t: np.ndarray, onset: float, apex: float) -> np.ndarray:
    """0 before the onset, raised-cosine up to 1 at the apex, 1 after."""
    out = bump(t, onset, apex, math.inf)
    out[t > apex] = 1.0
    return out


def random_events(*, duration_s: float, n: int, amplitude: tuple[float, float] = (0.02, 0.04),
                  lead_s: float = 2.0, gap_s: tuple[float, float] = (1.5, 2.5), seed: int = 0,
                  regions: Sequence[str] = ("brow_inner_l", "brow_outer_r", "lip_corner_l", "cheek_r", "chin"),
                  ) -> list[TraceEvent]:
    """``n`` micro-expressions (0.2-0.45 s) on random regions, ``gap_s`` apart, after ``lead_s``."""
    rng = np.random.default_rng(seed)
    events, t = [], lead_s
    for _ in range(n):
        length = rng.uniform(0.2, 0.45)
        apex = t + length * rng.uniform(0.35, 0.6)
        angle = rng.uniform(0, 2 * math.pi)
        events.append(TraceEvent(t, apex, t + length, float(rng.uniform(*amplitude)),
                                 str(regions[int(rng.integers(len(regions)))]), (math.cos(angle), math.sin(angle))))
        t += length + rng.uniform(*gap_s)
    if events and events[-1].offset_s > duration_s - 1.0:
        raise ValueError(f"{len(events)} events do not fit in {duration_s} s")
    return events


def make_stream(*, fps: float, duration_s: float, events: Sequence[TraceEvent] = (), noise: float = 0.001,
                noise_tau_s: float = 0.05, talk: Sequence[Interval] = (), talk_hz: float = 4.0,
                blinks: Sequence[Interval] = (), head: Sequence[Interval] = (), no_face: Sequence[Interval] = (),
                lag_s: float = LAG_S, seed: int = 0) -> Stream:
    """Sample a stream at ``fps``. ``talk`` moves the mouth regions by ``amount`` IOD at ``talk_hz``; ``blinks``
    close the eyes by ``amount`` (0..1); ``head`` sets the head's residual motion to ``amount``."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * fps))
    t = np.arange(n, dtype=np.float64) / fps
    regions = len(REGION_NAMES)
    a = math.exp(-1.0 / (fps * noise_tau_s))
    pos = np.zeros((n, regions, 2))
    pos[0] = rng.normal(0.0, noise, (regions, 2))
    shocks = rng.normal(0.0, noise * math.sqrt(1 - a * a), (n, regions, 2))
    for i in range(1, n):
        pos[i] = a * pos[i - 1] + shocks[i]
    for e in events:
        r = REGION_NAMES.index(e.region)
        shape = step(t, e.onset_s, e.apex_s) if e.stays else bump(t, e.onset_s, e.apex_s, e.offset_s)
        pos[:, r] += e.amplitude * shape[:, None] * np.array(e.direction)[None, :]
    mouth = [REGION_NAMES.index(m) for m in ("lip_upper", "lip_lower", "chin", "lip_corner_l", "lip_corner_r")]
    for span in talk:
        inside = (t >= span.start_s) & (t <= span.stop_s)
        wave = span.amount * 0.5 * (1 - np.cos(2 * math.pi * talk_hz * (t - span.start_s)))
        for r in mouth:
            pos[inside, r, 1] += wave[inside]
    eye = np.full(n, 0.3)
    for span in blinks:
        eye -= 0.3 * span.amount * bump(t, span.start_s, (span.start_s + span.stop_s) / 2, span.stop_s)
    head_motion = np.full(n, 0.01)
    for span in head:
        head_motion += span.amount * bump(t, span.start_s, (span.start_s + span.stop_s) / 2, span.stop_s)
    lag = int(round(lag_s * fps))
    gone = np.zeros(n, bool)
    for span in no_face:
        gone |= (t >= span.start_s) & (t <= span.stop_s)
    samples: list[MotionSample | None] = []
    for i in range(n):
        if gone[i]:
            samples.append(None)
            continue
        j = i - lag
        since_ok = j >= 0 and not gone[j:i + 1].any()
        disp = (pos[i] - pos[j]).astype(np.float32) if since_ok else None
        samples.append(MotionSample(i, float(t[i]), j if since_ok else None, disp, float(head_motion[i]),
                                    float(eye[i])))
    return Stream(fps=float(fps), t=t, samples=tuple(samples), events=tuple(events))


def run_spotter(stream: Stream, spotter: Spotter) -> list[SpottedWindow]:
    """Feed a whole stream, return every window (flush included)."""
    out: list[SpottedWindow] = []
    for i, sample in enumerate(stream.samples):
        out += spotter.update(sample, index=i, t=float(stream.t[i]))
    return out + spotter.flush()
