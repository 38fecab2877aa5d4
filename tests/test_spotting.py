"""mer_analysis.spotting: the streaming spotter on synthetic region-motion streams, scored with mer_core.metrics."""

from __future__ import annotations

import numpy as np
import pytest
from traces import LAG_S, Interval, Stream, TraceEvent, make_stream, random_events, run_spotter

from mer_analysis.motion import REGION_NAMES
from mer_analysis.spotting import REJECT_REASONS, STATES, FaceCoupling, SpottedWindow, Spotter, SpotterOptions
from mer_core.metrics import spotting_scores


def _micro_f1(windows: list[SpottedWindow], stream: Stream) -> float:
    pred = [(w.onset.frame, w.offset.frame, w.kind) for w in windows]
    return spotting_scores(pred, stream.true_windows(), kind="micro").f1


@pytest.mark.parametrize("fps", [30, 200])
def test_isolated_micro_movements_are_spotted_with_their_apex(fps: int) -> None:
    events = random_events(duration_s=40, n=12, seed=fps)
    stream = make_stream(fps=fps, duration_s=40, events=events, seed=fps)
    windows = run_spotter(stream, Spotter())
    assert _micro_f1(windows, stream) == 1.0, windows
    for w in windows:
        e = min(events, key=lambda e: abs(e.apex_s - w.apex.t))
        assert abs(w.apex.t - e.apex_s) <= 0.05 + 1.0 / fps
        assert w.region == e.region
        assert w.onset.frame <= w.apex.frame <= w.offset.frame


def test_a_lasting_change_is_not_a_micro_expression() -> None:
    events = [TraceEvent(3.0, 3.3, 3.6, 0.04, stays=True), TraceEvent(8.0, 8.2, 8.4, 0.03, region="cheek_l")]
    stream = make_stream(fps=30, duration_s=12, events=events)
    windows = run_spotter(stream, Spotter())
    assert [(w.region, w.kind) for w in windows] == [("cheek_l", "micro")], windows


def test_a_talking_mouth_gives_nothing_and_a_brow_raise_while_talking_is_found() -> None:
    brow = TraceEvent(6.0, 6.15, 6.35, 0.02, region="brow_outer_l")
    talk = [Interval(3.0, 10.0, 0.05), Interval(13.0, 15.0, 0.04)]
    for hz in (3.0, 4.0, 5.0):  # 4 Hz: one syllable per lag, where the displacement alone would vanish
        stream = make_stream(fps=30, duration_s=18, events=[brow], talk=talk, talk_hz=hz)
        windows = run_spotter(stream, Spotter())
        assert [w.region for w in windows] == ["brow_outer_l"], (hz, windows)


def test_a_lip_corner_pull_while_talking_is_found_once_the_rest_of_the_face_is_taken_out() -> None:
    """Talking moves the lip corners with the jaw; what the jaw does not explain (a smile's pull) stands out."""
    smile = TraceEvent(9.0, 9.15, 9.4, 0.02, region="lip_corner_l", direction=(0.8, -0.6))
    talk = [Interval(2.0, 16.0, 0.05)]
    for hz in (3.0, 4.0, 5.0):
        stream = make_stream(fps=30, duration_s=18, events=[smile], talk=talk, talk_hz=hz, seed=int(hz))
        windows = run_spotter(stream, Spotter())
        assert [w.region for w in windows] == ["lip_corner_l"], (hz, windows)
        assert abs(windows[0].apex.t - smile.apex_s) <= 0.1
        assert run_spotter(stream, Spotter(SpotterOptions(coupling_s=0))) == [], hz  # hidden without it


def test_face_coupling_removes_what_the_rest_of_the_face_predicts_but_not_the_own_group() -> None:
    rng = np.random.default_rng(0)
    coupling = FaceCoupling(memory_s=5.0)
    corner, chin = REGION_NAMES.index("lip_corner_r"), REGION_NAMES.index("chin")
    brow_l, brow_r = REGION_NAMES.index("brow_inner_l"), REGION_NAMES.index("brow_inner_r")
    for k in range(300):
        d = rng.normal(0, 1e-4, (len(REGION_NAMES), 2)).astype(np.float32)
        d[chin] = rng.normal(0, 0.02, 2)
        d[corner] = 0.5 * d[chin][::-1]
        raise_ = rng.normal(0, 0.01, 2)  # the two brows always move together
        d[brow_l], d[brow_r] = raise_, raise_ * 0.8
        out = coupling.remove(d, k / 30)
    assert np.abs(out[corner]).max() < 2e-3 < np.abs(d[corner]).max()  # learnt: the jaw's share is gone
    np.testing.assert_allclose(out[brow_l], d[brow_l], atol=1e-4)  # never explained by its own group
    np.testing.assert_allclose(out[brow_r], d[brow_r], atol=1e-4)
    coupling.reset()
    np.testing.assert_allclose(coupling.remove(d, 0.0), d)  # nothing learnt after a reset
    for k in range(300):  # a still face: lip corners that owe nothing to the jaw are left (nearly) as measured
        d = rng.normal(0, 1e-3, (len(REGION_NAMES), 2)).astype(np.float32)
        d[chin] = rng.normal(0, 0.02, 2)
        out = coupling.remove(d, k / 30)
    assert np.abs(out[corner] - d[corner]).max() < 2e-4


