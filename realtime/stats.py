"""Run-time statistics: per-stage timings (p50/p95 over the last second) and rates from counters.

Rich-style: the busy thread only records (``StageStats.record``, a counter ``+= 1``); whoever reports (the
status sampler, the dashboard) turns that into figures at its own pace. Time comes from an injected
monotonic clock so tests run in simulated time.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

__all__ = ["RateMeter", "RateMeterOptions", "StageStats", "StageStatsOptions"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class StageStatsOptions:
    window_s: float = 1.0  # percentiles over samples recorded in the last window_s seconds
    capacity: int = 1024  # samples kept per stage (a 1000 fps stage still fits a second)
    clock: Clock = field(default=time.monotonic)

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.capacity < 1:
            raise ValueError("window_s must be > 0 and capacity >= 1")


class _StageRing:
    __slots__ = ("t", "ms", "n")

    def __init__(self, capacity: int) -> None:
        self.t = np.full(capacity, -np.inf)
        self.ms = np.zeros(capacity)
        self.n = 0  # samples written so far


class StageStats:
    """Per-stage durations in ms; ``snapshot()`` gives ``{stage: {"p50", "p95"}}`` over the last second.

    ``record`` writes into a fixed-size numpy ring per stage (no allocation once a stage is known).
    Several threads record (the analyser, the classifier and the publisher each time their own stages) and any
    thread may take snapshots: every ring is written and read under one lock.
    """

    def __init__(self, options: StageStatsOptions | None = None) -> None:
        self.options = options or StageStatsOptions()
        self._clock = self.options.clock
        self._stages: dict[str, _StageRing] = {}
        self._lock = threading.Lock()

    def record(self, stage: str, ms: float, now: float | None = None) -> None:
        """One duration of ``stage`` in milliseconds, stamped ``now`` (default: the clock)."""
        t = self._clock() if now is None else now
        ring = self._stages.get(stage)
        if ring is None:
            with self._lock:
                ring = self._stages.setdefault(stage, _StageRing(self.options.capacity))
        with self._lock:
            slot = ring.n % self.options.capacity
            ring.t[slot] = t
            ring.ms[slot] = ms
            ring.n += 1

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """``with stats.measure("face"): ...`` records the block's duration (clock-based)."""
        start = self._clock()
        try:
            yield
        finally:
            end = self._clock()
            self.record(stage, (end - start) * 1000.0, now=end)

    @property
    def stages(self) -> list[str]:
        """Stage names in the order they were first recorded."""
        return list(self._stages)

    def snapshot(self, now: float | None = None) -> dict[str, dict[str, float]]:
        """``{stage: {"p50": ms, "p95": ms}}`` over samples in the last ``window_s``; idle stages omitted."""
        t_now = self._clock() if now is None else now
        since = t_now - self.options.window_s
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            for stage, ring in self._stages.items():
                recent = ring.ms[ring.t > since]
                if recent.size:
                    p50, p95 = np.percentile(recent, (50.0, 95.0))
                    out[stage] = {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}
        return out

    def clear(self) -> None:
        with self._lock:
            self._stages.clear()


@dataclass(frozen=True)
class RateMeterOptions:
    window_s: float = 2.0  # rate over the samples of the last window_s seconds
    max_samples: int = 1000
    clock: Clock = field(default=time.monotonic)


class RateMeter:
    """Turns a growing counter (frames read, frames analysed) into a rate per second.

    Feed it the counter's *total* now and then (``update(total)``); the rate is (newest − oldest) /
    (time between them) over the window: N samples are N − 1 intervals, so the first sample only sets
    the baseline, as in Rich's speed estimate. Fewer than two samples → 0.0.
    """

    def __init__(self, options: RateMeterOptions | None = None) -> None:
        self.options = options or RateMeterOptions()
        self._clock = self.options.clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=self.options.max_samples)
        self._first: tuple[float, float] | None = None
        self._lock = threading.Lock()

    def update(self, total: float, now: float | None = None) -> None:
        t = self._clock() if now is None else now
        with self._lock:
            if self._first is None:
                self._first = (t, total)
            self._samples.append((t, total))
            since = t - self.options.window_s
            while len(self._samples) > 2 and self._samples[1][0] <= since:
                self._samples.popleft()  # keep one sample at or before the window start as the baseline

    def rate(self) -> float:
        """Recent rate (per second) over the window."""
        with self._lock:
            if len(self._samples) < 2:
                return 0.0
            (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return _ratio(c1 - c0, t1 - t0)

    def mean_rate(self) -> float:
        """Rate since the first sample (for the summary's mean fps)."""
        with self._lock:
            if self._first is None or not self._samples:
                return 0.0
            (t0, c0), (t1, c1) = self._first, self._samples[-1]
        return _ratio(c1 - c0, t1 - t0)

    def reset(self) -> None:
        with self._lock:
            self._samples.clear()
            self._first = None


def _ratio(count: float, seconds: float) -> float:
    if seconds <= 0 or not math.isfinite(seconds):
        return 0.0
    return max(0.0, count / seconds)
