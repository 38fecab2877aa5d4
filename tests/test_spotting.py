"""realtime.spotting: the streaming spotter on synthetic intensity traces, scored with training.metrics."""

from __future__ import annotations

import math

import pytest
from traces import Trace, TraceEvent, make_trace, random_events, run_spotter

from realtime.spotting import STATES, SpottedWindow, Spotter, SpotterSettings
from training.metrics import SpottingScores, spotting_report

# "Realistic" noise for a motion-intensity trace: correlated jitter (OU, 80 ms) + white noise (sigma about
# 0.07 together), slow drift, and residual blink-like bursts of 80-150 ms at about one every 3 s, some as
# high as the strongest events. Events rise 8-20 sigma above the baseline.
NOISY = {"noise": 0.05, "white": 0.05, "drift": 0.15, "blink_rate_hz": 0.3}


def _report(windows: list[SpottedWindow], trace: Trace) -> dict[str, SpottingScores]:
    pred = [(w.onset.frame, w.offset.frame, w.kind) for w in windows]
    return spotting_report(pred, trace.true_windows())


def _pooled(fps: float, seeds: range, **noise: float) -> dict[str, SpottingScores]:
    total: dict[str, SpottingScores] = {}
    for seed in seeds:
        events = random_events(duration_s=60, n_micro=12, n_macro=6, amplitude=(0.6, 1.5), seed=seed)
        trace = make_trace(fps=fps, duration_s=60, events=events, seed=seed, **noise)
        for kind, scores in _report(run_spotter(trace, Spotter()), trace).items():
            total[kind] = total[kind] + scores if kind in total else scores
    return total


@pytest.mark.parametrize("fps", [30, 200])
def test_clean_traces_are_spotted_perfectly(fps: int) -> None:
    events = random_events(duration_s=60, n_micro=12, n_macro=6, seed=1)
    trace = make_trace(fps=fps, duration_s=60, events=events)
    report = _report(run_spotter(trace, Spotter()), trace)
    assert report["micro"].tp == 12 and report["micro"].f1 == 1.0
    assert report["macro"].tp == 6 and report["macro"].f1 == 1.0


@pytest.mark.parametrize("fps", [30, 200])
def test_noisy_traces_with_blinks_and_drift(fps: int) -> None:
    report = _pooled(fps, range(4), **NOISY)
    assert report["micro"].f1 >= 0.9, report
    assert report["macro"].f1 >= 0.9, report
    assert report["overall"].f1 >= 0.9, report


def test_blink_like_bursts_alone_are_rejected() -> None:
    trace = make_trace(fps=30, duration_s=60, noise=0.05, white=0.05, blink_rate_hz=0.5, seed=3)
    assert len(trace.blinks) > 15
    assert len(run_spotter(trace, Spotter())) <= 1


def test_back_to_back_events_stay_apart() -> None:
    events = [TraceEvent(2.0, 2.12, 2.3), TraceEvent(2.65, 2.8, 2.95), TraceEvent(3.3, 3.42, 3.6)]
    for fps in (30, 200):
        trace = make_trace(fps=fps, duration_s=6, events=events)
        windows = run_spotter(trace, Spotter())
        assert [w.kind for w in windows] == ["micro"] * 3
        assert _report(windows, trace)["micro"].f1 == 1.0


def test_a_dip_shorter_than_the_merge_gap_is_one_window() -> None:
    # Two bumps 0.1 s apart (dip below the closing threshold for less than merge_gap_s): one movement.
    events = [TraceEvent(2.0, 2.1, 2.2), TraceEvent(2.28, 2.38, 2.5)]
    trace = make_trace(fps=200, duration_s=5, events=events)
    windows = run_spotter(trace, Spotter())
    assert len(windows) == 1
    assert windows[0].onset.t == pytest.approx(2.0, abs=0.01)
    assert windows[0].offset.t == pytest.approx(2.5, abs=0.01)


@pytest.mark.parametrize("fps", [30, 200])
def test_micro_and_macro_are_told_apart_by_duration(fps: int) -> None:
    events = [TraceEvent(2.0, 2.15, 2.3), TraceEvent(4.0, 4.5, 5.2), TraceEvent(7.0, 7.2, 7.45),
              TraceEvent(9.0, 9.3, 9.6)]
    trace = make_trace(fps=fps, duration_s=12, events=events)
    windows = run_spotter(trace, Spotter())
    assert [w.kind for w in windows] == ["micro", "macro", "micro", "macro"]
    for w, e in zip(windows, events, strict=True):
        assert w.duration_s == pytest.approx(e.offset_s - e.onset_s, abs=1.5 / fps)
        assert w.apex.t == pytest.approx(e.apex_s, abs=1 / fps)
        assert w.onset.frame <= w.apex.frame <= w.offset.frame


def test_face_loss_mid_event_drops_the_window_and_spotting_resumes() -> None:
    events = [TraceEvent(2.0, 2.15, 2.3), TraceEvent(4.0, 4.15, 4.4), TraceEvent(7.0, 7.15, 7.3)]
    trace = make_trace(fps=30, duration_s=9, events=events, noise=0.02, seed=2)
    spotter, windows, states = Spotter(), [], set()
    for frame, t, x in trace.samples():
        lost = 4.1 <= t < 4.6  # the face disappears at the second event's apex
        windows += spotter.update(frame, t, None if lost else x)
        states.add(spotter.state)
        if lost:
            assert spotter.state == "no-face" and spotter.threshold is None
    windows += spotter.flush()
    assert {"idle", "active", "confirming", "no-face"} <= states <= set(STATES)
    assert [round(w.onset.t) for w in windows] == [2, 7]  # the cut event is dropped, the next one found
    assert _report(windows, trace)["micro"].fn == 1


