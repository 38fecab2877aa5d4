"""The pipeline's own rules, with the analysis chain stubbed: windows cut by the end, the dashboard snapshot."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fakes import ScriptedAnalysis, fake_card, tracked_face

from mer_analysis.chain import FrameResult, WindowJob
from mer_analysis.spotting import REJECT_REASONS, SpottedWindow
from mer_core.events import EventRecord, Record, SummaryRecord, TimePoint
from realtime.dashboard import render_text
from realtime.face import TrackedFace
from realtime.pipeline import Pipeline, PipelineOptions
from realtime.sources import ArraySource

pytestmark = pytest.mark.usefixtures("no_thread_left_behind")

FPS = 30.0


def _point(frame: int) -> TimePoint:
    return TimePoint(frame, frame / FPS)


def _job(onset: int, offset: int, decided: int) -> WindowJob:
    window = SpottedWindow(onset=_point(onset), apex=_point((onset + offset) // 2), offset=_point(offset),
                           kind="micro", peak=1.0, decided_at=_point(decided))
    return WindowJob(window, None)


class _OpenWindowAtTheEnd(ScriptedAnalysis):
    """Stands in for the analysis chain: nothing spotted while frames come; at the end (flush) a finished
    window still in its look-ahead, and a 433 ms window still open on the last frame seen — a longer
    expression cut short by the end of the source or --duration."""

    def flush(self) -> tuple[WindowJob, ...]:
        return _job(2, 8, self.last), _job(self.last - 13, self.last, self.last)


def _run(options: PipelineOptions, frames: int = 40) -> list[Record]:
    records: list[Record] = []
    source = ArraySource([np.zeros((48, 48, 3), np.uint8)] * frames, fps=FPS, name="array:test")
    Pipeline(source, None, None, records.append, options, analyzer=_OpenWindowAtTheEnd()).run()
    return records


@pytest.mark.parametrize("duration_s", [None, 0.8], ids=["end-of-source", "duration"])
def test_a_window_cut_by_the_end_is_not_published_as_micro(duration_s: float | None) -> None:
    records = _run(PipelineOptions(fast=True, duration_s=duration_s))
    events = [r for r in records if isinstance(r, EventRecord)]
    assert [(e.onset.frame, e.offset.frame) for e in events] == [(2, 8)]  # the finished one only
    summary = records[-1]
    assert isinstance(summary, SummaryRecord) and summary.events == {"micro": 1, "macro": 0}


def test_the_snapshot_carries_the_endpoint() -> None:
    source = ArraySource([np.zeros((48, 48, 3), np.uint8)], fps=FPS, name="array:test")
    pipeline = Pipeline(source, None, None, lambda record: None, analyzer=ScriptedAnalysis(),
                        endpoint="tcp://127.0.0.1:5556")
    snapshot = pipeline.snapshot()
    assert snapshot.endpoint == "tcp://127.0.0.1:5556"
    assert "tcp://127.0.0.1:5556" in render_text(snapshot, width=100)


class _NoneEngine:
    """Answers "none" (not a micro-expression) for every window, with the megc3n labels."""

    name = "fake"

    def __init__(self) -> None:
        self.card = fake_card(("negative", "positive", "surprise", "none"), "fake-megc3n")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = np.full((len(batch), 4), 0.05, np.float32)
        out[:, 3] = 0.85
        return out


class _TwoWindows(ScriptedAnalysis):
    """Two finished micro windows on the way, with model inputs."""

    def windows_at(self, index: int, captured_at: float | None) -> tuple[WindowJob, ...]:
        if index in (15, 30):
            window = SpottedWindow(onset=_point(index - 8), apex=_point(index - 5), offset=_point(index - 2),
                                   kind="micro", peak=1.0, decided_at=_point(index))
            return (WindowJob(window, np.zeros((1, 1, 8, 8), np.float32)),)
        return ()


def test_a_window_the_model_calls_none_is_vetoed_and_counted() -> None:
    records: list[Record] = []
    source = ArraySource([np.zeros((48, 48, 3), np.uint8)] * 40, fps=FPS, name="array:test")
    Pipeline(source, None, _NoneEngine(), records.append, PipelineOptions(fast=True), analyzer=_TwoWindows()).run()
    events = [r for r in records if isinstance(r, EventRecord)]
    summary = [r for r in records if isinstance(r, SummaryRecord)][-1]
    assert events == [] and summary.vetoed == 2 and summary.events == {"micro": 0, "macro": 0}
    assert SummaryRecord.from_dict(summary.to_dict()).vetoed == 2


def test_the_face_thread_changes_nothing_but_speed(face_model_path: Path, shared_faces: Path) -> None:
    """MediaPipe on its own thread a few frames ahead gives the analyser the same faces in the same order:
    every frame's result is what the single-threaded chain gives."""
    import cv2

    from realtime.face import FaceTracker, FaceTrackerOptions

    cap = cv2.VideoCapture(str(shared_faces / "single_face.mp4"))
    frames = []
    while (frame := cap.read()[1]) is not None:
        frames.append(frame)
    cap.release()

    def results(face_thread: bool) -> list[tuple[int, bool, float | None]]:
        seen: list[tuple[int, bool, float | None]] = []
        options = PipelineOptions(fast=True, face_thread=face_thread,
                                  on_frame=lambda r: seen.append((r.index, r.face, r.score)))
        with FaceTracker(FaceTrackerOptions(model_path=face_model_path)) as tracker:
            Pipeline(ArraySource(frames, fps=FPS, name="array:face"), tracker, None, lambda r: None, options).run()
        return seen

    threaded, single = results(True), results(False)
    assert [r[0] for r in threaded] == list(range(len(frames)))
    assert threaded == single


