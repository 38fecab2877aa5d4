"""The live pipeline: capture thread → ring buffer → face thread → analyser thread → classifier worker → publisher.

The face thread runs MediaPipe a few frames ahead of motion and spotting; with the tracker's default settings it
hands consecutive frames to two landmark workers (:mod:`realtime.face_workers`), which find the same faces as
one landmarker, in order, nearly twice as fast on two cores.

:class:`Pipeline` wires components that were built and checked beforehand (source, face tracker,
engine, publisher), so each can be faked in tests and ``mer-bench``; every join is typed
(:class:`~realtime.sources.FrameSource`, :class:`~mer_analysis.chain.FaceTracking`,
:class:`~engines.backends.base.Predictor`, :class:`FrameAnalyzing`). The caller's thread supervises:
:meth:`Pipeline.run` publishes a ``status`` record about once a second, and a ``summary`` record at the
end of the source, on ``stop()``, on :meth:`Pipeline.interrupt` (what ``mer-live`` does on SIGTERM and
Ctrl-C), and on a ``KeyboardInterrupt`` (re-raised after it is written).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

import numpy as np

from engines.backends.base import Predictor
from mer_analysis.chain import AlignedFace, Analyzer, AnalyzerOptions, FaceTracking, FrameResult, WindowJob
from mer_analysis.learned_spotting import SpotModel
from mer_analysis.spotting import SpottedWindow, Spotter
from mer_core.events import EventRecord, Record, StatusRecord, SummaryRecord
from realtime.capture import CaptureOptions, CaptureThread
from realtime.classifier import ClassifierOptions, ClassifierWorker
from realtime.dashboard import DashboardSnapshot
from realtime.face import FaceTracker
from realtime.face_workers import FaceStage, default_face_workers
from realtime.ringbuffer import FramePacket, Policy, RingBuffer, RingBufferOptions
from realtime.sources import FrameSource
from realtime.stats import RateMeter, RateMeterOptions, StageStats, StageStatsOptions
from realtime.windows import WindowPlan, WindowsFile

log = logging.getLogger(__name__)

__all__ = ["FrameAnalyzing", "Pipeline", "PipelineOptions", "SpotterView"]

_END = object()  # the face thread's last item: no more frames
_FrameMeta = tuple[int, float, float | None]  # a frame's index, time and capture time, beside its face


class SpotterView(Protocol):
    """What the dashboard shows of the spotter (:class:`mer_analysis.spotting.Spotter`)."""

    @property
    def state(self) -> str: ...

    @property
    def threshold(self) -> float | None: ...


class FrameAnalyzing(Protocol):
    """The analysis chain as the analyser thread drives it: :class:`mer_analysis.chain.Analyzer`, or a stand-in
    handed to :class:`Pipeline` as ``analyzer`` (tests script windows so). The counters are read by other
    threads."""

    frames: int
    face_frames: int
    face_now: bool

    @property
    def spotter(self) -> SpotterView: ...

    def process(self, frame: np.ndarray, index: int, t: float, *, captured_at: float | None = None) -> FrameResult: ...

    def flush(self) -> tuple[WindowJob, ...]: ...

    def build_inputs(self, window: SpottedWindow) -> np.ndarray | None: ...

    def job(self, window: SpottedWindow, inputs: np.ndarray | None) -> WindowJob: ...


@dataclass(frozen=True)
class PipelineOptions:
    fast: bool = False  # file read as fast as possible, every frame analysed (BLOCK ring)
    ring_capacity: int = 32  # frames between capture and analysis (live: ~1 s of slack before drops)
    fast_ring_capacity: int = 4  # --fast: a short read-ahead keeps decode parallel without queueing latency
    status_period_s: float = 1.0  # seconds between status records (mer-live --status-period)
    duration_s: float | None = None  # stop after this much source time
    reconnect_s: float = 5.0  # a live source that stops is reopened with back-off for at most this long
    sparkline_len: int = 120  # intensity samples kept for the dashboard
    recent_events: int = 8
    keep_stage_samples: bool = False  # keep every stage timing for the run (mer-bench), not just the last second
    join_timeout_s: float = 5.0  # stop() waits this long for each thread; one still running is logged
    # the face tracker on a thread of its own, a few frames ahead of motion and spotting: MediaPipe (most of
    # a frame's time, without the GIL) overlaps with the rest of the analysis on another core
    face_thread: bool = True
    face_queue: int = 4  # tracked faces waiting for the analyser thread
    # MediaPipe landmarkers finding the faces of that many frames at once (realtime.face_workers), when the
    # tracker's frames are independent (its default settings); None: 2 on a machine with 2+ cores, else 1
    face_workers: int | None = None
    # called on the analyser thread with every frame's result, before its windows go to the classifier
    # (mer-analyze writes per-frame CSV rows and keeps the crops of spotted windows from it)
    on_frame: Callable[[FrameResult], None] | None = None
    analyzer: AnalyzerOptions = field(default_factory=AnalyzerOptions)
    spot_model: SpotModel | None = None  # the learned spotter's model (None: the rule spotter)
    classifier: ClassifierOptions = field(default_factory=ClassifierOptions)
    # mer-live --windows: classify these windows (in file order) instead of the spotted ones; the spotter
    # still runs for the dashboard's score, its windows are not published
    windows: WindowsFile | None = None
    clock: Callable[[], float] = field(default=time.monotonic)


class Pipeline:
    """Owns the threads of one run; components are handed in already opened. The analysis chain is an
    :class:`Analyzer` over ``tracker``, unless ``analyzer`` is given (then ``tracker`` may be None)."""

    def __init__(
        self,
        source: FrameSource,
        tracker: FaceTracking | None,
        engine: Predictor | None,
        publish: Callable[[Record], object],
        options: PipelineOptions | None = None,
        *,
        analyzer: FrameAnalyzing | None = None,
        engine_reason: str = "",
        endpoint: str = "",
    ) -> None:
        self.options = opts = options or PipelineOptions()
        self.source = source
        self._publish = publish
        self._clock = opts.clock
        self.engine_reason = engine_reason
        self.endpoint = endpoint  # where records are published (shown on the dashboard); "" = no ZMQ
        blocking = opts.fast and not source.is_live
        policy = Policy.BLOCK if blocking else Policy.OVERWRITE
        capacity = opts.fast_ring_capacity if blocking else opts.ring_capacity
        self.ring = RingBuffer(RingBufferOptions(capacity=capacity, policy=policy))
        self._reader = self.ring.reader()
        capture = CaptureOptions(pace=not opts.fast, reconnect_s=opts.reconnect_s, clock=self._clock)
        self.capture = CaptureThread(source, self.ring, capture)
        self.stages = StageStats(StageStatsOptions(clock=self._clock))
        analyzer_opts, classifier_opts = opts.analyzer, opts.classifier
        if opts.windows is not None:  # hold the longest window's crops; every window labelled, none overflows
            analyzer_opts = replace(analyzer_opts, history_frames=max(analyzer_opts.history_frames,
                                                                      opts.windows.longest))
            classifier_opts = replace(classifier_opts, classify_macro=True, veto_none=False,
                                      queue_size=max(classifier_opts.queue_size, len(opts.windows.windows) + 1))
        if analyzer is None:
            if tracker is None:
                raise ValueError("Pipeline needs a face tracker or an analyzer")
            analyzer = Analyzer(tracker, analyzer_opts, spot_model=opts.spot_model, record_stage=self._record_stage)
        self.tracker = tracker
        self.analyzer: FrameAnalyzing = analyzer
        self.classifier = ClassifierWorker(
            engine, self._emit_event, source=source.name, options=classifier_opts,
            record_stage=self._record_stage, clock=self._clock,
        )
        self.windows = None if opts.windows is None else WindowPlan(
            opts.windows, build=self.analyzer.build_inputs, job=self.analyzer.job, fps=source.fps,
            micro_max_s=analyzer_opts.spotter.micro_max_s, record_stage=self._record_stage)
        self.stopped_by_duration = False  # --duration ended the run before the source did
        self._rate_in = RateMeter(RateMeterOptions(clock=self._clock))
        self._rate_proc = RateMeter(RateMeterOptions(clock=self._clock))
        # appended by the analyser thread, copied by the dashboard's: under the lock, as a deque must not
        # change while it is copied
        self._intensity: deque[float] = deque(maxlen=opts.sparkline_len)
        self._intensity_lock = threading.Lock()
        # written by the classifier thread alone (it emits every event), read by status/snapshot/summary
        self._events: deque[EventRecord] = deque(maxlen=opts.recent_events)
        self._event_counts = {"micro": 0, "macro": 0}
        self._events_lock = threading.Lock()
        self._stop = threading.Event()
        self._interrupted = False  # interrupt() was called: a plain flag, safe to set from a signal handler
        self._analysis_done = threading.Event()
        self._thread = threading.Thread(target=self._analyze, name="mer-analyser")
        self._faces: queue.Queue[object] = queue.Queue(maxsize=max(1, opts.face_queue))
        self._face_thread = threading.Thread(target=self._track, name="mer-face")
        self._split: Analyzer | None = None  # the Analyzer, when its face stage runs on the face thread
        self._started_at: float | None = None
        self._summary: SummaryRecord | None = None
        self.error: BaseException | None = None
        self.first_frame_at: float | None = None  # clock() when the first frame was analysed
        self.stage_samples: dict[str, list[float]] = {}

    # --- stage timing shared by analyser and classifier threads ----------------------------------
    def _record_stage(self, stage: str, ms: float) -> None:
        self.stages.record(stage, ms)
        if self.options.keep_stage_samples:
            self.stage_samples.setdefault(stage, []).append(ms)

    def _emit_event(self, record: EventRecord) -> None:
        """The classifier thread's way out for every event (the one thread that emits them)."""
        t0 = time.perf_counter()
        self._publish(record)
        self._record_stage("publish", (time.perf_counter() - t0) * 1e3)
        with self._events_lock:
            self._events.append(record)
            self._event_counts[record.kind] = self._event_counts.get(record.kind, 0) + 1
        if self.windows is not None:
            self.windows.published(record)

    # --- the analyser thread, and the face thread before it -------------------------------------------
    def _packets(self, idle: Callable[[], bool] | None = None) -> Iterator[FramePacket]:
        """Frames from the ring, in order, until the source ends, ``stop()`` or ``--duration``. With ``idle``,
        it is called whenever no frame is waiting, before waiting for one; it returns False to stop."""
        limit = self.options.duration_s
        while not self._stop.is_set():
            packet = None
            if idle is not None:
                packet = self._reader.read(timeout=0.0)
                if packet is None and not idle():
                    return
            if packet is None:
                packet = self._reader.read(timeout=0.1)
            if packet is None:
                if self.ring.closed:
                    return
                continue
            if limit is not None and packet.t > limit:
                self.stopped_by_duration = True
                return
            yield packet

    def _track(self) -> None:
        """The face thread: ring → face tracker → a short queue → the analyser thread. A packet's frame is
        the reader's buffer, overwritten by the next read; the tracked face owns its arrays.

        When the tracker's frames are independent (its default settings, or ``landmark_every="auto"`` once it
        settled on every frame) the faces of consecutive frames are found by ``face_workers`` landmarkers at
        once (:class:`FaceStage`: the same faces, in order). Frames queue up in the workers only while more
        are waiting in the ring: a camera that the face stage keeps up with gets each frame's face as soon as
        it is found, not one frame later."""
        end: object = _END
        chain = self._split
        assert chain is not None, "the face thread runs only with a real Analyzer"
        stage = FaceStage[_FrameMeta](chain.tracker, self.face_workers, track=chain.track,
                                      record_stage=self._record_stage)

        def hand_over(ready: list[tuple[_FrameMeta, AlignedFace | None]]) -> bool:
            return all(self._hand_over((*meta, face)) for meta, face in ready)

        try:
            # no frame waiting: the frames in the workers' hands go on at once
            for packet in self._packets(idle=lambda: hand_over(stage.finish())):
                if not hand_over(stage.put(packet.frame, packet.t, (packet.index, packet.t, packet.captured_at))):
                    return
            hand_over(stage.finish())
        except BaseException as exc:  # raised again on the analyser thread, which reports it
            end = exc
        finally:
            stage.close()
            self._reader.close()  # a BLOCK writer must not wait for us any longer
            self._hand_over(end)

    @property
    def face_workers(self) -> int:
        """Landmarkers on consecutive frames at once (:attr:`PipelineOptions.face_workers`, resolved)."""
        workers = self.options.face_workers
        return default_face_workers() if workers is None else workers

    def _hand_over(self, item: object) -> bool:
        """Queue ``item`` for the analyser thread; False once that thread has ended."""
        while not self._analysis_done.is_set():
            try:
                self._faces.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _tracked(self) -> Iterator[tuple[int, float, float | None, AlignedFace | None]]:
        """(index, t, captured_at, face) from the face thread until it ends; its failure is raised here."""
        while True:
            try:
                item = self._faces.get(timeout=0.1)
            except queue.Empty:
                if not self._face_thread.is_alive() and self._faces.empty():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(tuple[int, float, float | None, AlignedFace | None], item)

    def _analyze(self) -> None:
        last_index: int | None = None  # the last frame analysed
        try:
            if self._split is not None:
                for index, t, captured_at, face in self._tracked():
                    last_index = index
                    self._after_frame(self._split.analyze(face, index, t, captured_at=captured_at))
            else:
                for packet in self._packets():
                    last_index = packet.index
                    self._after_frame(self.analyzer.process(packet.frame, packet.index, packet.t,
                                                            captured_at=packet.captured_at))
            for job in self.windows.finish() if self.windows is not None else self.analyzer.flush():
                if self.windows is None and _cut_by_the_end(job, last_index):
                    continue
                self.classifier.submit(job)
        except BaseException as exc:  # surfaced by run(); the summary is still written
            self.error = exc
            log.error("analysis failed: %s", exc)  # one line; the traceback only with --log-level debug
            log.debug("analysis failure", exc_info=True)
        finally:
            self._reader.close()  # a BLOCK writer must not wait for us any longer
            self._analysis_done.set()

    def _after_frame(self, result: FrameResult) -> None:
        if self.first_frame_at is None:
            self.first_frame_at = self._clock()
            log.info("first frame analysed at monotonic %.6f", self.first_frame_at)
        if self.windows is not None:  # the given windows replace the spotted ones
            result = replace(result, jobs=self.windows.on_frame(result))
        if self.options.on_frame is not None:
            self.options.on_frame(result)
        with self._intensity_lock:
            self._intensity.append(result.score if result.score is not None else float("nan"))
        for job in result.jobs:
            self.classifier.submit(job)

    # --- supervision (caller's thread) ----------------------------------------------------------
    @property
    def analysing(self) -> bool:
        """Whether the analyser still takes frames (False once the source ended or the run was stopped)."""
        return not self._analysis_done.is_set()

    def start(self) -> Pipeline:
        self._started_at = self._clock()
        self.classifier.start()
        if self.options.face_thread and isinstance(self.analyzer, Analyzer):
            self._split = self.analyzer
        if self._split is not None:  # before the analyser thread, which takes a face thread not alive as ended
            self._face_thread.start()
        self._thread.start()
        self.capture.start()
        return self

    def run(self) -> SummaryRecord:
        """Start (if needed), publish status every ``status_period_s`` (once a second) until the source ends or
        :meth:`interrupt`, then the summary."""
        if self._started_at is None:
            self.start()
        reason = "end"
        try:
            next_status = self._clock()
            while not self._analysis_done.wait(timeout=0.05):
                if self._interrupted:
                    reason = "interrupted"
                    break
                if self._clock() >= next_status:
                    self._publish(self.status())
                    next_status += self.options.status_period_s
        except KeyboardInterrupt:
            reason = "interrupted"
            self.stop(reason)
            raise
        finally:
            if self._summary is None:
                if self.error is not None and reason == "end":
                    reason = "error"
                self.stop(reason)
        assert self._summary is not None
        return self._summary

    def interrupt(self) -> None:
        """Ask :meth:`run` to end as interrupted: within 0.05 s it stops and writes the summary, as on Ctrl-C.
        It only sets a flag, so a signal handler may call it at any moment, even while :meth:`stop` runs,
        which it never cuts short; calling it again changes nothing."""
        self._interrupted = True

    def stop(self, reason: str = "stopped") -> SummaryRecord:
        """Stop every thread (bounded waits), then publish the summary once; safe to call twice. A thread still
        running after its wait is logged (see :attr:`tracker_in_use`)."""
        if self._summary is not None:
            return self._summary
        timeout = self.options.join_timeout_s
        self._stop.set()
        self.capture.stop()
        self.ring.close()
        if self._face_thread.is_alive():
            self._face_thread.join(timeout=timeout)
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        for thread in (self._face_thread, self._thread):
            if thread.is_alive():
                log.warning("%s thread did not stop within %.1f s", thread.name, timeout)
        self.classifier.stop(timeout)
        if reason == "end" and self.capture.end_reason and self.capture.end_reason.startswith("error"):
            reason = "error"
        self._summary = self._make_summary(reason)
        self._publish(self._summary)
        return self._summary

    @property
    def tracker_in_use(self) -> bool:
        """Whether a thread that calls the face tracker (the face thread with its landmark workers, or the
        analyser thread) is still running: after :meth:`stop`, one that outlived its wait, inside a slow
        MediaPipe call perhaps. The tracker must not be closed under it."""
        return self._face_thread.is_alive() or self._thread.is_alive()

    def _auto_note(self) -> str:
        every = self.auto_landmark_every
        return "" if every is None else f"face landmarks {_every_text(every)} (--landmark-every auto)"

    # --- records and snapshots ------------------------------------------------------------------
    def _counters(self) -> tuple[int, int, int]:
        return self.capture.frames_read, self.analyzer.frames, self._reader.missed

    def status(self) -> StatusRecord:
        frames, analyzed, dropped = self._counters()
        classified, overflow, failed = self._classifier_counts()
        now = self._clock()
        self._rate_in.update(frames, now)
        self._rate_proc.update(analyzed, now)
        return StatusRecord(
            source=self.source.name,
            frames=frames,
            dropped=dropped,
            fps_in=round(self._rate_in.rate(), 2),
            fps_proc=round(self._rate_proc.rate(), 2),
            face=self.analyzer.face_now,
            face_frames=self.analyzer.face_frames,
            engine=self.classifier.engine_name,
            stage_ms=self.stages.snapshot(now),
            landmark_every=self.auto_landmark_every,
            classified=classified,
            overflow=overflow,
            failed=failed,
        )

    def _classifier_counts(self) -> tuple[int | None, int | None, int | None]:
        """The classifier's counts as the status and summary records carry them: ``classified`` (with a model
        only), ``overflow`` and ``failed`` (windows published unlabelled; None when there were none)."""
        worker = self.classifier
        return (worker.classified if worker.engine is not None else None, worker.overflow or None,
                worker.failed or None)

    def _rejected_counts(self) -> dict[str, int] | None:
        """The rule spotter's dropped candidates by reason (:data:`mer_analysis.spotting.REJECT_REASONS`), as the
        summary record and the dashboard carry them; None for a spotter that has no such rules (the learned
        spotter, the feature recorder, a stand-in)."""
        spotter = self.analyzer.spotter
        return spotter.rejected if isinstance(spotter, Spotter) else None

    @property
    def auto_landmark_every(self) -> int | None:
        """The N that ``--landmark-every auto`` chose (None without auto, and while it is still measuring)."""
        tracker = self.tracker
        if not isinstance(tracker, FaceTracker) or tracker.options.landmark_every != "auto":
            return None
        return tracker.landmark_every

    def _event_totals(self) -> dict[str, int]:
        with self._events_lock:
            return dict(self._event_counts)

    def _make_summary(self, reason: str) -> SummaryRecord:
        frames, analyzed, dropped = self._counters()
        classified, overflow, failed = self._classifier_counts()
        wall = self._clock() - (self._started_at or self._clock())
        scores = self.windows.scores(self.classifier.labels) if self.windows is not None else None
        return SummaryRecord(
            source=self.source.name,
            frames=frames,
            dropped=dropped,
            face_frames=self.analyzer.face_frames,
            events=self._event_totals(),
            wall_s=round(wall, 3),
            mean_fps=round(analyzed / wall, 2) if wall > 0 else 0.0,
            reason=reason,
            scored=scores.scored if scores is not None else None,
            accuracy=round(scores.accuracy, 6) if scores is not None and scores.accuracy is not None else None,
            uf1=round(scores.uf1, 6) if scores is not None and scores.uf1 is not None else None,
            vetoed=self.classifier.vetoed or None,
            landmark_every=self.auto_landmark_every,
            classified=classified,
            overflow=overflow,
            failed=failed,
            rejected=self._rejected_counts(),
        )

    def snapshot(self, message: str = "") -> DashboardSnapshot:
        """What the dashboard draws; taken by its thread at its own pace, never pushed."""
        frames, analyzed, dropped = self._counters()
        now = self._clock()
        self._rate_in.update(frames, now)
        self._rate_proc.update(analyzed, now)
        spotter = self.analyzer.spotter
        threshold = spotter.threshold
        with self._intensity_lock:
            intensity = tuple(self._intensity)
        with self._events_lock:
            events, counts = tuple(self._events), dict(self._event_counts)
        fps = self.source.fps or 30.0
        return DashboardSnapshot(
            source=self.source.name,
            endpoint=self.endpoint,
            engine=self.classifier.engine_name,
            engine_reason=self.engine_reason,
            model=self.classifier.model_name,
            elapsed_s=now - (self._started_at or now),
            frames=frames,
            analyzed=analyzed,
            dropped=dropped,
            fps_in=self._rate_in.rate(),
            fps_proc=self._rate_proc.rate(),
            face=self.analyzer.face_now,
            face_frames=self.analyzer.face_frames,
            intensity=intensity,
            intensity_window_s=len(intensity) / fps,
            threshold=float(threshold) if threshold is not None and np.isfinite(threshold) else None,
            spotting=spotter.state,
            events=events,
            event_counts=counts,
            unlabelled=self.classifier.overflow + self.classifier.failed,
            rejected=self._rejected_counts(),
            stage_ms=self.stages.snapshot(now),
            message=message or ("finished" if self._analysis_done.is_set() else self._auto_note()),
        )


def _every_text(every: int) -> str:
    return "every frame" if every == 1 else f"every {every} frames"


def _cut_by_the_end(job: WindowJob, last_index: int | None) -> bool:
    """A window still open when the source (or ``--duration``) ended reaches the last frame analysed: its
    offset was never seen, so neither its duration nor its kind is known. A cut macro-expression would
    otherwise be published as a short micro one; it is dropped instead (logged), as the spotter drops an
    open window when the face is lost."""
    window = job.window
    if last_index is None or window.offset.frame < last_index:
        return False
    log.info("window %d-%d dropped: cut by the end of the source, its offset was never seen",
             window.onset.frame, window.offset.frame)
    return True
