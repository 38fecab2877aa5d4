"""The measurements behind ``mer-bench`` (the command is :mod:`mer_cli.bench`): one in-process pipeline run with
every stage sampled, the bare MediaPipe landmarker on the same frames, process start-up, and classification
latency per engine. Nothing here is asserted in tests."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends import BACKEND_NAMES, EngineError, load_engine
from engines.benchmark import time_predict
from engines.card import CardError
from mer_analysis.chain import AnalyzerOptions
from mer_core.events import EventRecord, StatusRecord
from mer_core.metrics import spotting_scores
from realtime.face_model import resolve_face_model
from realtime.landmarks import mediapipe_module
from realtime.pipeline import Pipeline, PipelineOptions
from realtime.sources import FrameSource, open_source

log = logging.getLogger(__name__)

STAGES = ("decode", "face", "motion", "spotting", "di", "classify", "publish")


class TimedSource(FrameSource):
    """Wraps a source so the capture thread's ``read()`` is timed as the ``decode`` stage."""

    def __init__(self, inner: FrameSource, record: Any) -> None:
        super().__init__()
        self.inner = inner
        self.name, self.fps, self.is_live, self.frame_count = inner.name, inner.fps, inner.is_live, inner.frame_count
        self._record = record

    def read(self) -> np.ndarray | None:
        t0 = time.perf_counter()
        frame = self.inner.read()
        if frame is not None:
            self._record("decode", (time.perf_counter() - t0) * 1e3)
        self.error = self.inner.error
        return frame

    def reconnect(self) -> bool:
        return self.inner.reconnect()

    def close(self) -> None:
        self.inner.close()


def _pct(values: list[float] | np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


@dataclass
class RunFigures:
    frames: int = 0
    dropped: int = 0
    wall_s: float = 0.0
    fps: float = 0.0
    stage_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    delay_ms: dict[str, float | None] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    spotting: dict[str, float] | None = None
    landmark_every: int | None = None  # the tracker's N at the end (the one --landmark-every auto chose)
    auto: dict[str, float] = field(default_factory=dict)  # what auto chose N from (ms, fps)
    face_workers: int = 1  # landmarkers on consecutive frames at once (1 when the tracker needs frame order)
    ended: str = "end"  # why the run ended (SummaryRecord.reason): a run that ended on "error" has no figures
    error: str | None = None  # what the analysis failed on, when it did


def run_pipeline(video: Path, *, fast: bool, engine: Any, tracker_factory: Any, card: Any,
                 annotations: Path | None, seconds: float | None = None,
                 sink: Callable[[Any], object] | None = None, face_workers: int | None = None,
                 on_status: Callable[[StatusRecord], object] | None = None) -> RunFigures:
    """One in-process pipeline run over ``video`` with full stage sampling; events also go to ``sink``, the
    status records (about one a second: frames so far, rates) to ``on_status``, e.g. for a progress line."""
    records: list[Any] = []
    options = PipelineOptions(
        fast=fast, keep_stage_samples=True, duration_s=seconds, face_workers=face_workers,
        analyzer=AnalyzerOptions.for_card(card),
    )
    tracker = tracker_factory()
    source = open_source(str(video))
    pipeline: Pipeline | None = None

    def record(stage: str, ms: float) -> None:
        if pipeline is not None:
            pipeline._record_stage(stage, ms)

    def publish(record: Any) -> None:
        records.append(record)
        if sink is not None and isinstance(record, EventRecord):
            sink(record)
        if on_status is not None and isinstance(record, StatusRecord):
            on_status(record)

    timed = TimedSource(source, record)
    try:
        pipeline = Pipeline(timed, tracker, engine, publish, options)
        summary = pipeline.run()
    finally:
        tracker.close()
        timed.close()
    events = [r for r in records if isinstance(r, EventRecord)]
    figures = RunFigures(
        landmark_every=getattr(tracker, "landmark_every", None), auto=dict(getattr(tracker, "auto_figures", {})),
        frames=summary.frames, dropped=summary.dropped, wall_s=summary.wall_s, fps=summary.mean_fps,
        stage_ms={s: {"p50": _pct(v, 50), "p95": _pct(v, 95)} for s, v in pipeline.stage_samples.items()},
        latency_ms={"p50": _pct([e.latency_ms for e in events], 50), "p95": _pct([e.latency_ms for e in events], 95)},
        delay_ms={"p50": _pct([e.delay_ms for e in events], 50), "p95": _pct([e.delay_ms for e in events], 95)},
        events=dict(summary.events),
        face_workers=pipeline.face_workers if getattr(tracker, "frames_independent", False) else 1,
        ended=summary.reason, error=None if pipeline.error is None else str(pipeline.error),
    )
    if annotations is not None:
        figures.spotting = score_against(events, annotations, video.stem)
    return figures


def landmarker_baseline(video: Path, face_model: str | None = None) -> dict[str, Any]:
    """The bare MediaPipe FaceLandmarker over ``video``: VIDEO mode, one face, public API, every frame decoded
    by OpenCV as the pipeline's source does and converted to RGB (a reused buffer), on this thread; what a
    minimal script gets. ``fps`` counts decode + conversion + landmarks; ``landmark_ms`` the landmarks alone."""
    import cv2

    mp = mediapipe_module()
    vision = mp.tasks.vision
    options = vision.FaceLandmarkerOptions(
        base_options=mp.tasks.BaseOptions(model_asset_path=str(resolve_face_model(face_model))),
        running_mode=vision.RunningMode.VIDEO, num_faces=1)
    cap = cv2.VideoCapture(str(video))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
    landmark_ms: list[float] = []
    rgb: np.ndarray | None = None
    try:
        with vision.FaceLandmarker.create_from_options(options) as landmarker:
            start = time.perf_counter()
            while True:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                t0 = time.perf_counter()
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=rgb)
                landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb),
                                            int(round(len(landmark_ms) * 1000.0 / fps)))
                landmark_ms.append((time.perf_counter() - t0) * 1e3)
            wall = time.perf_counter() - start
    finally:
        cap.release()
    n = len(landmark_ms)
    return {"frames": n, "wall_s": round(wall, 3), "fps": round(n / wall, 2) if n and wall > 0 else 0.0,
            "landmark_ms": {"p50": _pct(landmark_ms, 50), "p95": _pct(landmark_ms, 95)}}