def test_a_region_that_keeps_moving_needs_a_larger_movement() -> None:
    """The same 2 % bump is spotted on a still brow, not on a cheek that moves that much all the time."""
    busy = [TraceEvent(2.0 + 0.9 * k, 2.2 + 0.9 * k, 2.45 + 0.9 * k, 0.02, region="cheek_r") for k in range(14)]
    probe = [TraceEvent(16.0, 16.15, 16.35, 0.02, region="cheek_r"),
             TraceEvent(19.0, 19.15, 19.35, 0.02, region="brow_inner_r")]
    stream = make_stream(fps=30, duration_s=22, events=busy + probe)
    late = [w for w in run_spotter(stream, Spotter()) if w.onset.t > 15.0]
    assert [w.region for w in late] == ["brow_inner_r"], late


def test_blinks_and_head_moves_are_rejected() -> None:
    lid = TraceEvent(3.0, 3.1, 3.3, 0.04, region="lid_upper_l")
    brow = TraceEvent(7.0, 7.15, 7.35, 0.03, region="brow_inner_r")
    stream = make_stream(fps=30, duration_s=10, events=[lid, brow], blinks=[Interval(2.95, 3.3, 0.9)],
                         head=[Interval(6.9, 7.5, 0.2)])
    spotter = Spotter()
    assert run_spotter(stream, spotter) == []
    assert spotter.rejected["blink"] == 1 and spotter.rejected["head"] == 1
    clean = make_stream(fps=30, duration_s=10, events=[lid, brow])
    assert [w.region for w in run_spotter(clean, Spotter())] == ["lid_upper_l", "brow_inner_r"]


def test_a_movement_too_soon_after_another_is_dropped_for_its_context_counted_and_recorded() -> None:
    """Two brow raises 0.9 s apart: the first is spotted; the second's region was not quiet before it."""
    first, second = TraceEvent(5.0, 5.15, 5.35, 0.03), TraceEvent(5.9, 6.05, 6.25, 0.03)
    stream = make_stream(fps=30, duration_s=10, events=[first, second])
    spotter = Spotter()
    assert list(spotter.rejected) == list(REJECT_REASONS) and not any(spotter.rejected.values())
    windows, scores = [], []
    for i, sample in enumerate(stream.samples):
        windows += spotter.update(sample, index=i, t=float(stream.t[i]))
        scores.append(spotter.score)
    windows += spotter.flush()
    assert [w.onset.t for w in windows] == pytest.approx([first.onset_s], abs=0.1)
    assert spotter.rejected["context"] == 1
    drained = spotter.drain_rejected()
    context = [r for r in drained if r.reason == "context"]
    assert len(context) == 1 and context[0].region == "brow_inner_l"
    assert abs(context[0].t - second.apex_s) <= 0.1 and context[0].frame == round(context[0].t * 30)
    assert context[0].score > SpotterOptions().threshold
    shown = stream.frame(context[0].shown_t)  # where the score curve shows it: a lag after the apex
    assert context[0].shown_t == pytest.approx(context[0].t + stream.frame(LAG_S) / stream.fps)  # whole frames
    assert scores[shown] == pytest.approx(context[0].score)
    assert sum(spotter.rejected.values()) == len(drained) and spotter.drain_rejected() == []  # drained once
    assert all(r.reason in REJECT_REASONS for r in drained)


def test_a_crossing_below_the_smallest_movement_counts_as_too_small() -> None:
    """A bump that stands out of a still face (its score crosses the threshold) but stays below min_peak."""
    small = TraceEvent(5.0, 5.15, 5.35, 0.006)
    stream = make_stream(fps=30, duration_s=10, events=[small])
    spotter = Spotter()
    assert run_spotter(stream, spotter) == []
    # FaceCoupling may echo the bump faintly in another region of this still face; that is dropped too
    near = [r for r in spotter.drain_rejected() if abs(r.t - small.apex_s) <= 0.1 and r.region == "brow_inner_l"]
    assert [(r.region, r.reason) for r in near] == [("brow_inner_l", "too_small")]
    assert near[0].score >= SpotterOptions().threshold
    assert spotter.rejected["too_small"] >= 1


def test_the_record_of_rejections_is_bounded_and_the_counts_are_not() -> None:
    stream = make_stream(fps=30, duration_s=40, seed=5, events=[
        TraceEvent(4.0 + 3 * k, 4.15 + 3 * k, 4.35 + 3 * k, 0.006, region="brow_outer_r") for k in range(10)])
    spotter = Spotter(keep_rejected=3)
    run_spotter(stream, spotter)
    drained = spotter.drain_rejected()
    assert sum(spotter.rejected.values()) > 3 and len(drained) == 3
    assert drained == sorted(drained, key=lambda r: r.t)  # the most recent, oldest first


