"""The classifier worker: one thread emits every event, overflowed windows included, and the capture time
that travelled with a window is what latency is measured from."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fakes import ScriptedAnalysis, fake_card

from mer_analysis.chain import WindowJob
from mer_analysis.spotting import SpottedWindow
from mer_core.events import EventRecord, Record, SummaryRecord, TimePoint
from realtime.classifier import ClassifierOptions, ClassifierWorker
from realtime.pipeline import Pipeline, PipelineOptions
from realtime.sources import ArraySource

pytestmark = pytest.mark.usefixtures("no_thread_left_behind")

FPS = 30.0
LABELS = ("negative", "positive", "surprise")


def _point(frame: int) -> TimePoint:
    return TimePoint(frame, frame / FPS)


def _job(decided: int, *, closed_at: float | None = None, offset_at: float | None = None) -> WindowJob:
    window = SpottedWindow(onset=_point(decided - 8), apex=_point(decided - 5), offset=_point(decided - 2),
                           kind="micro", peak=1.0, decided_at=_point(decided))
    return WindowJob(window, np.zeros((1, 1, 8, 8), np.float32), closed_at=closed_at, offset_at=offset_at)


class _GatedEngine:
    """Blocks in ``predict`` until ``release`` is set; says when it has entered (a handshake, not a sleep)."""

    name = "gated"

    def __init__(self) -> None:
        self.card = fake_card(LABELS, "gated-megc3")
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.release.wait(timeout=30.0), "the test never released the engine"
        out = np.zeros((len(batch), len(LABELS)), np.float32)
        out[:, 1] = 1.0
        return out


def test_overflowed_windows_are_published_by_the_worker_thread_and_counted() -> None:
    engine = _GatedEngine()
    emitted: list[tuple[EventRecord, str]] = []

    def emit(record: EventRecord) -> None:
        emitted.append((record, threading.current_thread().name))

    worker = ClassifierWorker(engine, emit, source="test", clock=lambda: 10.0,
                              options=ClassifierOptions(queue_size=2, max_batch=1))
    worker.start()
    try:
        worker.submit(_job(10, closed_at=9.5, offset_at=9.25))
        assert engine.entered.wait(timeout=30.0)  # the worker holds job 10, blocked in predict
        for decided in range(11, 17):  # 2 fit in the queue, 4 overflow
            worker.submit(_job(decided))
        assert worker.overflow == 4
        assert emitted == []  # nothing published from the submitting thread
    finally:
        engine.release.set()
        worker.stop()
    assert sorted(r.offset.frame + 2 for r, _ in emitted) == list(range(10, 17))  # each window once
    assert {name for _, name in emitted} == {"mer-classifier"}
    assert worker.classified == 3 and worker.overflow == 4
    labels = {r.offset.frame + 2: r.label for r, _ in emitted}
    assert [labels[f] for f in (10, 11, 12)] == ["positive"] * 3
    assert [labels[f] for f in range(13, 17)] == [None] * 4  # overflowed: published unclassified
    first = next(r for r, _ in emitted if r.offset.frame == 8)
    assert first.latency_ms == pytest.approx(500.0) and first.delay_ms == pytest.approx(750.0)


class _ManyWindows(ScriptedAnalysis):
    """Stands in for the analysis chain: a finished micro window every 2nd frame; at the end (flush) it
    releases the gated engine, so every window but the first two meets a full queue."""

    def __init__(self, engine: _GatedEngine) -> None:
        super().__init__()
        self.engine = engine
        self.spotted = 0

    def windows_at(self, index: int, captured_at: float | None) -> tuple[WindowJob, ...]:
        if index < 10 or index % 2:
            return ()
        self.spotted += 1
        return (_job(index, closed_at=captured_at),)

    def flush(self) -> tuple[WindowJob, ...]:
        self.engine.release.set()
        return ()


def test_a_pipeline_whose_classifier_overflows_counts_every_event_once() -> None:
    engine = _GatedEngine()
    records: list[Record] = []
    threads: set[str] = set()

    def publish(record: Record) -> None:
        if isinstance(record, EventRecord):
            threads.add(threading.current_thread().name)
        records.append(record)

    source = ArraySource([np.zeros((48, 48, 3), np.uint8)] * 60, fps=FPS, name="array:test")
    options = PipelineOptions(fast=True, classifier=ClassifierOptions(queue_size=1, max_batch=1))
    fake = _ManyWindows(engine)
    pipeline = Pipeline(source, None, engine, publish, options, analyzer=fake)
    summary = pipeline.run()
    events = [r for r in records if isinstance(r, EventRecord)]
    worker = pipeline.classifier
    assert fake.spotted == 25 and len(events) == 25
    assert summary.events == {"micro": 25, "macro": 0}
    assert threads == {"mer-classifier"}
    assert worker.classified + worker.overflow == 25 and worker.overflow >= 23
    assert sum(e.label is not None for e in events) == worker.classified
    assert all(e.latency_ms > 0 for e in events)  # the capture time came with the frame, through the window
    assert isinstance(records[-1], SummaryRecord) and records[-1] is summary
    # the windows published unlabelled are counted where users see them
    assert (summary.classified, summary.overflow, summary.failed) == (worker.classified, worker.overflow, None)
    assert SummaryRecord.from_json(summary.to_json()) == summary
    status = pipeline.status()
    assert (status.classified, status.overflow, status.failed) == (worker.classified, worker.overflow, None)
    assert pipeline.snapshot().unlabelled == worker.overflow


class _FailingEngine(_GatedEngine):
    """Fails on every batch it is given."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("the GPU fell off the bus")


def test_windows_the_model_failed_on_are_counted_in_the_summary() -> None:
    source = ArraySource([np.zeros((48, 48, 3), np.uint8)] * 40, fps=FPS, name="array:test")
    engine = _FailingEngine()
    engine.release.set()
    pipeline = Pipeline(source, None, engine, lambda record: None, PipelineOptions(fast=True),
                        analyzer=_ManyWindows(engine))
    summary = pipeline.run()
    assert (summary.classified, summary.overflow, summary.failed) == (0, None, 15)
    assert "failed" not in SummaryRecord(frames=1, dropped=0, face_frames=1).to_dict()  # left out when none