def throughput_ratio(pipeline_fps: list[float], landmarker_fps: list[float]) -> dict[str, Any]:
    """Full offline pipeline against the bare landmarker, from runs that alternated on one machine: landmarker,
    pipeline, landmarker, pipeline, ..., landmarker (one more landmarker run than pipeline runs). Each pipeline
    run is compared with the mean of the landmarker runs just before and after it (the machine's load drifts);
    ``ratio`` is the median over runs (>= 0.9 is the target)."""
    if len(landmarker_fps) != len(pipeline_fps) + 1 or not pipeline_fps:
        raise ValueError("need one landmarker run before every pipeline run and one after the last")
    ratios = [round(fps / ((landmarker_fps[i] + landmarker_fps[i + 1]) / 2), 3) if landmarker_fps[i] > 0
              and landmarker_fps[i + 1] > 0 else 0.0 for i, fps in enumerate(pipeline_fps)]
    return {"landmarker_fps": landmarker_fps, "pipeline_fps": pipeline_fps, "ratios": ratios,
            "ratio": round(float(np.median(ratios)), 3)}


def score_against(events: list[Any], annotations: Path, video_id: str) -> dict[str, float]:
    """MEGC spotting scores of the micro events against a mer-synth annotations.csv."""
    import csv

    with annotations.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["video"] == video_id and r["kind"] == "micro"]
    truth = [(int(r["onset"]), int(r["offset"])) for r in rows]
    pred = [(e.onset.frame, e.offset.frame) for e in events if e.kind == "micro"]
    s = spotting_scores(pred, truth)
    return {"precision": round(s.precision, 4), "recall": round(s.recall, 4), "f1": round(s.f1, 4),
            "true": len(truth), "predicted": len(pred)}


def engine_latency(model: str | None, *, unavailable: dict[str, str] | None = None,
                   progress: Callable[[str], object] | None = None) -> dict[str, dict[str, float]]:
    """predict() p50/p95 at batch 1 and 8 for every backend that loads here. Why each other backend did not
    load goes into ``unavailable``; ``progress`` hears which backend and batch is being timed."""
    out: dict[str, dict[str, float]] = {}
    for backend in BACKEND_NAMES:
        if progress is not None:
            progress(f"loading {backend}")
        try:
            engine = load_engine(model, backend=backend)
        except (EngineError, CardError) as exc:
            log.info("%s: not available (%s)", backend, exc)
            if unavailable is not None:
                unavailable[backend] = str(exc)
            continue
        with engine:
            rng = np.random.default_rng(0)
            for batch in (1, 8):
                if progress is not None:
                    progress(f"{backend} batch {batch}")
                x = rng.standard_normal((batch, *engine.card.input_shape)).astype(np.float32)
                t = time_predict(engine, x, iters=200)
                out[f"{backend} b{batch}"] = {"p50": round(t.p50_ms, 3), "p95": round(t.p95_ms, 3)}
    return out