def test_a_movement_that_does_not_come_back_is_rejected_by_the_probe() -> None:
    stream = make_stream(fps=30, duration_s=8, events=[TraceEvent(4.0, 4.15, 4.35, 0.03)])
    r = REGION_NAMES.index("brow_inner_l")

    def probe(came_back: bool):
        def displacement(a: int, b: int) -> np.ndarray:
            out = np.zeros((len(REGION_NAMES), 2), np.float32)
            out[r] = (0.0, -0.03)
            if came_back and b > stream.frame(4.2):  # onset -> offset: back to about zero
                out[r] = (0.0, -0.002)
            return out
        return displacement

    assert len(run_spotter(stream, Spotter(displacement=probe(True)))) == 1
    spotter = Spotter(displacement=probe(False))
    assert run_spotter(stream, spotter) == []
    assert spotter.rejected["no_return"] == 1


def test_settings_in_seconds_give_the_same_windows_at_30_and_200_fps() -> None:
    events = random_events(duration_s=30, n=8, seed=3)
    found = {}
    for fps in (30, 200):
        windows = run_spotter(make_stream(fps=fps, duration_s=30, events=events, seed=1), Spotter())
        found[fps] = [(w.onset.t, w.apex.t, w.offset.t) for w in windows]
    assert len(found[30]) == len(found[200]) == 8
    for a, b in zip(found[30], found[200], strict=True):
        assert np.allclose(a, b, atol=0.07), (a, b)


@pytest.mark.parametrize("fps", [30, 200])
def test_decided_at_is_after_the_offset_by_the_look_ahead_only(fps: int) -> None:
    s = SpotterOptions()
    events = random_events(duration_s=30, n=8, seed=5)
    windows = run_spotter(make_stream(fps=fps, duration_s=30, events=events), Spotter(s))
    assert windows
    bound = LAG_S + s.max_rise_s + s.context_after_s + s.hold_s + 2.0 / fps
    # a window is decided once its fall and the quiet context after it were seen, not max_rise_s after its apex
    # (other regions crossing the threshold at the same frame may need their own fall: 0.1 s of slack)
    after_offset = LAG_S + s.context_after_s + s.hold_s + 0.1
    for w in windows:
        assert w.decided_at.frame > w.offset.frame
        assert 0 < w.delay_s <= bound, (w, bound)
        assert w.decided_at.t - w.offset.t <= after_offset, (w, after_offset)


def test_face_loss_resets_and_spotting_resumes() -> None:
    events = [TraceEvent(3.0, 3.15, 3.35, 0.03), TraceEvent(9.0, 9.15, 9.35, 0.03, region="cheek_l")]
    stream = make_stream(fps=30, duration_s=12, events=events, no_face=[Interval(3.1, 5.0)])
    spotter = Spotter()
    states = []
    windows: list[SpottedWindow] = []
    for i, sample in enumerate(stream.samples):
        windows += spotter.update(sample, index=i, t=float(stream.t[i]))
        states.append(spotter.state)
    assert "no-face" in states and "warming-up" in states and states[-1] in STATES
    assert [w.region for w in windows] == ["cheek_l"]  # the first movement was cut by the face loss


def test_time_going_back_restarts_cleanly() -> None:
    stream = make_stream(fps=30, duration_s=8, events=[TraceEvent(5.0, 5.15, 5.35, 0.03)])
    spotter = Spotter()
    for i, sample in enumerate(stream.samples[:60]):
        spotter.update(sample, index=i, t=float(stream.t[i]))
    assert spotter.ready
    replay = run_spotter(stream, spotter)  # the same stream again from t = 0: a fresh start, no crash
    assert len(replay) == 1


def test_threshold_score_and_states() -> None:
    spotter = Spotter()
    assert spotter.threshold is None and not spotter.ready and spotter.state == "no-face"
    stream = make_stream(fps=30, duration_s=6, events=[TraceEvent(4.0, 4.15, 4.35, 0.03)])
    scores = []
    for i, sample in enumerate(stream.samples):
        spotter.update(sample, index=i, t=float(stream.t[i]))
        scores.append(spotter.score)
        assert spotter.state in STATES
    threshold = spotter.threshold
    assert threshold is not None and threshold == SpotterOptions().threshold
    assert max(scores) > 4 * threshold
    assert np.isfinite(scores).all()


def test_memory_stays_bounded_on_a_long_stream() -> None:
    spotter = Spotter()
    stream = make_stream(fps=30, duration_s=60, events=random_events(duration_s=60, n=20, seed=2))
    run_spotter(stream, spotter)
    stream2 = make_stream(fps=30, duration_s=60)
    for i, sample in enumerate(stream2.samples):
        spotter.update(sample, index=i, t=float(stream2.t[i]))
    assert len(spotter._frames) < 10 * 30
    assert len(spotter._levels.values) <= SpotterOptions().level_window_s * 30 + 2


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="threshold"):
        SpotterOptions(threshold=0)
    with pytest.raises(ValueError, match="max_peak"):
        SpotterOptions(min_peak=0.1, max_peak=0.05)
    with pytest.raises(ValueError, match="edge_fraction"):
        SpotterOptions(edge_fraction=1.5)
    with pytest.raises(ValueError, match="max_blink"):
        SpotterOptions(max_blink=1.0)
