"""Offline analysis of one recorded video into a folder: the ``mer/1`` recording, three CSV tables, a report.

The video goes through the same threaded :class:`~realtime.pipeline.Pipeline` as ``mer-live --video X
--fast`` (every frame analysed, the same engine, the same classifier and publisher), so ``events.jsonl``
holds exactly the records ``--record`` writes. The pipeline's per-frame hook (``PipelineOptions.on_frame``)
writes ``frames.csv`` as frames pass and keeps the aligned crops of every spotted window for the report, and
the candidates the rule spotter dropped (``rejected.csv``); ``events.csv`` and ``report.html`` are made from
``events.jsonl`` once the run has ended, so all three agree.
``analysis.json`` is written last: a folder without it was interrupted and is analysed again.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from engines.backends.base import ModelFileError
from engines.card import CardError
from engines.spotting_model import load_spotting_model
from mer_analysis.chain import Analyzer, AnalyzerOptions, FrameResult
from mer_analysis.motion import REGION_NAMES
from mer_analysis.spotting import Rejection, Spotter
from mer_core.dynamic_image import apex_flow, normalize_di, phase_dynamic_images
from mer_core.events import KINDS, EventRecord, SummaryRecord, parse_record, utc_now_iso
from mer_core.paths import atomic_write
from mer_offline.analyze_types import (
    FAILED,
    NO_FACE,
    OK,
    PARTIAL,
    RESULT_FORMAT,
    AnalyzeOptions,
    VideoResult,
    WindowImages,
)
from mer_offline.report import ReportInputs, flow_colours, write_report
from realtime.face import FaceTracker, FaceTrackerOptions
from realtime.face_model import FaceModelError
from realtime.pipeline import Pipeline, PipelineOptions
from realtime.publisher import Publisher, PublisherError, PublisherOptions
from realtime.sources import SourceError, open_source

log = logging.getLogger(__name__)

__all__ = [
    "BLENDSHAPE_NAMES",
    "EVENT_COLUMNS",
    "REJECTED_COLUMNS",
    "RESULT_FILE",
    "AnalyzeOptions",
    "FrameLog",
    "ProgressSink",
    "VideoJob",
    "VideoResult",
    "WindowImages",
    "analyze_video",
    "event_columns",
    "frame_columns",
    "load_result",
    "save_result",
]

RESULT_FILE = "analysis.json"  # written last: its presence means the folder is complete
OUTPUT_FILES = ("events.jsonl", "events.csv", "frames.csv", "rejected.csv", "report.html")

# MediaPipe's 52 face blendshapes, by category name, in the model's output order (FaceLandmarker's
# ``Blendshapes`` enum); frames.csv has one column for each with --blendshapes.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)

# events.csv: one row per spotted window (MEGC-style names), then one prob_<label> column per class.
EVENT_COLUMNS: tuple[str, ...] = (
    "video", "event", "kind", "onset_frame", "apex_frame", "offset_frame", "onset_s", "apex_s", "offset_s",
    "n_frames", "duration_ms", "intensity", "label", "confidence",
)
EVENT_TAIL: tuple[str, ...] = ("model", "engine")

# rejected.csv: one row per candidate the rule spotter dropped (mer_analysis.spotting.Rejection): its apex frame and
# time, region, score and why (a mer_analysis.spotting.REJECT_REASONS name); only the header for the learned spotter
REJECTED_COLUMNS: tuple[str, ...] = ("frame", "t_s", "region", "score", "reason")


def event_columns(labels: tuple[str, ...] | list[str]) -> list[str]:
    """Header of events.csv for a model with these class labels."""
    return [*EVENT_COLUMNS, *(f"prob_{label}" for label in labels), *EVENT_TAIL]


def frame_columns(regions: tuple[str, ...], blendshapes: bool) -> list[str]:
    """Header of frames.csv: frame, time, face, score, threshold, a displacement per region[, blendshapes]."""
    columns = ["frame", "t_s", "face", "score", "threshold", *(f"disp_{r}" for r in regions)]
    return columns + list(BLENDSHAPE_NAMES) if blendshapes else columns


class ProgressSink(Protocol):
    """Where a run reports how far it is (a Rich progress bar, or a queue to the parent process)."""

    def start(self, name: str, total: int | None) -> None: ...

    def frames(self, name: str, done: int) -> None: ...

    def stop(self, name: str) -> None: ...


@dataclass(frozen=True)
class VideoJob:
    """One video of a batch: where it is, the output folder, and the key that says what produced it."""

    path: Path  # absolute
    name: str  # output folder name, unique in the batch
    folder: Path  # OUT/name
    key: str  # sha256 of model, settings and the file's size and mtime; "" when the file cannot be read
    key_parts: dict[str, Any] = field(default_factory=dict)


def load_result(folder: Path) -> VideoResult | None:
    """The stored result of a video folder, or None when there is none (or it cannot be read)."""
    path = folder / RESULT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
        return None
    known = {f for f in VideoResult.__dataclass_fields__ if f != "skipped"}
    try:
        return VideoResult(**{k: v for k, v in data.items() if k in known})
    except TypeError:
        return None


def save_result(folder: Path, result: VideoResult, key_parts: dict[str, Any]) -> None:
    data = {**result.to_dict(), "key_parts": key_parts}
    atomic_write(folder / RESULT_FILE, (json.dumps(data, indent=2, default=str) + "\n").encode())


# --- per-frame log -------------------------------------------------------------------------------------


def _di_for_display(di: np.ndarray) -> np.ndarray:
    """A DI as the network sees it (the shared normalisation), ±3 standard deviations onto 0..255."""
    z = normalize_di(di)
    return np.clip(127.5 + z * (127.5 / 3.0), 0, 255).astype(np.uint8)


class _BlendshapeTap:
    """Hands frames to the face tracker and keeps the blendshapes of the faces it returned, by frame time: the
    pipeline's face thread runs a few frames ahead of the analyser thread that writes the rows."""

    _KEEP = 64  # frames; the face thread is at most PipelineOptions.face_queue + 1 ahead

    def __init__(self, tracker: Any) -> None:
        self._tracker = tracker
        self._shapes: dict[float, dict[str, float] | None] = {}
        self._times: deque[float] = deque()

    def process(self, frame: np.ndarray, t: float) -> Any:
        face = self._tracker.process(frame, t)
        self._shapes[t] = face.blendshapes if face is not None else None
        self._times.append(t)
        if len(self._times) > self._KEEP:
            self._shapes.pop(self._times.popleft(), None)
        return face

    def at(self, t: float) -> dict[str, float] | None:
        """Blendshapes of the face found in the frame at ``t`` (None: no face, or not seen)."""
        return self._shapes.get(t)


