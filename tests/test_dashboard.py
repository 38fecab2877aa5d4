"""Dashboard rendering (pure), the refresh thread, and the plain-log fallback."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from rich.console import Console

from mer_core.events import EventRecord, TimePoint
from realtime.dashboard import (
    BLOCKS,
    STAGES,
    Dashboard,
    DashboardSnapshot,
    PlainLog,
    Sparkline,
    make_display,
    render_text,
    sparkline,
)

pytestmark = pytest.mark.usefixtures("no_thread_left_behind")




def event(i: int, label: str | None = "happiness") -> EventRecord:
    f = 40 * i + 10
    return EventRecord(
        onset=TimePoint(f, f / 30),
        apex=TimePoint(f + 4, (f + 4) / 30),
        offset=TimePoint(f + 9, (f + 9) / 30),
        duration_ms=300.0,
        kind="micro" if label else "macro",
        intensity=0.5,
        label=label,
        confidence=0.87 if label else None,
        probs={"happiness": 0.87, "surprise": 0.09, "disgust": 0.04} if label else {},
        latency_ms=23.0,
    )


def snapshot(n_events: int = 3, **kw: Any) -> DashboardSnapshot:
    values: dict[str, Any] = dict(
        source="file:clip.mp4",
        engine="onnxruntime-cpu",
        engine_reason="TensorRT not installed",
        model="dianet-synth 1.0",
        elapsed_s=65.5,
        frames=900,
        analyzed=897,
        dropped=7,
        fps_in=30.0,
        fps_proc=29.4,
        face=True,
        face_frames=850,
        intensity=[0.01 * (i % 20) for i in range(150)],
        intensity_window_s=5.0,
        threshold=0.12,
        spotting="rising",
        events=[event(i) for i in range(n_events)],
        event_counts={"micro": n_events, "macro": 0},
        stage_ms={"face": {"p50": 8.5, "p95": 12.25}, "classify": {"p50": 15.0, "p95": 21.0}},
        message="",
    )
    values.update(kw)
    return DashboardSnapshot(**values)


def test_render_text_shows_the_key_fields() -> None:
    text = render_text(snapshot(), width=100)
    for needle in (
        "file:clip.mp4",
        "onnxruntime-cpu",
        "TensorRT not installed",
        "dianet-synth 1.0",
        "30.0",
        "29.4",
        "dropped 7",
        "yes",
        "rising",
        "threshold",
        "0.12",
        "happiness",
        "surprise",
        "0.87",
        "micro",
        "face",
        "8.5",
        "12.2",
        "classify",
        "01:05.5",
    ):
        assert needle in text, needle
    assert any(block in text for block in BLOCKS[1:])  # the sparkline is drawn
    assert "┄" in text  # the threshold is marked
    assert all(len(line) <= 100 for line in text.splitlines())


def test_the_header_shows_where_records_are_published() -> None:
    assert "tcp://127.0.0.1:5556" in render_text(snapshot(endpoint="tcp://127.0.0.1:5556"), width=100)
    off = [line for line in render_text(snapshot(endpoint=""), width=100).splitlines() if "zmq" in line]
    assert len(off) == 1 and "off" in off[0]


def test_the_stage_panel_keeps_its_height_and_lists_every_stage() -> None:
    timings = {"p50": 1.0, "p95": 2.0}
    some = {"face": timings, "classify": timings}
    every = {stage: timings for stage in STAGES}
    texts = [render_text(snapshot(stage_ms=stage_ms), width=100) for stage_ms in ({}, some, every)]
    assert len({len(text.splitlines()) for text in texts}) == 1  # the same height whatever was timed
    for text, timed in zip(texts, ({}, some, every), strict=True):
        panel = text.split("stage ms")[1].splitlines()  # the stage panel is the last one
        cells = [line.split("│")[-2].split() for line in panel if line.endswith("│")]
        rows = {row[0]: row[1:] for row in cells if row and row[0] in STAGES}
        assert set(rows) == set(STAGES)
        for stage in STAGES:
            assert rows[stage] == (["1.0", "2.0"] if stage in timed else ["-", "-"]), stage


def test_render_empty_snapshot_does_not_fail() -> None:
    text = render_text(DashboardSnapshot(), width=80)
    assert "no events yet" in text and "waiting for a face" in text


def test_sparkline_levels() -> None:
    assert sparkline([0.0, 0.5, 1.0]) == "▁▄█"
    assert sparkline(list(range(100)), width=10) == sparkline(list(range(90, 100)), vmax=99)
    assert sparkline([]) == ""


def test_multirow_sparkline_marks_the_threshold_row_and_highlights_what_is_above() -> None:
    lines = Sparkline([0.0, 0.1, 1.0], threshold=0.9, height=4).lines(width=6)
    assert len(lines) == 4
    plain = [line.plain for line in lines]
    assert all(len(p) == 6 for p in plain)
    assert [p[2] for p in plain] == ["▄", "█", "█", "█"]  # scale top = 1.25 x threshold: 3.5 of 4 rows
    assert plain[0] == "┄┄▄┄┄┄"  # the threshold (3.2 rows up) is marked in the top row
    assert sum("┄" in p for p in plain) == 1
    styles = {str(span.style) for line in lines for span in line.spans}
    assert "bold red" in styles and "green" in styles


def test_dashboard_thread_pulls_snapshots_and_stops() -> None:
    calls = []
    pulled = threading.Event()

    def get() -> DashboardSnapshot:
        calls.append(1)
        if len(calls) >= 3:
            pulled.set()
        return snapshot()

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100, color_system="truecolor")
    with Dashboard(get, refresh_hz=50, console=console) as dash:  # capped at 10 Hz
        assert pulled.wait(5.0)
    assert dash.frames_drawn >= 3
    assert "file:clip.mp4" in buffer.getvalue()
    dash.stop()  # idempotent


def test_dashboard_survives_a_failing_snapshot() -> None:
    state = {"n": 0}
    done = threading.Event()

    def get() -> DashboardSnapshot:
        state["n"] += 1
        if state["n"] >= 4:
            done.set()
        if state["n"] % 2 == 0:
            raise RuntimeError("pipeline mid-update")
        return snapshot()

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with Dashboard(get, refresh_hz=10, console=console):
        assert done.wait(5.0)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_log_prints_one_line_per_new_event_and_periodic_status() -> None:
    out = io.StringIO()
    current = {"snap": snapshot(n_events=0)}
    clock = Clock()
    plain = PlainLog(lambda: current["snap"], file=out, status_every_s=10.0, clock=clock)
    assert plain.poll() == 0
    current["snap"] = snapshot(n_events=2)
    assert plain.poll() == 2
    assert plain.poll() == 0  # nothing new
    current["snap"] = snapshot(n_events=3)
    clock.t = 11.0
    assert plain.poll() == 2  # the third event and a status line
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert all("event" in line and "micro" in line and "happiness" in line for line in lines[:3])
    assert "status" in lines[3] and "dropped 7" in lines[3]


def test_plain_log_prints_windows_in_the_order_published_not_by_onset() -> None:
    """--windows publishes in file order; a later window earlier in the video is still a new event."""
    out = io.StringIO()
    published = [event(5), event(1, label="surprise"), event(3)]
    current = {"snap": snapshot(n_events=0)}
    plain = PlainLog(lambda: current["snap"], file=out, status_every_s=0)
    for n in (1, 3):
        current["snap"] = snapshot(events=published[:n], event_counts={"micro": n, "macro": 0})
        plain.poll()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "surprise" in lines[1]


def test_plain_log_thread_prints_the_last_events_at_stop() -> None:
    out = io.StringIO()
    with PlainLog(lambda: snapshot(n_events=2), file=out, poll_hz=10.0) as plain:
        pass
    assert plain.lines == 2
    assert len(out.getvalue().splitlines()) == 2


def test_make_display_picks_by_terminal() -> None:
    assert isinstance(make_display(snapshot, console=Console(file=io.StringIO())), PlainLog)
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(make_display(snapshot, console=terminal), Dashboard)


def test_windows_published_unlabelled_are_shown_only_when_there_are_some() -> None:
    assert "unlabelled" not in render_text(snapshot(), width=120)
    assert "7 unlabelled" in render_text(snapshot(unlabelled=7), width=120)


def test_the_rule_spotters_dropped_candidates_are_one_row_when_it_gives_them() -> None:
    assert "rejected" not in render_text(snapshot(), width=120)  # a spotter that does not say: no row
    quiet = [ln for ln in render_text(snapshot(rejected={"too_small": 0, "context": 0}), width=120).splitlines()
             if "rejected" in ln]
    assert len(quiet) == 1 and "no candidate dropped yet" in quiet[0]
    row = [ln for ln in render_text(snapshot(rejected={"too_small": 12, "context": 3, "blink": 0}),
                                    width=120).splitlines() if "rejected" in ln]
    assert len(row) == 1 and "15 candidates" in row[0] and "too_small 12" in row[0] and "context 3" in row[0]
    assert "blink" not in row[0]
