"""Streaming spotter: turns the per-frame motion intensity into windows (onset, apex, offset, micro/macro).

A window opens when the intensity rises above ``median + threshold_z * sigma`` of an adaptive baseline
(median and MAD-based sigma over the last seconds, without the samples of spotted windows) and closes when
it falls below the lower, hysteresis threshold. Onset and offset are put where the signal meets the baseline
edge (``median + edge_z * sigma``) before and after, the apex at the peak. After the fall the spotter waits
``lookahead_s`` to be sure the movement is over (a new rise within ``merge_gap_s`` continues the same window);
that wait is the look-ahead cost, reported as ``decided_at`` - ``offset``. Windows shorter than
``min_duration_s`` or narrower than ``min_width_s`` at half their peak (blink-like bursts) are dropped; one
still open after ``max_duration_s`` is closed as macro and its level taken into the baseline. Kind: micro up
to ``micro_max_s`` (onset to offset), else macro. No face (``None``): an open window is dropped, a finished
one still in look-ahead is decided, and the baseline starts again. Everything is in seconds, so a 30 fps
webcam and a 200 fps lab camera behave alike; per frame the work is a few comparisons and appends to
time-pruned deques, with the median/MAD recomputed every ``stats_period_s``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from realtime.events import TimePoint

log = logging.getLogger(__name__)

__all__ = ["STATES", "SpottedWindow", "Spotter", "SpotterSettings"]

STATES = ("idle", "rising", "active", "confirming", "no-face")
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution -> its standard deviation


@dataclass(frozen=True)
class SpotterSettings:
    """Spotting thresholds and timings; times in seconds, thresholds in robust z (sigma = 1.4826 MAD)."""

    baseline_window_s: float = 3.0  # the baseline statistics look this far back
    min_baseline_s: float = 1.0  # no window opens before this much baseline was seen (start, face regained)
    stats_period_s: float = 0.1  # how often the baseline median / MAD are recomputed
    threshold_z: float = 5.0  # a window opens above median + threshold_z * sigma
    hysteresis: float = 0.5  # ... and closes below median + hysteresis * threshold_z * sigma
    edge_z: float = 1.5  # onset / offset: where the signal meets median + edge_z * sigma
    max_rise_s: float = 1.0  # the onset walk-back looks at most this far before the opening crossing
    min_spread: float = 1e-6  # floor of sigma (intensity units): a flat baseline is not infinitely strict
    min_rise: float = 0.0  # floor of the opening threshold above the median (intensity units)
    min_duration_s: float = 0.15  # shorter windows (onset to offset) are dropped
    min_width_s: float = 0.08  # ... and so are those narrower at half their peak (blinks: noise at the
    #                            edges can stretch a burst's onset-offset span, not its half-peak width)
    micro_max_s: float = 0.5  # windows up to this long are micro-expressions, longer ones macro
    max_duration_s: float = 4.0  # a window still open after this long is closed (macro) and a new one begins
    lookahead_s: float = 0.15  # wait after the fall before deciding the movement is over
    merge_gap_s: float = 0.15  # a rise within this long after the fall continues the same window
    max_gap_s: float = 1.0  # a longer gap between samples (or time going back) restarts the spotter

    def __post_init__(self) -> None:
        for name in ("baseline_window_s", "stats_period_s", "threshold_z", "micro_max_s", "max_duration_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("min_baseline_s", "max_rise_s", "min_spread", "min_rise", "min_duration_s", "min_width_s",
                     "lookahead_s", "merge_gap_s", "edge_z", "max_gap_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.hysteresis <= 1.0:
            raise ValueError(f"hysteresis must be in (0, 1], got {self.hysteresis}")
        if self.edge_z > self.hysteresis * self.threshold_z:
            raise ValueError(f"edge_z ({self.edge_z}) must not be above the closing threshold "
                             f"hysteresis * threshold_z ({self.hysteresis * self.threshold_z})")
        if self.merge_gap_s > self.lookahead_s:
            raise ValueError(f"merge_gap_s ({self.merge_gap_s}) cannot exceed lookahead_s ({self.lookahead_s}): "
                             "a window cannot be merged after it was decided")
        if self.min_baseline_s > self.baseline_window_s:
            raise ValueError("min_baseline_s cannot exceed baseline_window_s")


@dataclass(frozen=True)
class SpottedWindow:
    """One spotted movement. ``decided_at`` is the frame on which it was emitted (look-ahead included)."""

    onset: TimePoint
    apex: TimePoint
    offset: TimePoint
    kind: str
    peak: float
    decided_at: TimePoint

    @property
    def duration_s(self) -> float:
        return self.offset.t - self.onset.t

    @property
    def delay_s(self) -> float:
        """The look-ahead cost: from the offset frame to the frame that decided the window."""
        return self.decided_at.t - self.offset.t


_Sample = tuple[int, float, float]  # frame, t, intensity


class Spotter:
    """Streaming spotter: ``update(frame, t, intensity)`` per frame (``None`` = no face), ``flush()`` at the end."""

    def __init__(self, settings: SpotterSettings | None = None) -> None:
        self.settings = settings or SpotterSettings()
        self._bt: deque[float] = deque()  # baseline sample times
        self._bx: deque[float] = deque()  # baseline sample values
        self._recent: deque[_Sample] = deque()  # the last max_rise_s, for the onset walk-back
        self._win: list[_Sample] = []
        self._state = "no-face"
        self._reset()

    # --- public state -------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``idle`` / ``rising`` (above the baseline edge) / ``active`` / ``confirming`` (look-ahead) / ``no-face``."""
        return self._state

    @property
    def ready(self) -> bool:
        """Enough baseline has been seen for windows to open."""
        return self._median is not None

    @property
    def baseline(self) -> float | None:
        """Current baseline median (None until ready)."""
        return self._median

    @property
    def spread(self) -> float | None:
        """Current baseline sigma (1.4826 MAD, floored; None until ready)."""
        return self._sigma

    @property
    def threshold(self) -> float | None:
        """Current opening (high) threshold, for display (None until ready)."""
        return self._high if self.ready else None

    @property
    def low_threshold(self) -> float | None:
        """Current closing (low) threshold (None until ready)."""
        return self._low if self.ready else None

    # --- lifecycle ----------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (baseline included); an open window is dropped."""
        self._reset()

    def close(self) -> None:
        """Nothing to release; present so every component closes the same way."""

    def __enter__(self) -> Spotter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reset(self, state: str = "no-face") -> None:
        self._bt.clear()
        self._bx.clear()
        self._recent.clear()
        self._win = []
        self._state = state
        self._start_t: float | None = None
        self._last: _Sample | None = None
        self._next_stats_t = -math.inf
        self._median: float | None = None
        self._sigma: float | None = None
        self._high = self._low = self._edge = math.inf  # nothing opens until the baseline is ready
        self._win_done: list[_Sample] = []
        self._apex_i = 0
        self._fall_t = 0.0
        self._fall_i = 0
        self._floor_frame = -1  # onsets stay after the previous window's offset

    # --- per frame ----------------------------------------------------------------------------------------

    def update(self, frame_index: int, t: float, intensity: float | None) -> list[SpottedWindow]:
        """Feed one frame; returns the windows decided on this frame (usually none)."""
        s = self.settings
        if not math.isfinite(t):
            raise ValueError(f"frame time must be a finite number of seconds, got {t!r}")
        if intensity is None or not math.isfinite(intensity):
            return self._restart(reason="no face", state="no-face", at=(frame_index, t, math.nan))
        out: list[SpottedWindow] = []
        sample = (frame_index, t, float(intensity))
        last = self._last
        if last is not None and (t < last[1] or t - last[1] > s.max_gap_s):
            log.debug("spotter restarted: t jumped from %.3f to %.3f", last[1], t)
            out = self._restart(reason="time jump", state="idle", at=sample)
        self._last = sample
        if self._start_t is None:
            self._start_t = t
            self._state = "idle"
        recent = self._recent
        recent.append(sample)
        horizon = t - s.max_rise_s
        while recent and recent[0][1] < horizon:
            recent.popleft()

        state = self._state
        if state in ("idle", "rising"):
            if t >= self._next_stats_t:
                self._refresh_stats(t)
            out += self._idle_step(sample)
        elif state == "active":
            self._win.append(sample)
            if sample[2] > self._win[self._apex_i][2]:
                self._apex_i = len(self._win) - 1
            if t - self._win[0][1] >= s.max_duration_s:
                out += self._force_split(sample)
            elif sample[2] < self._low:
                self._state = "confirming"
                self._fall_t = t
                self._fall_i = len(self._win) - 1
        else:  # confirming
            x = sample[2]
            if x > self._high and t - self._fall_t <= s.merge_gap_s:
                self._win.append(sample)  # rose again soon: the same movement goes on
                if x > self._win[self._apex_i][2]:
                    self._apex_i = len(self._win) - 1
                self._state = "active"
            elif x > self._high:
                out += self._emit(decided_at=sample)  # a new movement: decide the old window, open here
                self._state = "idle"
                out += self._idle_step(sample)
            else:
                self._win.append(sample)
                if t - self._fall_t >= s.lookahead_s:
                    out += self._emit(decided_at=sample)
                    self._state = "idle"
        return out

    def flush(self) -> list[SpottedWindow]:
        """End of stream: decide an open window now (offset = the last frame if it never fell)."""
        out: list[SpottedWindow] = []
        if self._state in ("active", "confirming") and self._last is not None:
            out = self._emit(decided_at=self._last, cut=self._state == "active")
        self._reset(state="idle" if self._last is not None else "no-face")
        return out

    # --- internals ----------------------------------------------------------------------------------------

    def _restart(self, *, reason: str, state: str, at: _Sample) -> list[SpottedWindow]:
        """Face lost / time jump: a finished window in look-ahead is still decided; an open one is dropped."""
        out: list[SpottedWindow] = []
        if self._state == "confirming":
            out = self._emit(decided_at=at)
        elif self._state == "active":
            log.debug("open window dropped (%s)", reason)
        self._reset(state=state)
        return out

    def _refresh_stats(self, t: float) -> None:
        s = self.settings
        bt, bx = self._bt, self._bx
        horizon = t - s.baseline_window_s
        while bt and bt[0] < horizon:
            bt.popleft()
            bx.popleft()
        self._next_stats_t = t + s.stats_period_s
        if self._start_t is None or t - self._start_t < s.min_baseline_s or len(bx) < 5:
            return
        values = np.fromiter(bx, dtype=np.float64, count=len(bx))
        median = float(np.median(values))
        sigma = max(_MAD_TO_SIGMA * float(np.median(np.abs(values - median))), s.min_spread)
        rise = max(s.threshold_z * sigma, s.min_rise)
        self._median, self._sigma = median, sigma
        self._high = median + rise
        self._low = median + s.hysteresis * rise
        self._edge = median + min(s.edge_z * sigma, s.hysteresis * rise)

    def _idle_step(self, sample: _Sample) -> list[SpottedWindow]:
        _, t, x = sample
        if x > self._high:  # never while warming up (inf)
            self._open(sample)
            return []
        self._state = "rising" if x > self._edge else "idle"
        self._bt.append(t)
        self._bx.append(x)
        return []

    def _open(self, sample: _Sample) -> None:
        """Open at ``sample``; the onset is the last sample at or below the edge before it (walk back)."""
        edge = self._edge
        recent = self._recent
        start = len(recent) - 1  # recent[-1] is ``sample``
        first_t = sample[1] - self.settings.max_rise_s
        i = start - 1
        floor = self._floor_frame
        while i >= 0 and recent[i][0] > floor and recent[i][1] >= first_t and recent[i][2] > edge:
            i -= 1
        if i < 0 or recent[i][0] <= floor or recent[i][1] < first_t:
            i += 1  # ran out of history / rise time, or reached the previous window: start just after
        self._win = [recent[j] for j in range(i, start + 1)]
        self._apex_i = max(range(len(self._win)), key=lambda j: self._win[j][2])
        self._state = "active"

    def _force_split(self, sample: _Sample) -> list[SpottedWindow]:
        """A window longer than max_duration_s: decide it now (macro); its level becomes the new normal."""
        out = self._emit(decided_at=sample, cut=True)
        for _, t, x in self._win_done:
            self._bt.append(t)
            self._bx.append(x)
        self._next_stats_t = -math.inf
        self._state = "idle"
        return out

    def _offset_index(self, win: list[_Sample]) -> int:
        """From the final fall below the closing threshold (a merged dip stays inside): the first sample at or
        below the edge, else the fall itself."""
        fall = min(self._fall_i, len(win) - 1)
        return next((k for k in range(fall, len(win)) if win[k][2] <= self._edge), fall)

    def _emit(self, *, decided_at: _Sample, cut: bool = False) -> list[SpottedWindow]:
        """Close the window: offset = first sample at/below the edge after the apex (else the fall / the end)."""
        s = self.settings
        win, apex_i = self._win, self._apex_i
        end = len(win) - 1
        if not cut:
            end = self._offset_index(win)
        self._win_done = win[: end + 1]
        self._win = []
        onset, apex, offset = win[0], win[apex_i], win[end]
        self._floor_frame = offset[0]
        duration = offset[1] - onset[1]
        if duration < s.min_duration_s:
            log.debug("window %d-%d dropped: %.3f s is shorter than min_duration_s", onset[0], offset[0], duration)
            return []
        width = _half_peak_width(win, apex_i, self._median if self._median is not None else 0.0)
        if width < s.min_width_s:
            log.debug("window %d-%d dropped: %.3f s wide at half peak (min_width_s)", onset[0], offset[0], width)
            return []
        return [SpottedWindow(
            onset=TimePoint(onset[0], onset[1]),
            apex=TimePoint(apex[0], apex[1]),
            offset=TimePoint(offset[0], offset[1]),
            kind="micro" if duration <= s.micro_max_s else "macro",
            peak=apex[2],
            decided_at=TimePoint(decided_at[0], decided_at[1]),
        )]


def _half_peak_width(win: list[_Sample], apex_i: int, base: float) -> float:
    """Seconds the signal stays above half its peak (over ``base``) around the apex, crossings interpolated."""
    half = base + 0.5 * (win[apex_i][2] - base)

    def crossing(j_out: int, j_in: int) -> float:
        (_, t0, x0), (_, t1, x1) = win[j_out], win[j_in]
        return t1 + (t0 - t1) * (x1 - half) / (x1 - x0) if x1 != x0 else t1

    i = apex_i
    while i > 0 and win[i - 1][2] > half:
        i -= 1
    start = crossing(i - 1, i) if i > 0 else win[0][1]
    j = apex_i
    while j < len(win) - 1 and win[j + 1][2] > half:
        j += 1
    end = crossing(j + 1, j) if j < len(win) - 1 else win[-1][1]
    return end - start