def _num(value: float | None, digits: int = 6) -> str:
    if value is None or not np.isfinite(value):
        return ""
    return f"{value:.{digits}g}"


class FrameLog:
    """Writes a frames.csv row per analysed frame and keeps the series, window images and dropped candidates
    the report needs.

    :meth:`add` runs on the pipeline's analyser thread (the ``on_frame`` hook); everything else runs on the
    caller's thread before the pipeline starts or after it has ended.
    """

    def __init__(self, path: Path, *, regions: tuple[str, ...], tap: _BlendshapeTap | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.regions = regions
        self._tap = tap
        self._progress = progress
        self._file: IO[str] = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(frame_columns(regions, tap is not None))
        self._analyzer: Analyzer | None = None
        self.t: list[float] = []
        self.score: list[float] = []
        self.threshold: list[float] = []
        self.face: list[bool] = []
        self.windows: dict[tuple[int, int, int], WindowImages | None] = {}
        self.rejected: list[Rejection] = []

    def attach(self, analyzer: Analyzer) -> None:
        """The analyzer whose spotter threshold and crop history are read per frame."""
        self._analyzer = analyzer

    def add(self, result: FrameResult) -> None:
        threshold = self._analyzer.spotter.threshold if self._analyzer is not None else None
        score = result.score
        row = [str(result.index), f"{result.t:.6f}", "1" if result.face else "0", _num(score), _num(threshold)]
        row += [_num(result.regions.get(r)) for r in self.regions]
        if self._tap is not None:
            shapes = self._tap.at(result.t) or {}
            row += [_num(shapes.get(name), 5) for name in BLENDSHAPE_NAMES]
        self._writer.writerow(row)
        self.t.append(result.t)
        self.score.append(float("nan") if score is None else float(score))
        self.threshold.append(float("nan") if threshold is None else float(threshold))
        self.face.append(result.face)
        for job in result.jobs:
            w = job.window
            self.keep_window(w.onset.frame, w.apex.frame, w.offset.frame)
        self.take_rejected()
        if self._progress is not None:
            self._progress(len(self.t))

    def take_rejected(self) -> None:
        """Move the candidates the rule spotter dropped since the last call into :attr:`rejected` (every frame,
        so its bounded record never overflows; once more after the run, for those dropped by its flush)."""
        spotter = self._analyzer.spotter if self._analyzer is not None else None
        if isinstance(spotter, Spotter):
            self.rejected += spotter.drain_rejected()

    def keep_window(self, onset: int, apex: int, offset: int) -> None:
        """Copy a window's crops out of the analyzer's history (None when they are no longer held)."""
        key = (onset, apex, offset)
        if key in self.windows or self._analyzer is None:
            return
        crops = self._analyzer.history.window(onset, offset)
        if crops is None:
            self.windows[key] = None
            return

        frames = crops.astype(np.float32)
        rise, fall = phase_dynamic_images(frames, 0, apex - onset, offset - onset)
        flow = flow_colours(apex_flow(frames, 0, apex - onset, offset - onset))
        self.windows[key] = WindowImages(onset=crops[0].copy(), apex=crops[apex - onset].copy(),
                                         offset=crops[-1].copy(), rise=_di_for_display(rise),
                                         fall=_di_for_display(fall), flow=flow)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


# --- one video -----------------------------------------------------------------------------------------


def _failed(job: VideoJob, error: str, *, model: str, engine: str, started: float, **counts: Any) -> VideoResult:
    return VideoResult(path=str(job.path), name=job.name, status=FAILED, error=error, model=model, engine=engine,
                       key=job.key, finished=utc_now_iso(), wall_s=round(time.monotonic() - started, 3), **counts)


def analyze_video(job: VideoJob, settings: AnalyzeOptions, engine: Any, *,
                  progress: ProgressSink | None = None) -> VideoResult:
    """Analyse ``job.path`` into ``job.folder``; a video that cannot be analysed gives a ``failed`` result.

    ``engine`` is an opened :class:`engines.backends.Engine` (reused across videos). Raises
    ``KeyboardInterrupt`` (after the recording got its summary) when interrupted; the folder then has no
    ``analysis.json`` and is analysed again next time.
    """
    started = time.monotonic()
    card = engine.card
    model_name, engine_name = str(card.name), str(engine.name)
    folder = job.folder
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT_FILE, *OUTPUT_FILES):  # from here on the folder is incomplete until the end
        (folder / stale).unlink(missing_ok=True)
    if not job.path.is_file():
        result = _failed(job, f"no such file: {job.path}", model=model_name, engine=engine_name, started=started)
        save_result(folder, result, job.key_parts)
        return result
    try:
        source = open_source(str(job.path))
    except SourceError as exc:
        result = _failed(job, str(exc), model=model_name, engine=engine_name, started=started)
        save_result(folder, result, job.key_parts)
        return result

    events_path = folder / "events.jsonl"
    with contextlib.ExitStack() as stack:
        stack.callback(source.close)
        try:
            tracker = FaceTracker(FaceTrackerOptions(
                model_path=settings.face_model, crop_size=card.crop_size,
                landmark_every=settings.landmark_every, blendshapes=settings.blendshapes))
        except FaceModelError as exc:  # checked before the batch starts; a file that vanished since
            result = _failed(job, str(exc), model=model_name, engine=engine_name, started=started)
            save_result(folder, result, job.key_parts)
            return result
        stack.callback(tracker.close)
        spot_model = None
        if settings.spotting == "learned":
            try:
                spot_model = load_spotting_model(settings.spotting_model)
            except (ModelFileError, CardError) as exc:  # checked before the batch starts; changed since
                result = _failed(job, str(exc), model=model_name, engine=engine_name, started=started)
                save_result(folder, result, job.key_parts)
                return result
        tap = _BlendshapeTap(tracker) if settings.blendshapes else None
        name = job.name
        if progress is not None:
            progress.start(name, source.frame_count)
            stack.callback(progress.stop, name)
        frame_log = FrameLog(folder / "frames.csv", regions=REGION_NAMES, tap=tap,
                             progress=(lambda n: progress.frames(name, n)) if progress is not None else None)
        stack.callback(frame_log.close)
        try:
            publisher = Publisher(PublisherOptions(endpoint=None, record_path=events_path,
                                                   source=source.name)).start()
        except PublisherError as exc:
            result = _failed(job, str(exc), model=model_name, engine=engine_name, started=started)
            save_result(folder, result, job.key_parts)
            return result
        stack.callback(publisher.close)
        options = PipelineOptions(
            fast=True,
            face_workers=settings.face_workers,
            on_frame=frame_log.add,
            analyzer=AnalyzerOptions.for_card(card, spotter=settings.spotter, spotting=settings.spotting),
            spot_model=spot_model,
        )
        pipeline = Pipeline(source, tap if tap is not None else tracker, engine, publisher.publish, options,
                            engine_reason=engine.reason)
        assert isinstance(pipeline.analyzer, Analyzer)  # built by the pipeline from the tracker
        frame_log.attach(pipeline.analyzer)
        summary = pipeline.run()  # KeyboardInterrupt propagates, after the summary record
        publisher.close()
        frame_log.close()
        frame_log.take_rejected()
        analysis_error = pipeline.error
        source_error = source.error

    records = [parse_record(line) for line in events_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    events = [r for r in records if isinstance(r, EventRecord)]
    for e in events:  # windows decided at the end of the video never passed the per-frame hook
        frame_log.keep_window(e.onset.frame, e.apex.frame, e.offset.frame)
    summaries = [r for r in records if isinstance(r, SummaryRecord)]
    summary = summaries[-1] if summaries else summary
    fps = float(source.fps)
    counts = {kind: sum(1 for e in events if e.kind == kind) for kind in KINDS}
    status, error = OK, ""
    if analysis_error is not None:
        status, error = FAILED, f"analysis stopped: {analysis_error}"
    elif summary.frames == 0:
        status, error = FAILED, source_error or "no frame could be read"
    elif source_error:
        status, error = PARTIAL, source_error
    elif summary.face_frames == 0:
        status, error = NO_FACE, f"no face found in any of its {summary.frames} frames"
    wall = time.monotonic() - started
    result = VideoResult(
        path=str(job.path), name=job.name, status=status, error=error, frames=summary.frames,
        face_frames=summary.face_frames, duration_s=round(summary.frames / fps, 3) if fps > 0 else None,
        fps=round(fps, 3), events=counts, wall_s=round(wall, 3),
        analysis_fps=summary.mean_fps, model=model_name, engine=engine_name, key=job.key, finished=utc_now_iso(),
    )
    _write_events_csv(folder / "events.csv", job.name, events, tuple(card.labels))
    _write_rejected_csv(folder / "rejected.csv", frame_log.rejected)

    write_report(folder / "report.html", ReportInputs(
        result=result, labels=tuple(card.labels), engine_reason=str(engine.reason), settings=settings,
        t=np.asarray(frame_log.t, dtype=np.float64), score=np.asarray(frame_log.score, dtype=np.float64),
        threshold=np.asarray(frame_log.threshold, dtype=np.float64), face=np.asarray(frame_log.face, dtype=bool),
        events=events, windows=frame_log.windows, rejected=frame_log.rejected, rejected_counts=summary.rejected,
    ))
    save_result(folder, result, job.key_parts)
    return result


def _write_events_csv(path: Path, video: str, events: list[EventRecord], labels: tuple[str, ...]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(event_columns(labels))
        for number, e in enumerate(events, start=1):
            writer.writerow([
                video, number, e.kind, e.onset.frame, e.apex.frame, e.offset.frame,
                f"{e.onset.t:.6f}", f"{e.apex.t:.6f}", f"{e.offset.t:.6f}", e.offset.frame - e.onset.frame + 1,
                e.duration_ms, e.intensity, e.label or "", "" if e.confidence is None else e.confidence,
                *("" if e.probs.get(label) is None else e.probs[label] for label in labels),
                e.model or "", e.engine or "",
            ])


def _write_rejected_csv(path: Path, rejected: list[Rejection]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(REJECTED_COLUMNS)
        for r in rejected:
            writer.writerow([r.frame, f"{r.t:.6f}", r.region, _num(r.score), r.reason])
