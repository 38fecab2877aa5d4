"""StageStats percentiles over the last second and RateMeter rates, in simulated time."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.stats import RateMeter, RateMeterOptions, StageStats, StageStatsOptions


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_percentiles_of_a_known_sequence() -> None:
    clock = FakeClock()
    stats = StageStats(StageStatsOptions(clock=clock))
    for ms in range(1, 101):  # 1..100 ms, shuffled order must not matter
        stats.record("face", float((ms * 37) % 100 + 1))
    snap = stats.snapshot()
    expected = np.percentile(np.arange(1, 101), (50, 95))
    assert snap["face"]["p50"] == pytest.approx(expected[0]) == pytest.approx(50.5)
    assert snap["face"]["p95"] == pytest.approx(expected[1]) == pytest.approx(95.05)


def test_only_the_last_second_counts_and_idle_stages_drop_out() -> None:
    clock = FakeClock(10.0)
    stats = StageStats(StageStatsOptions(window_s=1.0, clock=clock))
    for _ in range(50):
        stats.record("motion", 100.0)  # old, slow
    stats.record("classify", 20.0)
    clock.t = 10.6
    for _ in range(50):
        stats.record("motion", 2.0)
    assert stats.snapshot()["motion"]["p95"] == pytest.approx(100.0)  # both batches still inside 1 s
    clock.t = 11.3  # first batch and classify are now older than 1 s
    snap = stats.snapshot()
    assert snap == {"motion": {"p50": 2.0, "p95": 2.0}}
    assert stats.stages == ["motion", "classify"]


def test_ring_keeps_a_fixed_number_of_samples() -> None:
    clock = FakeClock()
    stats = StageStats(StageStatsOptions(capacity=8, clock=clock))
    for ms in range(100):
        stats.record("s", float(ms))
    snap = stats.snapshot()["s"]
    assert snap["p50"] == pytest.approx(np.percentile(np.arange(92, 100), 50))


def test_measure_uses_the_injected_clock() -> None:
    clock = FakeClock(5.0)
    stats = StageStats(StageStatsOptions(clock=clock))
    with stats.measure("align"):
        clock.t += 0.004
    assert stats.snapshot()["align"]["p50"] == pytest.approx(4.0)


def test_rate_meter_skips_the_first_sample() -> None:
    clock = FakeClock(0.0)
    meter = RateMeter(RateMeterOptions(window_s=2.0, clock=clock))
    assert meter.rate() == 0.0
    meter.update(1000)  # a counter that was already high: only sets the baseline
    assert meter.rate() == 0.0
    for step in range(1, 11):
        clock.t = step * 0.1
        meter.update(1000 + 3 * step)  # 3 frames per 0.1 s = 30 fps
    assert meter.rate() == pytest.approx(30.0)
    assert meter.mean_rate() == pytest.approx(30.0)


def test_rate_meter_window_follows_changes() -> None:
    clock = FakeClock(0.0)
    meter = RateMeter(RateMeterOptions(window_s=1.0, clock=clock))
    total = 0
    for step in range(1, 31):  # 3 s at 30 fps
        clock.t = step * 0.1
        total += 3
        meter.update(total)
    for step in range(31, 61):  # then 3 s at 10 fps
        clock.t = step * 0.1
        total += 1
        meter.update(total)
    assert meter.rate() == pytest.approx(10.0)
    assert meter.mean_rate() == pytest.approx((90 + 30 - 3) / 5.9)
    meter.reset()
    assert meter.rate() == 0.0