class _CentreCrop:
    """A face on every frame: the frame's centre as the aligned crop."""

    landmarks = np.random.default_rng(0).uniform(20, 108, (478, 2)).astype(np.float32)

    def process(self, frame_bgr: np.ndarray, t: float) -> TrackedFace | None:
        return tracked_face(np.ascontiguousarray(frame_bgr[:128, :128, 0]), self.landmarks)


def test_a_face_thread_that_starts_late_loses_no_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """The analyser took a face thread not yet started for one that had ended, and stopped the run after a
    frame or two when the starting thread was descheduled between the two starts (seen under load)."""
    frames = [np.full((160, 160, 3), i, np.uint8) for i in range(30)]
    pipeline = Pipeline(ArraySource(frames, fps=FPS, name="array:late"), _CentreCrop(), None, lambda r: None,
                        PipelineOptions(fast=True, face_thread=True))
    start = pipeline._face_thread.start

    def late_start() -> None:
        time.sleep(0.5)  # the starting thread descheduled: longer than the analyser's 0.1 s poll
        start()

    monkeypatch.setattr(pipeline._face_thread, "start", late_start)
    summary = pipeline.run()
    assert summary.frames == 30 and summary.face_frames == 30


def test_the_rule_spotters_rejections_reach_the_summary_and_the_dashboard() -> None:
    """As the classifier's counts: from the Analyzer's spotter to the summary record and the snapshot; a
    stand-in analysis chain (or the learned spotter) has none, and the field is left out."""
    frames = [np.full((160, 160, 3), i, np.uint8) for i in range(20)]
    pipeline = Pipeline(ArraySource(frames, fps=FPS, name="array:rules"), _CentreCrop(), None, lambda r: None,
                        PipelineOptions(fast=True))
    summary = pipeline.run()
    assert summary.rejected == dict.fromkeys(REJECT_REASONS, 0)
    assert pipeline.snapshot().rejected == summary.rejected
    assert "no candidate dropped yet" in render_text(pipeline.snapshot(), width=120)
    last = _run(PipelineOptions(fast=True))[-1]
    assert isinstance(last, SummaryRecord) and last.rejected is None and "rejected" not in last.to_dict()


class _SlowCopy(deque[float]):
    """A deque whose copying takes a while and lets other threads run meanwhile (as on a Python without the
    GIL, or when a garbage collection runs Python code in the middle): if the analyser thread appends during
    a copy, the copy fails with "RuntimeError: deque mutated during iteration"."""

    def __iter__(self) -> Iterator[float]:
        for i, value in enumerate(super().__iter__()):
            if i % 16 == 0:
                time.sleep(0)  # let the other threads run
            yield value


class _IndexAsIntensity(ScriptedAnalysis):
    """The motion intensity of frame k is k, so a copy of the recent values shows whether it is whole."""

    def process(self, frame: np.ndarray, index: int, t: float, *, captured_at: float | None = None) -> FrameResult:
        result = super().process(frame, index, t, captured_at=captured_at)
        return FrameResult(index, t, True, float(index), {}, result.jobs, captured_at)


def test_the_dashboard_copies_the_intensity_whole_while_frames_come() -> None:
    """The dashboard's thread copies the recent intensities while the analyser thread appends to them: every
    copy is a run of consecutive frames, and never fails."""
    frames = 3000
    source = ArraySource([np.zeros((8, 8, 3), np.uint8)] * frames, fps=FPS, name="array:test")
    pipeline = Pipeline(source, None, None, lambda record: None, PipelineOptions(fast=True),
                        analyzer=_IndexAsIntensity())
    pipeline._intensity = _SlowCopy(maxlen=pipeline.options.sparkline_len)
    copies: list[tuple[float, ...]] = []
    failures: list[BaseException] = []

    def watch() -> None:
        while not done.is_set():
            try:
                copies.append(tuple(pipeline.snapshot().intensity))
            except Exception as exc:  # the dashboard would log it and keep its last screen
                failures.append(exc)

    done = threading.Event()
    dashboard = threading.Thread(target=watch, name="test-dashboard")
    dashboard.start()
    try:
        summary = pipeline.run()
    finally:
        done.set()
        dashboard.join(timeout=10.0)
    assert summary.frames == frames and failures == []
    assert len(copies) > 10
    for values in filter(None, copies):
        first = int(values[0])
        assert values == tuple(float(k) for k in range(first, first + len(values)))