def test_face_loss_during_look_ahead_still_decides_the_finished_window() -> None:
    trace = make_trace(fps=30, duration_s=4, events=[TraceEvent(2.0, 2.15, 2.3)])
    spotter, windows = Spotter(), []
    for frame, t, x in trace.samples():
        if spotter.state == "confirming":
            windows += spotter.update(frame, t, None)
            break
        windows += spotter.update(frame, t, x)
    assert len(windows) == 1 and windows[0].decided_at.frame >= windows[0].offset.frame


@pytest.mark.parametrize("fps", [30, 200])
def test_decided_at_is_never_before_the_offset(fps: int) -> None:
    events = random_events(duration_s=60, n_micro=12, n_macro=6, amplitude=(0.6, 1.5), seed=5)
    trace = make_trace(fps=fps, duration_s=60, events=events, seed=5, **NOISY)
    windows = run_spotter(trace, Spotter())
    assert windows
    for w in windows:
        assert w.decided_at.frame >= w.offset.frame and w.delay_s >= 0
    clean = run_spotter(make_trace(fps=fps, duration_s=60, events=events), Spotter())
    lookahead = SpotterSettings().lookahead_s
    assert all(w.delay_s <= lookahead + 1.5 / fps for w in clean)


def _time_iou(a: SpottedWindow, b: SpottedWindow) -> float:
    inter = min(a.offset.t, b.offset.t) - max(a.onset.t, b.onset.t)
    return max(inter, 0.0) / (max(a.offset.t, b.offset.t) - min(a.onset.t, b.onset.t))


def test_settings_in_seconds_give_the_same_windows_at_30_and_200_fps() -> None:
    events = random_events(duration_s=40, n_micro=8, n_macro=3, seed=0)
    clean = {fps: run_spotter(make_trace(fps=fps, duration_s=40, events=events), Spotter()) for fps in (30, 200)}
    assert len(clean[30]) == len(clean[200]) == len(events)
    for a, b in zip(clean[30], clean[200], strict=True):
        assert a.kind == b.kind
        for x, y in ((a.onset, b.onset), (a.apex, b.apex), (a.offset, b.offset)):
            assert abs(x.t - y.t) <= 1 / 30 + 1e-9
    noisy = {fps: run_spotter(make_trace(fps=fps, duration_s=40, events=events, noise=0.02, white=0.02, seed=1),
                              Spotter()) for fps in (30, 200)}
    assert [w.kind for w in noisy[30]] == [w.kind for w in noisy[200]] == [e.kind for e in events]
    assert all(_time_iou(a, b) >= 0.7 for a, b in zip(noisy[30], noisy[200], strict=True))


def test_threshold_and_states() -> None:
    spotter = Spotter()
    assert spotter.state == "no-face" and spotter.threshold is None and not spotter.ready
    trace = make_trace(fps=30, duration_s=3, events=[TraceEvent(2.0, 2.15, 2.3)], noise=0.02, seed=1)
    seen = []
    for frame, t, x in trace.samples():
        spotter.update(frame, t, x)
        seen.append(spotter.state)
        if t > 1.2:
            assert spotter.ready and spotter.threshold is not None and spotter.baseline is not None
            assert spotter.low_threshold < spotter.threshold  # type: ignore[operator]
            assert math.isfinite(spotter.threshold)
    assert seen[0] == "idle" and "active" in seen and "confirming" in seen


def test_a_lasting_rise_is_split_at_max_duration_then_absorbed() -> None:
    fps, spotter, windows = 30, Spotter(), []
    for frame in range(int(20 * fps)):
        t = frame / fps
        windows += spotter.update(frame, t, 1.0 if t < 3.0 else 2.0)  # a step that never comes back
    windows += spotter.flush()
    assert 1 <= len(windows) <= 3
    assert all(w.kind == "macro" and w.duration_s <= SpotterSettings().max_duration_s + 1 / fps for w in windows)
    assert spotter.state == "idle"


def test_memory_stays_bounded_on_a_long_stream() -> None:
    trace = make_trace(fps=200, duration_s=60, noise=0.05, white=0.05, seed=4)
    spotter = Spotter()
    for frame, t, x in trace.samples():
        spotter.update(frame, t, x)
    s = spotter.settings
    assert len(spotter._bx) <= s.baseline_window_s * 200 + 2 * s.stats_period_s * 200 + 2
    assert len(spotter._recent) <= s.max_duration_s * 200 + 2


def test_time_going_back_restarts_cleanly() -> None:
    spotter = Spotter()
    for frame in range(60):
        spotter.update(frame, frame / 30, 1.0)
    assert spotter.ready
    assert spotter.update(60, 0.5, 1.0) == []
    assert not spotter.ready and spotter.state == "idle"
    with pytest.raises(ValueError, match="finite"):
        spotter.update(61, math.nan, 1.0)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="merge_gap_s"):
        SpotterSettings(merge_gap_s=0.3, lookahead_s=0.1)
    with pytest.raises(ValueError, match="hysteresis"):
        SpotterSettings(hysteresis=1.5)
    with pytest.raises(ValueError, match="edge_z"):
        SpotterSettings(edge_z=4.0)
